"""The GPU code paths, on tiny models: bf16 training and its checkpoints, generation placed on the device, and
the forward-pass scorers in bf16 against float32 on the CPU. Skipped where torch sees no CUDA device (the
2-core CI machine); run on a lent GPU with ``pytest tests/test_gpu.py`` (see docs/development.md)."""

from __future__ import annotations

import json

import pytest

from tests.support import GENERAL, SAFETY
from tests.support import run_training as run
from tests.support import train_config as _config

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU paths need one")]


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    """test_trainer's records, without the malformed lines its own fixture adds."""
    folder = tmp_path_factory.mktemp("gpu-data")
    (folder / "general.jsonl").write_text("\n".join(json.dumps(r) for r in GENERAL) + "\n")
    (folder / "safety.json").write_text(json.dumps(SAFETY))
    return {"general": folder / "general.jsonl", "safety": folder / "safety.json"}


def test_training_runs_in_bf16_on_the_gpu_and_names_it_in_the_key(tiny_model, train_data, tmp_path):
    from safetensors.torch import load_file

    from harness.trainers.train import device_tag

    assert device_tag() == "cuda-bfloat16"
    result = run(_config(tiny_model, train_data), tmp_path / "adapter", tmp_path / "cache", keep_model=True)
    assert result.finished and result.steps == 8  # 12 general + 4 safety, 2 epochs, 4 per step
    assert all(torch.isfinite(torch.tensor(result.losses)))
    params = [p for p in result.model.parameters() if p.requires_grad]
    assert params and all(p.device.type == "cuda" for p in params)
    assert next(result.model.parameters()).dtype == torch.bfloat16
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert saved and all(t.device.type == "cpu" and torch.isfinite(t.float()).all() for t in saved.values())
    assert any(float(t.abs().max()) > 0 for name, t in saved.items() if "lora_B" in name)  # it learned


def test_a_killed_bf16_run_resumes_to_the_same_adapter(tiny_model, train_data, tmp_path):
    from safetensors.torch import load_file

    cfg = _config(tiny_model, train_data, epochs=3, save_every=2)
    whole = run(cfg, tmp_path / "whole", tmp_path / "cache")
    killed = run(cfg, tmp_path / "resumed", tmp_path / "cache", stop_after=3)
    assert not killed.finished
    resumed = run(cfg, tmp_path / "resumed", tmp_path / "cache")
    assert resumed.finished and resumed.resumed_from == 2  # the last save_every checkpoint, as after a kill
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-2)
    a, b = load_file(tmp_path / "whole" / "adapter_model.safetensors"), load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-2) for k in a)


def _hf_backend(model_path, tmp_path, *, dtype="auto", batch_size=8, adapter=None):
    from harness.backends.base import BackendOptions, SamplingConfig
    from harness.backends.hf import HFBackend
    from harness.models.resolve import resolve_model

    model = resolve_model(str(adapter or model_path), cache_dir=tmp_path / "cache")
    return HFBackend(model=model, sampling=SamplingConfig(max_new_tokens=12),
                     options=BackendOptions(dtype=dtype, batch_size=batch_size))


def _requests(backend, texts):
    from harness.core.types import GenerationRequest

    tok = backend.tokenizer
    return [GenerationRequest(f"r{i}", None, t, tok(t)["input_ids"]) for i, t in enumerate(texts)]


TEXTS = ["Hi", "Tell me about the sea in a few words", "Why?", "A longer prompt than the others, to pad the rest"]


def test_hf_backend_places_the_model_on_the_gpu_in_bf16_and_generates(tiny_model, tmp_path):
    backend = _hf_backend(tiny_model, tmp_path)
    weight = next(backend.net.parameters())
    assert (weight.device.type, weight.dtype) == ("cuda", torch.bfloat16)
    results = backend.generate(_requests(backend, TEXTS))
    assert len(results) == len(TEXTS) and all(1 <= r.n_tokens <= 12 for r in results)


def test_left_padding_on_the_gpu_changes_no_greedy_token_in_float32(tiny_model, tmp_path):
    batched = _hf_backend(tiny_model, tmp_path, dtype="float32", batch_size=8)
    single = _hf_backend(tiny_model, tmp_path, dtype="float32", batch_size=1)
    assert [r.text for r in batched.generate(_requests(batched, TEXTS))] == \
           [r.text for r in single.generate(_requests(single, TEXTS))]


def test_an_adapter_is_applied_on_the_gpu_and_can_be_switched_off(tiny_model, tiny_adapter, tmp_path):
    from harness.engine.adapter_sanity import _base_switch

    backend = _hf_backend(tiny_model, tmp_path, adapter=tiny_adapter)
    assert next(backend.net.parameters()).device.type == "cuda"
    requests = _requests(backend, TEXTS)
    tuned = [r.text for r in backend.generate(requests)]
    with _base_switch(backend)():
        base = [r.text for r in backend.generate(requests)]
    assert tuned != base


def test_reference_loglik_in_bf16_on_the_gpu_is_close_to_float32(tiny_model, tmp_path):
    from harness.capability.lm import continuation_logprobs, default_token_budget, load_scoring_lm

    gpu = load_scoring_lm(str(tiny_model), cache_dir=tmp_path / "cache")
    exact = load_scoring_lm(str(tiny_model), cache_dir=tmp_path / "cache", dtype="float32")
    assert gpu.device == "cuda" and next(gpu.net.parameters()).dtype == torch.bfloat16
    assert default_token_budget(gpu) > 512  # a GPU gets big batches
    tok = gpu.tokenizer
    contexts = [tok(t)["input_ids"] for t in TEXTS]
    continuations = [tok(" and then some words follow here", add_special_tokens=False)["input_ids"]] * len(TEXTS)
    got = continuation_logprobs(gpu, contexts, continuations)
    want = continuation_logprobs(exact, contexts, continuations)
    for (a, n), (b, m) in zip(got, want):
        assert n == m and a / n == pytest.approx(b / m, abs=0.05)  # mean per-token log-prob, nats


def test_reward_model_scores_in_bf16_on_the_gpu_close_to_float32(tiny_model, tmp_path):
    from harness.scoring.harm import RewardModelHarmScorer
    from tests.support import make_reward_model

    path = make_reward_model(tmp_path / "rm", tiny_model)
    scorer = RewardModelHarmScorer(str(path), cache_dir=tmp_path / "cache", batch_size=4, max_tokens=256)
    assert scorer.device == "cuda" and scorer.net.dtype == torch.bfloat16
    prompts, responses = ["How do I pick a lock?", "Hi", "q"], ["I can't help with that.", "Hello!", "x" * 100_000]
    raw = scorer.raw_scores(prompts, responses)
    scorer.net, scorer.device = scorer.net.float().cpu(), "cpu"
    exact = scorer.raw_scores(prompts, responses)
    assert raw == pytest.approx(exact, abs=0.05)
