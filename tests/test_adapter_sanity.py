"""Adapter sanity: an adapter whose outputs equal the base model's fails the run with one line; a real one
passes once and is remembered; the check can be turned off. Tiny models through the hf backend."""

from __future__ import annotations

import json

import pytest

from harness.engine import adapter_sanity
from harness.backends import base as backends_base
from harness.backends.hf import HFBackend
from harness.core.errors import ModelError
from harness.engine.session import HarnessSession
from harness.config.settings import RunSettings
from harness.models.tiny import make_tiny_adapter
from harness.core.types import Prompt


def start_backend(tmp_path, model, backend="hf", **settings):
    """What a run does before generating: resolve and template the prompts, then start the backend (which is
    where the check runs)."""
    session = HarnessSession(RunSettings(model=str(model), backend=backend, max_new_tokens=4,
                                         cache_dir=tmp_path / "cache", **settings))
    session._build_requests([Prompt(suite="smoke", prompt_id="p", prompt="hello")])
    return session, session._start_backend()


@pytest.fixture
def noop_adapter(tiny_model, tmp_path):
    return make_tiny_adapter(tiny_model, tmp_path / "noop", noise=0.0)  # LoRA B stays zero: changes nothing


def test_a_noop_adapter_fails_loudly(tmp_path, noop_adapter):
    with pytest.raises(ModelError) as err:
        start_backend(tmp_path, noop_adapter)
    msg = str(err.value)
    assert "\n" not in msg
    assert "no-op weights" in msg and str(noop_adapter) in msg and "log-probabilities" in msg
    assert "--no-adapter-sanity" in msg
    assert not (tmp_path / "cache" / "adapter_sanity").exists()  # a failure is not remembered


