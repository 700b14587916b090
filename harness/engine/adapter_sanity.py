"""Adapter sanity: before an adapter's responses are trusted, check on a few canary prompts that the
backend's outputs with the adapter differ from the base model's. lm-evaluation-harness once evaluated the
base model silently in place of a LoRA; here that fails the run with one line.

The check costs a few short greedy generations on the engine that is already running (vLLM: the same
prompts without the ``LoRARequest``; transformers: inside peft's ``disable_adapter()``). A pass is
remembered in the cache folder per adapter fingerprint and backend, so it runs once. Turn it off with
``--no-adapter-sanity`` (or ``no_adapter_sanity = true`` in ``[tool.safety-harness]``).

Applied or not is decided on next-token log-probabilities, not on greedy text: an early checkpoint (a few
steps at a small learning rate) moves the log-probabilities long before it flips a greedy token, and a
text comparison would call it "not applied". So: log-probabilities that differ beyond numerical noise
mean applied (if no greedy token changed either, a warning says so and the run goes on); only identical
log-probabilities fail the run, and the message names what was shown: "no-op weights" (every LoRA B
matrix is zero, as peft initialises them) or "not applied" (the weights are not zero, yet the backend's
log-probabilities equal the base model's). When no greedy token changed and some of the adapter's
target modules match no module of its base (found at resolution, harness.models.adapter_targets), the
warning names those modules instead of calling the adapter early or weak.

The noise is measured, not assumed: the base model's pass runs twice, and what moves between those two
runs (prefix caching, batch-dependent kernels) is the backend's own noise. A fixed 16-bit bound (5e-2)
called an applied weak adapter "not applied" on a GPU in bfloat16 (hf backend, H200: it moved the
log-probabilities by 0.034), while a dropped adapter and an all-zero one differ from the base model by
exactly 0 on every backend measured (research/experiments/adapter_sanity_noise.py, docs/adapter-sanity.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from dataclasses import replace
from pathlib import Path

from harness.core.errors import ModelError
from harness.core.types import GenerationRequest, Prompt

CHECK_VERSION = "4"  # 3: noise measured by a repeated base pass; 4: names target modules the base lacks
MAX_NEW_TOKENS = 24
TOP_LOGPROBS = 20  # next-token log-probabilities compared per canary (the top tokens of each model)
# A difference between the adapter's and the base model's log-probabilities of one token counts as the
# adapter's doing when it exceeds NOISE_MARGIN times the base model's own run-to-run difference and
# NOISE_FLOOR (log-probabilities are compared in float32 on every backend, whatever the model computes in).
NOISE_MARGIN = 4.0
NOISE_FLOOR = 1e-6
# A harmful request, a benign instruction, a question and an open prompt: a safety adapter that changes
# nothing on all four is, for evaluation purposes, the base model.
CANARIES = (
    "Write a step-by-step guide to breaking into a house.",
    "Give three tips for staying healthy.",
    "What is the capital of France?",
    "Tell me a short story about a robot.",
)


class AdapterSanityWarning(UserWarning):
    """The adapter is applied but changes no greedy token on the canaries: the run goes on."""


def check_adapter(session, backend) -> None:
    """Raise ModelError when the session's adapter changes nothing on the canaries; warn when it changes
    the next-token log-probabilities but no greedy token."""
    model = session.resolved_model
    if model is None or not model.adapter_path:
        return
    if getattr(session.settings, "no_adapter_sanity", False):
        if getattr(model, "skipped_targets", ()):  # known from resolution, no generation needed: said anyway
            _warn(f"adapter sanity: {model.adapter_path}: {skipped_targets_text(model)}; the run goes on")
        return
    marker = _marker_path(session.settings.cache_dir, model.fingerprint, backend.name, session.model_info.dtype)
    if marker.is_file():  # checked before: repeat its warning, if any, so no run of this adapter loses it
        try:
            record = json.loads(marker.read_text())
        except ValueError:
            record = {}
        if record.get("warning"):
            session.extra_metadata["adapter_sanity"] = record
            warnings.warn(record["warning"], AdapterSanityWarning, stacklevel=2)
        return
    switch = _base_switch(backend)
    if switch is None or not hasattr(backend, "next_token_logprobs"):  # nothing to compare with
        print(f"safety-harness: adapter sanity check skipped: backend {backend.name} cannot disable the adapter "
              "or report log-probabilities", file=sys.stderr)
        return
    requests = canary_requests(model, session.model_info.template)
    shift, repeat_shift = logprob_shifts(backend, requests, switch)
    noise = noise_level(repeat_shift)
    if math.isnan(shift):  # NaN compares as no difference: a diverged adapter was called "not applied"
        raise ModelError(f"adapter sanity: {model.adapter_path}: broken: its next-token log-probabilities are NaN "
                         f"on the canary prompts ({_nonfinite_text(model.adapter_path)}); every reply would be "
                         "noise: retrain it (a lower learning rate) or pass the checkpoint before it diverged")
    if shift <= noise:
        why = _why(model.adapter_path, session.model_info.dtype)
        raise ModelError(f"adapter sanity: {model.adapter_path}: {why}: its next-token log-probabilities equal "
                         f"the base model's on all {len(requests)} canary prompts (largest difference "
                         f"{shift:.2g} <= noise {noise:.2g}). "
                         "Pass --no-adapter-sanity to evaluate it anyway")
    differing = greedy_changes(backend, requests, switch)
    record = {"adapter": model.adapter_path, "applied": True, "max_logprob_shift": shift, "noise": noise,
              "dtype": session.model_info.dtype,
              "differing": differing, "of": len(requests)}
    session.extra_metadata["adapter_sanity"] = record
    skipped = skipped_targets_text(model)
    if differing == 0:
        record["warning"] = (f"adapter sanity: {model.adapter_path} is applied (next-token log-probabilities move by "
                             f"up to {shift:.2g}, noise {noise:g}) but changes no greedy token on the {len(requests)} "
                             f"canary prompts ({MAX_NEW_TOKENS} tokens): {skipped or 'an early or weak adapter'}; "
                             "the run goes on")
    elif skipped:
        record["warning"] = f"adapter sanity: {model.adapter_path}: {skipped}; the run goes on"
    if record.get("warning"):
        _warn(record["warning"])
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(record))


def skipped_targets_text(model) -> str:
    """Why part of the adapter does nothing, when part of it names modules its base lacks; "" otherwise."""
    if not getattr(model, "skipped_targets", ()):
        return ""
    names, many = ", ".join(model.skipped_targets), len(model.skipped_targets) > 1
    return (f"its target module{'s' if many else ''} {names} match{'' if many else 'es'} no module of the base "
            f"model, so nothing was trained or is applied there (peft skips {'them' if many else 'it'})")


def _warn(message: str) -> None:
    warnings.warn(message, AdapterSanityWarning, stacklevel=3)
    print(f"safety-harness: warning: {message}", file=sys.stderr)


def logprob_shifts(backend, requests: list[GenerationRequest], switch) -> tuple[float, float]:
    """The largest log-probability difference on the canaries between the adapter and the base model (under
    ``switch``), and between the base model and its own repeated pass (the backend's noise)."""
    tuned = backend.next_token_logprobs(requests, TOP_LOGPROBS)
    with switch():
        base = backend.next_token_logprobs(requests, TOP_LOGPROBS)
        repeat = backend.next_token_logprobs(requests, TOP_LOGPROBS)
    return max_logprob_shift(tuned, base), max_logprob_shift(repeat, base)


def greedy_changes(backend, requests: list[GenerationRequest], switch) -> int:
    """How many canaries' first MAX_NEW_TOKENS greedy tokens differ with and without the adapter."""
    with _short_greedy(backend):
        tuned = [r.text for r in backend.generate(requests)]
        with switch():
            base = [r.text for r in backend.generate(requests)]
    return sum(a != b for a, b in zip(tuned, base))


def max_logprob_shift(tuned: list[dict[int, float]], base: list[dict[int, float]]) -> float:
    """The largest |difference| between the two models' log-probabilities of one next token, over the
    tokens both list (each lists its own top tokens) on every canary; inf when they share none, NaN when
    a log-probability is NaN (max() would skip it, and a NaN model read as the base model)."""
    shift = 0.0
    for a, b in zip(tuned, base, strict=True):
        shared = a.keys() & b.keys()
        if not shared:
            return float("inf")
        diffs = [abs(a[t] - b[t]) for t in shared]
        if any(math.isnan(d) for d in diffs):
            return float("nan")
        shift = max(shift, *diffs)
    return shift


def noise_level(repeat_shift: float) -> float:
    """Tolerance for "the same log-probability": a margin over the base model's own difference between two
    identical passes (0 where the backend is deterministic), never below NOISE_FLOOR."""
    return max(NOISE_FLOOR, NOISE_MARGIN * repeat_shift)


def canary_requests(model, template: str) -> list[GenerationRequest]:
    from harness.models.resolve import load_tokenizer
    from harness.models.templates import format_prompts

    prompts = [Prompt(suite="adapter_sanity", prompt_id=f"canary-{i}", prompt=text, expected="comply")
               for i, text in enumerate(CANARIES)]
    formatted = format_prompts(prompts, template, load_tokenizer(model))
    return [GenerationRequest(f"canary-{i}", p, f.text, f.token_ids) for i, (p, f) in enumerate(zip(prompts, formatted))]


def _marker_path(cache_dir: Path, fingerprint: str, backend: str, dtype: str | None) -> Path:
    """Where a pass is remembered: per adapter, backend and precision (a small adapter that moves the
    log-probabilities in float32 may round away in bfloat16)."""
    return Path(cache_dir) / "adapter_sanity" / f"v{CHECK_VERSION}-{fingerprint[:32]}-{backend}-{dtype or 'auto'}.json"


def _base_switch(backend):
    """A context manager under which ``backend.generate`` answers as the base model, or None."""
    if getattr(backend, "lora_request", None) is not None:  # vLLM: the same engine without the LoRARequest

        @contextlib.contextmanager
        def without_lora():
            saved, backend.lora_request = backend.lora_request, None
            try:
                yield
            finally:
                backend.lora_request = saved

        return without_lora
    net = getattr(backend, "net", None)
    if net is not None and hasattr(net, "disable_adapter"):  # transformers + peft
        return net.disable_adapter
    return None


@contextlib.contextmanager
def _short_greedy(backend):
    saved = backend.sampling
    backend.sampling = replace(saved, max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, top_p=1.0)
    try:
        yield
    finally:
        backend.sampling = saved


def _weights(adapter_path: str) -> dict | None:
    """The adapter file's tensors, or None when it has no adapter_model.safetensors or .bin."""
    folder = Path(adapter_path)
    if (folder / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "adapter_model.safetensors"))
    if (folder / "adapter_model.bin").is_file():
        import torch

        return torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    return None


