"""Beam search and decoding presets: option handling (preset under every setting given by name, bad
combinations as one line), the generation cache key and the report's sampling record, the vLLM beam's
prompt cut off, and the hf backend's beams on the tiny Llama against transformers on each prompt alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends.base import BackendOptions, SamplingConfig
from harness.backends.vllm_backend import beam_result
from harness.config.presets import PRESETS
from harness.config.settings import DATA_ENV, build_settings
from harness.engine.preflight import preflight
from harness.core.errors import ConfigError
from harness.core.types import GenerationRequest, Prompt
from harness.engine.cache import stable_hash


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)


def settings(root: Path, config: Path | None = None, **cli):
    return preflight(build_settings(cli=cli, rootdir=root, config_file=config)).settings


def test_preset_is_the_papers_template_and_decoding(tmp_path):
    s = settings(tmp_path, preset="safety-tuned-llamas")
    assert (s.template, s.num_beams, s.max_new_tokens, s.temperature) == ("alpaca", 4, 128, 0.0)
    assert s.sampling.as_dict() == {"max_new_tokens": 128, "temperature": 0.0, "top_p": 1.0, "seed": 0,
                                    "num_beams": 4, "length_penalty": 1.0, "early_stopping": "false"}
    assert s.public_dict()["preset"] == "safety-tuned-llamas"  # the report's settings record it


def test_settings_given_beside_a_preset_win(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.safety-harness]\npreset = "safety-tuned-llamas"\ntemplate = "raw"\n')
    s = settings(tmp_path, max_new_tokens=32, num_beams=2)
    assert (s.template, s.num_beams, s.max_new_tokens) == ("raw", 2, 32)
    # a setting named at its default value still wins over the preset
    s = settings(tmp_path, preset="safety-tuned-llamas", num_beams=1, template="auto")
    assert (s.num_beams, s.template, s.max_new_tokens) == (1, "auto", 128)


@pytest.mark.parametrize(("cli", "message"), [
    ({"num_beams": 4, "temperature": 0.7}, "--num-beams 4 searches beams without sampling: drop --temperature 0.7"),
    ({"length_penalty": 2.0}, "--length-penalty applies to beam search only: add --num-beams N (N > 1)"),
    ({"early_stopping": "never"}, "--early-stopping applies to beam search only"),
    ({"num_beams": 2, "early_stopping": "true", "backend": "vllm"}, "vLLM's beam search has no early stop"),
    ({"num_beams": 2, "replicas": 2, "backend": "vllm"}, "--num-beams 2 runs on one engine: drop --replicas 2"),
    ({"num_beams": 0}, "command line: --num-beams must be an integer >= 1, got 0"),
    ({"early_stopping": "sometimes"}, "--early-stopping must be one of false, true, never"),
    ({"preset": "alpaca-eval"}, "--preset must be one of safety-tuned-llamas"),
])
def test_bad_decoding_settings_are_one_line(tmp_path, cli, message):
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, **cli)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_hf_accepts_early_stopping_true_with_beams(tmp_path):
    s = settings(tmp_path, backend="hf", num_beams=3, early_stopping="true", length_penalty=0.5)
    assert s.sampling.as_dict()["early_stopping"] == "true" and s.sampling.length_penalty == 0.5


def _run_key(tmp_path, **cli):
    from harness.engine.session import HarnessSession

    hs = HarnessSession(settings(tmp_path, backend="dummy", **cli))
    hs._build_requests([Prompt("s", "p1", "hello")])
    return hs.model_info.run_key


def test_beams_join_the_cache_key_and_greedy_keys_stay_as_they_were(tmp_path):
    greedy = _run_key(tmp_path)
    # the key a greedy run had before beam search existed: an existing cache keeps serving it
    assert greedy == stable_hash("dummy", "dummy", "raw", {"max_new_tokens": 256, "temperature": 0.0, "top_p": 1.0, "seed": 0})
    keys = {greedy, _run_key(tmp_path, num_beams=2), _run_key(tmp_path, num_beams=4),
            _run_key(tmp_path, num_beams=4, length_penalty=2.0), _run_key(tmp_path, num_beams=4, early_stopping="never")}
    assert len(keys) == 5


class _Beam:
    def __init__(self, tokens):
        self.tokens = tokens


def test_vllm_beam_loses_its_prompt_tokens():
    decode = lambda ids: " ".join(map(str, ids))  # noqa: E731
    stopped = beam_result([1, 2, 3], _Beam([1, 2, 3, 7, 8, 0]), 0, decode)
    assert (stopped.text, stopped.n_tokens, stopped.finish_reason) == ("7 8 0", 3, "stop")
    cut = beam_result([1, 2, 3], _Beam([1, 2, 3, 7, 8]), 0, decode)
    assert (cut.text, cut.n_tokens, cut.finish_reason) == ("7 8", 2, "length")


def test_hf_beams_in_a_padded_batch_match_transformers_on_each_prompt_alone(tiny_model):
    """Left padding must not move a beam: two prompts of different lengths batched together give what
    transformers' generate(num_beams=3) gives each one unpadded."""
    import torch

    from harness.backends.hf import HFBackend
    from harness.models.resolve import load_tokenizer, resolve_model

    model = resolve_model(str(tiny_model), cache_dir=tiny_model.parent / "cache")
    sampling = SamplingConfig(max_new_tokens=6, num_beams=3, length_penalty=1.0, early_stopping="never")
    backend = HFBackend(model=model, sampling=sampling, options=BackendOptions(dtype="float32", batch_size=2))
    tok = load_tokenizer(model)
    texts = ["a short one", "a rather longer prompt than the other one is"]
    reqs = [GenerationRequest(str(i), Prompt("s", str(i), t), t, tuple(tok.encode(t))) for i, t in enumerate(texts)]
    batched = backend.generate(reqs)
    for req, got in zip(reqs, batched):
        with torch.inference_mode():
            out = backend.net.generate(input_ids=torch.tensor([list(req.token_ids)]), max_new_tokens=6, num_beams=3,
                                       early_stopping="never", do_sample=False, pad_token_id=tok.pad_token_id)
        alone = out[0, len(req.token_ids):].tolist()
        assert got.text == tok.decode(alone[:got.n_tokens], skip_special_tokens=True)
        assert got.n_tokens == len(alone) or got.finish_reason == "stop"


def test_preset_names_are_the_choices():
    from harness.config.settings import FIELDS

    assert tuple(PRESETS) == FIELDS["preset"].metadata["choices"]
