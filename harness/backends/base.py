"""The backend interface (batch in, batch out) and its registry.

Backends are registered by name with ``@register_backend``; heavy libraries (vLLM, transformers) are
imported inside each factory, so ``import harness`` stays cheap and a missing library gives an
"install X" message instead of an ImportError at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from harness.core.errors import BackendError, ConfigError
from harness.core.types import GenerationRequest, GenerationResult


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding parameters; recorded in every report row and part of the cache key."""

    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens generated per response."})
    temperature: float = field(default=0.0, metadata={"help": "0 means greedy decoding (the default)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass; ignored when greedy."})
    seed: int = field(default=0, metadata={"help": "Sampling seed, recorded so sampled runs can be repeated."})

    def as_dict(self) -> dict:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class BackendOptions:
    """Settings a backend may use; each backend ignores what it does not need."""

    dtype: str = field(default="auto", metadata={"help": "auto: bfloat16 on a GPU, float32 on CPU."})
    batch_size: int = field(default=16, metadata={"help": "hf backend: prompts per generate() call."})
    max_model_len: int = field(default=2048, metadata={"help": "vllm: longest prompt+response in tokens."})
    kv_cache_gib: float = field(default=2.0, metadata={"help": "vllm on CPU: KV cache size (GiB)."})
    gpu_memory_utilization: float = field(default=0.85, metadata={"help": "vllm on GPU: memory fraction."})
    replay_path: str | None = field(default=None, metadata={"help": "replay: file holding the responses."})
    replay_response_column: str | None = field(default=None, metadata={"help": "replay: the response column."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run a model folder's own code."})
    extra: dict = field(default_factory=dict, metadata={"help": "Backend-specific keyword arguments."})


def auto_dtype(dtype: str, on_gpu: bool) -> str:
    """``dtype`` with "auto" resolved: bfloat16 on a GPU, float32 on a CPU. The one precision policy of
    generation, forward-pass scoring and training."""
    return dtype if dtype != "auto" else ("bfloat16" if on_gpu else "float32")


def torch_device_and_dtype(torch, dtype: str = "auto"):
    """Where torch work runs ("cuda" where torch sees a GPU, else "cpu") and its ``torch.dtype``."""
    on_gpu = torch.cuda.is_available()
    return ("cuda" if on_gpu else "cpu"), getattr(torch, auto_dtype(dtype, on_gpu))


class ProgressFn(Protocol):
    def __call__(self, n_done: int) -> None: ...


class Backend(Protocol):
    name: str

    def generate(self, requests: list[GenerationRequest], progress: ProgressFn | None = None) -> list[GenerationResult]:
        """Return one result per request, in order."""
        ...

    def close(self) -> None: ...


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