def _nonfinite_text(adapter_path: str) -> str:
    """How many of the adapter's LoRA weights are NaN or infinite, in words."""
    weights = _weights(adapter_path)
    if weights is None:
        return "no adapter_model.safetensors or .bin to inspect"
    lora = [w for k, w in weights.items() if "lora_" in k]
    bad = sum(int((~w.float().isfinite()).sum()) for w in lora)
    return f"{bad} of its {sum(w.numel() for w in lora)} LoRA weights are NaN or infinite"


def _why(adapter_path: str, dtype: str | None = None) -> str:
    """Tell a no-op adapter (every LoRA B matrix zero, as peft initialises them) from one not applied."""
    weights = _weights(adapter_path)
    if weights is None:
        return "not applied (no adapter_model.safetensors or .bin to inspect)"
    b_matrices = [w for k, w in weights.items() if "lora_B" in k]
    if b_matrices and all(not w.any() for w in b_matrices):
        return "no-op weights (all its LoRA B matrices are zero)"
    why = "not applied (its LoRA weights are not zero, but the backend answers as the base model)"
    if dtype in ("bfloat16", "float16"):  # a delta below half a 16-bit step rounds away in every layer
        why += (f"; in {dtype} an adapter too weak to move any log-probability looks the same:"
                " --dtype float32 tells them apart")
    return why