def test_a_real_adapter_passes_once_and_is_remembered(tmp_path, tiny_adapter, monkeypatch):
    start_backend(tmp_path, tiny_adapter)
    markers = list((tmp_path / "cache" / "adapter_sanity").iterdir())
    record = json.loads(markers[0].read_text())
    assert len(markers) == 1 and record["applied"] and record["max_logprob_shift"] > record["noise"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("the check ran again")

    monkeypatch.setattr(adapter_sanity, "canary_requests", must_not_run)
    start_backend(tmp_path, tiny_adapter)  # passed before for this fingerprint and backend: not repeated
    # In another precision a small adapter may round away: a pass in float32 is no pass in bfloat16.
    with pytest.raises(AssertionError, match="the check ran again"):
        start_backend(tmp_path, tiny_adapter, dtype="bfloat16")


def test_the_check_can_be_turned_off(tmp_path, noop_adapter):
    session, backend = start_backend(tmp_path, noop_adapter, no_adapter_sanity=True)
    assert backend.name == "hf"


class IgnoresAdapter(HFBackend):
    """A backend with lm-evaluation-harness's old bug: it holds a LoRA request but never applies it."""

    name = "ignores_adapter"

    def __init__(self, *, model, sampling, options):
        from dataclasses import replace

        super().__init__(model=replace(model, adapter_path=None), sampling=sampling, options=options)
        self.lora_request = object()


def test_a_backend_that_does_not_apply_the_adapter_is_caught(tmp_path, tiny_adapter, monkeypatch):
    monkeypatch.setitem(backends_base._REGISTRY, "ignores_adapter", IgnoresAdapter)  # for this test only
    with pytest.raises(ModelError, match="not applied") as err:
        start_backend(tmp_path, tiny_adapter, backend="ignores_adapter")
    assert "no-op" not in str(err.value)  # its weights are not zero: the backend is to blame


def test_an_applied_adapter_that_changes_no_greedy_token_warns_and_goes_on(tmp_path, tiny_model):
    """An early checkpoint: its LoRA B weights are small, so the log-probabilities move but greedy tokens
    (4 of them here) do not. That is a warning, not a refusal."""
    from harness.models.tiny import make_tiny_adapter

    weak = make_tiny_adapter(tiny_model, tmp_path / "weak", noise=0.02)
    with pytest.warns(adapter_sanity.AdapterSanityWarning, match="changes no greedy token") as caught:
        session, backend = start_backend(tmp_path, weak)
    assert backend.name == "hf" and "is applied" in str(caught[0].message)
    record = session.extra_metadata["adapter_sanity"]
    assert record["differing"] == 0 and record["max_logprob_shift"] > record["noise"]
    with pytest.warns(adapter_sanity.AdapterSanityWarning, match="changes no greedy token"):
        session, _ = start_backend(tmp_path, weak)  # remembered, and the warning is repeated
    assert session.extra_metadata["adapter_sanity"]["warning"]


def test_logprob_shift_compares_shared_tokens_only():
    assert adapter_sanity.max_logprob_shift([{1: -0.5, 2: -1.0}], [{1: -0.5, 3: -2.0}]) == 0.0
    assert adapter_sanity.max_logprob_shift([{1: -0.5}], [{1: -0.7}]) == pytest.approx(0.2)
    assert adapter_sanity.max_logprob_shift([{1: -0.5}], [{2: -0.5}]) == float("inf")


def test_noise_is_a_margin_over_the_base_models_own_repeat_difference():
    assert adapter_sanity.noise_level(0.0) == adapter_sanity.NOISE_FLOOR  # a deterministic backend
    assert adapter_sanity.noise_level(0.01) == pytest.approx(adapter_sanity.NOISE_MARGIN * 0.01)


def test_a_weak_adapter_below_the_old_16_bit_bound_counts_as_applied(tmp_path, tiny_model):
    """On a GPU in bfloat16 the weak adapter above (B std 0.02) moved the log-probabilities by 0.034, under
    the fixed 5e-2 bound the check once used, and was refused as "not applied". The noise now comes from
    the base model's own repeat (0 here), so any real movement counts, in every precision; this one is
    ten times weaker still."""
    weak = make_tiny_adapter(tiny_model, tmp_path / "weaker", noise=0.002)
    with pytest.warns(adapter_sanity.AdapterSanityWarning, match="changes no greedy token"):
        session, _ = start_backend(tmp_path, weak)
    record = session.extra_metadata["adapter_sanity"]
    assert 0 < record["max_logprob_shift"] < 5e-2 and record["noise"] == adapter_sanity.NOISE_FLOOR


class NoisyBase(IgnoresAdapter):
    """Drops the adapter, and its log-probabilities wander a little from call to call (as batch-dependent
    kernels or prefix caching can make them): the wandering must not pass for an adapter."""

    name = "noisy_base"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def next_token_logprobs(self, requests, top_k=20):
        self.calls += 1  # odd calls (the adapter's pass, the base model's repeat) are 1e-3 off
        return [{t: lp + 1e-3 * (self.calls % 2) for t, lp in row.items()}
                for row in super().next_token_logprobs(requests, top_k)]


def test_run_to_run_noise_of_a_backend_that_drops_the_adapter_is_not_taken_for_it(tmp_path, tiny_adapter,
                                                                                   monkeypatch):
    monkeypatch.setitem(backends_base._REGISTRY, "noisy_base", NoisyBase)
    with pytest.raises(ModelError, match=r"not applied.*largest difference 0\.001 <= noise 0\.004"):
        start_backend(tmp_path, tiny_adapter, backend="noisy_base")


def test_a_target_module_the_base_lacks_is_named_instead_of_an_early_or_weak_adapter(tmp_path, tiny_model):
    """Trained on targets q_proj and vv_proj where the base has no vv_proj, peft saved weights for q_proj alone:
    the warning names vv_proj (it said "an early or weak adapter")."""
    from harness.models.tiny import retarget_adapter

    weak = make_tiny_adapter(tiny_model, tmp_path / "weak", noise=0.02)
    half = retarget_adapter(weak, tmp_path / "half", ["q_proj", "vv_proj"], drop_weights=("v_proj",))
    with pytest.warns(adapter_sanity.AdapterSanityWarning) as caught:
        session, _ = start_backend(tmp_path, half)
    message = str(caught[0].message)
    assert "changes no greedy token" in message and "early or weak" not in message
    assert "its target module vv_proj matches no module of the base model" in message
    assert session.extra_metadata["adapter_sanity"]["differing"] == 0


@pytest.mark.parametrize("settings", [{}, {"no_adapter_sanity": True}])
def test_a_target_module_the_base_lacks_is_named_when_the_adapter_works_or_the_check_is_off(tmp_path, tiny_adapter,
                                                                                            settings):
    from harness.models.tiny import retarget_adapter

    half = retarget_adapter(tiny_adapter, tmp_path / "half", ["q_proj", "vv_proj", "ww_proj"], drop_weights=("v_proj",))
    with pytest.warns(adapter_sanity.AdapterSanityWarning, match=r": its target modules vv_proj, ww_proj match no "
                                                                 r"module of the base model.*the run goes on$"):
        start_backend(tmp_path, half, **settings)


def test_the_hf_backend_turns_peft_s_no_matching_module_error_into_one_line(tmp_path, tiny_adapter, monkeypatch):
    """Resolution catches such an adapter first; a base it cannot read (remote code) leaves it to peft."""
    from harness.models import adapter_targets
    from harness.models.tiny import retarget_adapter

    monkeypatch.setattr(adapter_targets, "base_modules", lambda path: (frozenset(), ()))
    wrong = retarget_adapter(tiny_adapter, tmp_path / "wrong", ["qq_proj"], drop_weights=("q_proj", "v_proj"))
    with pytest.raises(ModelError) as err:
        start_backend(tmp_path, wrong)
    assert str(err.value).startswith(f"adapter {wrong.resolve()}: Target modules {{'qq_proj'}} not found in the "
                                     "base model")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_an_adapter_with_nan_or_infinite_weights_is_called_broken_not_unapplied(tmp_path, tiny_model, bad):
    """A diverged training run saves NaN (or inf) LoRA weights: the logits are NaN, max() skipped every NaN
    difference, and the check said "not applied ... the backend answers as the base model" (difference 0)."""
    import torch
    from safetensors.torch import load_file, save_file

    adapter = make_tiny_adapter(tiny_model, tmp_path / "diverged")
    file = adapter / "adapter_model.safetensors"
    weights = load_file(str(file))
    save_file({k: torch.full_like(w, bad) if "lora_B" in k else w for k, w in weights.items()}, str(file))
    with pytest.raises(ModelError) as err:
        start_backend(tmp_path, adapter)
    msg = str(err.value)
    assert "\n" not in msg and "not applied" not in msg and "no-op" not in msg
    assert f"{adapter}: broken: its next-token log-probabilities are NaN" in msg
    assert "(384 of its 896 LoRA weights are NaN or infinite)" in msg  # every B, none of the A
    assert not (tmp_path / "cache" / "adapter_sanity").exists()


def test_logprob_shift_is_nan_when_a_log_probability_is():
    assert adapter_sanity.max_logprob_shift([{1: -0.5, 2: float("nan")}], [{1: -0.5, 2: -1.0}]) != 0.0
    assert adapter_sanity.math.isnan(adapter_sanity.max_logprob_shift([{1: float("nan")}], [{1: -0.5}]))
