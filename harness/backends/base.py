"""The backend interface (batch in, batch out) and its registry.

Backends are registered by name with ``@register_backend``; heavy libraries (vLLM, transformers) are
imported inside each factory, so ``import harness`` stays cheap and a missing library gives an
"install X" message instead of an ImportError at start-up.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from typing import Callable, Protocol

from harness.config.options import BackendOptions, SamplingConfig  # noqa: F401  (the backend interface's own types)
from harness.core.errors import BackendError, ConfigError
from harness.core.types import GenerationRequest, GenerationResult


def auto_dtype(dtype: str, on_gpu: bool) -> str:
    """``dtype`` with "auto" resolved: bfloat16 on a GPU, float32 on a CPU. The precision policy of
    forward-pass scoring, training and hf generation; vllm generation adds one case (generation_dtype)."""
    return dtype if dtype != "auto" else ("bfloat16" if on_gpu else "float32")


# Precisions whose greedy responses were measured the same whatever the batch a request shares, so whatever
# the engine layout (docs/parallel.md, "Layout and precision"); bfloat16 and float16 ones were not.
LAYOUT_FREE_DTYPES = ("float32",)

# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic, which vLLM's CPU kernels use.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def on_gpu() -> bool:
    """Whether torch sees a GPU: the one place "auto" precision and device placement ask it."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@functools.cache
def _this_cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return cpu_has_native_bf16(f.read(1 << 16))  # the first processor's block is enough
    except OSError:
        return False


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX). False where it cannot be told.
    Without ``cpuinfo``, /proc/cpuinfo is read once per process."""
    if cpuinfo is None:
        return _this_cpu_has_native_bf16()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(flag in flags for flag in NATIVE_BF16_FLAGS)
    return False


def native_dtype(dtype: str, on_gpu: bool, *, native_bf16: bool | None = None) -> str:
    """``dtype`` with "auto" resolved to bfloat16 on a GPU and on a CPU with native bfloat16, else float32
    (where bfloat16 is emulated and slower). For the throughput paths: vllm generation and the capability
    suite's reference log-likelihood (docs/parallel.md has the figures)."""
    if dtype != "auto" or on_gpu:
        return auto_dtype(dtype, on_gpu)
    return "bfloat16" if (cpu_has_native_bf16() if native_bf16 is None else native_bf16) else "float32"


def generation_dtype(backend: str, dtype: str, on_gpu: bool, *, adapter: bool = False,
                     native_bf16: bool | None = None) -> str:
    """The precision a backend generates in: native_dtype for vllm (1.7x the tokens/s of float32 with the
    embedded model on one AVX512-BF16 core), auto_dtype for the others (hf stays the float32 reference).
    A LoRA adapter on a CPU stays in float32: vLLM's CPU LoRA path in bfloat16 answers differently with the
    batch it shares (one of 12 responses changed between one engine and two replicas), and a run must give
    the same report however it is spread over engines (docs/parallel.md)."""
    if backend != "vllm" or (adapter and not on_gpu):
        return auto_dtype(dtype, on_gpu)
    return native_dtype(dtype, on_gpu, native_bf16=native_bf16)


def torch_device_and_dtype(torch, dtype: str = "auto"):
    """Where torch work runs ("cuda" where torch sees a GPU, else "cpu") and its ``torch.dtype``."""
    gpu = torch.cuda.is_available()
    return ("cuda" if gpu else "cpu"), getattr(torch, auto_dtype(dtype, gpu))


class ProgressFn(Protocol):
    def __call__(self, n_done: int) -> None: ...


class ResultsFn(Protocol):
    def __call__(self, results: dict[str, GenerationResult]) -> None: ...


class Backend(Protocol):
    """What the session generates through: one engine, or a pool of replicas (harness/backends/replicas.py)."""

    name: str

    def generate(self, requests: list[GenerationRequest], *, progress: ProgressFn | None = None,
                 on_results: ResultsFn | None = None, chunk_size: int | None = None) -> list[GenerationResult]:
        """Return one result per request, in order. With ``on_results``, every result is also handed to it
        exactly once, as ``{request key: result}``, as soon as its part of the batch is done, so the caller
        can commit it (a killed run keeps what was handed over). ``chunk_size`` asks a backend that generates
        in calls of its own to make each at most that long; a replica pool hands back each shard instead."""
        ...

    def run_facts(self) -> dict:
        """What the run's metadata records about this backend's work, by key (the replicas' shards and
        faults); empty for most backends."""
        ...

    def close(self) -> None: ...


class BatchBackend(ABC):
    """The ``Backend`` protocol for a backend that generates a list of requests in one call of its own
    (``generate_batch``): chunks of ``chunk_size``, each handed to ``on_results`` as it finishes. A subclass
    without ``generate_batch`` cannot be instantiated."""

    @abstractmethod
    def generate_batch(self, requests: list[GenerationRequest],
                       progress: ProgressFn | None = None) -> list[GenerationResult]:
        """One result per request, in order."""

    def generate(self, requests: list[GenerationRequest], *, progress: ProgressFn | None = None,
                 on_results: ResultsFn | None = None, chunk_size: int | None = None) -> list[GenerationResult]:
        size = max(1, chunk_size or len(requests))
        out: list[GenerationResult] = []
        for start in range(0, len(requests), size):
            chunk = requests[start : start + size]
            results = self.generate_batch(chunk, progress)
            if on_results is not None:
                on_results({r.key: res for r, res in zip(chunk, results)})
            out += results
        return out

    def run_facts(self) -> dict:
        return {}


BackendFactory = Callable[..., Backend]
_REGISTRY: dict[str, BackendFactory] = {}
# Backends that answer without loading a model (they need no tokenizer or fingerprint of one).
MODEL_FREE = {"replay", "dummy"}


def register_backend(name: str):
    def wrap(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def create_backend(name: str, *, model, sampling: SamplingConfig, options: BackendOptions) -> Backend:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backend {name!r} (choose one of: auto, {', '.join(available_backends())})")
    return _REGISTRY[name](model=model, sampling=sampling, options=options)


def vllm_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def resolve_backend_name(requested: str) -> str:
    """``auto`` means vLLM when it is installed, else batched transformers."""
    if requested != "auto":
        return requested
    return "vllm" if vllm_importable() else "hf"


def require(module: str, install_hint: str):
    """Import ``module`` or raise a one-line BackendError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"{module} is not importable ({exc}); install it with: {install_hint}") from None
