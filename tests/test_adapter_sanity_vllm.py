"""Adapter sanity through vLLM on the embedded SmolLM2-135M: a zero-B adapter is refused as "no-op
weights"; a backend that holds the adapter's LoRARequest but drops it from every call is refused as
"not applied"; the log-probabilities of a real (non-zero) adapter differ from the base model's."""

from __future__ import annotations

import pytest

from harness.engine import adapter_sanity
from harness.backends import base as backends_base
from harness.core.errors import ModelError

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.default_model]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from harness.models.resolve import DEFAULT_MODEL, resolve_model
    from harness.models.tiny import make_tiny_adapter

    work = tmp_path_factory.mktemp("vllm-sanity")
    base = resolve_model(DEFAULT_MODEL, cache_dir=work / "cache")
    from harness.models.tiny import retarget_adapter

    real = make_tiny_adapter(base.path, work / "real", r=8, noise=0.002)
    # as peft saves an adapter trained on targets q_proj and vv_proj of a base without vv_proj
    half = retarget_adapter(real, work / "half", ["q_proj", "vv_proj"], drop_weights=("v_proj",))
    return work, {"noop": make_tiny_adapter(base.path, work / "noop", r=8, noise=0.0), "real": real, "half": half}


def start(work, adapter, backend="vllm"):
    from harness.engine.session import HarnessSession
    from harness.config.settings import RunSettings
    from harness.core.types import Prompt

    session = HarnessSession(RunSettings(model=str(adapter), backend=backend, max_new_tokens=8,
                                         cache_dir=work / "cache"))
    session._build_requests([Prompt(suite="smoke", prompt_id="p", prompt="hello")])
    return session, session._start_backend()


class DropsAdapter:
    """The vLLM backend with the old evaluation-harness bug: it keeps the LoRARequest but never sends it."""

    name = "drops_adapter"

    def __init__(self, *, model, sampling, options):
        from harness.backends.vllm_backend import VLLMBackend

        self.inner = VLLMBackend(model=model, sampling=sampling, options=options)
        self.lora_request = self.inner.lora_request

    @property
    def sampling(self):
        return self.inner.sampling

    @sampling.setter
    def sampling(self, value):
        self.inner.sampling = value

    def _without_adapter(self, call, *args, **kwargs):
        saved, self.inner.lora_request = self.inner.lora_request, None
        try:
            return call(*args, **kwargs)
        finally:
            self.inner.lora_request = saved

    def generate(self, requests, **kwargs):
        return self._without_adapter(self.inner.generate, requests, **kwargs)

    def run_facts(self):
        return {}

    def next_token_logprobs(self, requests, top_k=20):
        return self._without_adapter(self.inner.next_token_logprobs, requests, top_k)

    def close(self):
        self.inner.close()


def test_zero_b_adapter_is_refused_as_noop_weights(adapters):
    work, found = adapters
    with pytest.raises(ModelError, match="no-op weights"):
        start(work, found["noop"])


def test_a_backend_that_drops_the_adapter_is_refused_as_not_applied(adapters, monkeypatch):
    work, found = adapters
    monkeypatch.setitem(backends_base._REGISTRY, "drops_adapter", DropsAdapter)
    with pytest.raises(ModelError, match="not applied") as err:
        start(work, found["real"], backend="drops_adapter")
    assert "no-op" not in str(err.value)


def test_a_real_adapter_moves_the_logprobs_through_vllm(adapters):
    work, found = adapters
    session, backend = start(work, found["real"])
    requests = adapter_sanity.canary_requests(session.resolved_model, session.model_info.template)
    tuned = backend.next_token_logprobs(requests)
    with adapter_sanity._base_switch(backend)():
        base = backend.next_token_logprobs(requests)
        repeat = backend.next_token_logprobs(requests)
    noise = adapter_sanity.noise_level(adapter_sanity.max_logprob_shift(repeat, base))
    assert adapter_sanity.max_logprob_shift(tuned, base) > noise


def test_a_target_module_the_base_lacks_is_named_through_vllm(adapters):
    """vLLM loads the weights there are (q_proj); the warning names vv_proj, not "an early or weak adapter"."""
    work, found = adapters
    with pytest.warns(adapter_sanity.AdapterSanityWarning) as caught:
        start(work, found["half"])
    message = str(caught[0].message)
    assert "its target module vv_proj matches no module of the base model" in message and "early or weak" not in message
