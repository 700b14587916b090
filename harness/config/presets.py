"""Decoding presets and the rules that tie the decoding settings together.

A preset names the template and decoding a paper generated with, so its figures can be set beside the
paper's with one setting. It sits under every setting given by name (in a TOML file or on the command
line): ``--preset safety-tuned-llamas --max-new-tokens 64`` is the paper's decoding, 64 tokens long.
"""

from __future__ import annotations

from dataclasses import replace

from harness.core.errors import ConfigError

# transformers' GenerationConfig.early_stopping: False (heuristic stop), True, or "never" (exhaustive).
EARLY_STOPPING = ("false", "true", "never")

# Safety-Tuned LLaMAs (Bianchi et al., ICLR 2024), vinid/safety-tuned-llamas generation/generate_answers.py:
# main() calls evaluate() without max_new_tokens, so evaluate()'s default of 128 applies (the Arguments
# class's 256 is never passed on), with num_beams=4 and do_sample left False: temperature, top_p and top_k
# are set but unused by beam search; length_penalty and early_stopping keep transformers' defaults.
PRESETS: dict[str, dict] = {
    "safety-tuned-llamas": {"template": "alpaca", "num_beams": 4, "max_new_tokens": 128, "temperature": 0.0,
                            "length_penalty": 1.0, "early_stopping": "false"},
}


def apply_preset(settings, name: str, *, keep: set[str]):
    """``settings`` with preset ``name``'s values, except the settings named in ``keep`` (given explicitly)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (choose one of: {', '.join(PRESETS)})")
    return replace(settings, **{k: v for k, v in PRESETS[name].items() if k not in keep})


def check_decoding(settings) -> None:
    """Decoding settings that cannot go together: a ConfigError naming the options, before any model loads.
    What one backend cannot do is the engine's preflight's to say (harness.backends.vllm_settings.check_sampling)."""
    s = settings
    if s.num_beams == 1:
        if s.length_penalty != 1.0:
            raise ConfigError("--length-penalty applies to beam search only: add --num-beams N (N > 1) or drop it")
        if s.early_stopping != "false":
            raise ConfigError("--early-stopping applies to beam search only: add --num-beams N (N > 1) or drop it")
        return
    if s.temperature > 0:
        raise ConfigError(f"--num-beams {s.num_beams} searches beams without sampling: drop --temperature "
                          f"{s.temperature:g} (or set it to 0) or --num-beams")
    if s.replicas > 1:
        raise ConfigError(f"--num-beams {s.num_beams} runs on one engine: drop --replicas {s.replicas} or --num-beams")
