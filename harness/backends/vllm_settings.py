"""What a vLLM engine is asked for beside the model, checked before any model loads: the multi-device
settings (tensor, pipeline and data parallel sizes, the executor, a Ray address) and the arguments
``vllm.LLM`` takes for them, the decoding vLLM can do, the devices one host has, and vLLM's batch-invariant
mode. Plain Python, no vLLM or torch at import: the engine's preflight (harness.engine.preflight) and the
replica pool import it without starting anything."""

from __future__ import annotations

from dataclasses import fields, replace

from harness.backends.base import SamplingConfig
from harness.config.options import ParallelOptions
from harness.core.errors import BackendError, ConfigError


def on_gpu_platform() -> bool:
    from harness.backends.base import on_gpu

    return on_gpu()


# -- multi-device settings (first-class RunSettings fields, also accepted as --backend-arg) -------------
# The ParallelOptions fields vllm.LLM takes (replicas are the harness's own pool: harness.backends.replicas).
PARALLEL_FIELDS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size",
                   "distributed_executor_backend", "ray_address")
SIZE_FIELDS = PARALLEL_FIELDS[:3]  # the three ways to split one model or run it as replicas
EXECUTOR_BACKENDS = ("mp", "ray", "uni", "external_launcher")
# Splitting one forward pass differently changes the order of floating-point sums, so these can change
# greedy outputs: they join the cache key. Replicas (data parallel) and executors do not.
_OUTPUT_CHANGING = ("tensor_parallel_size", "pipeline_parallel_size")
_DEFAULTS = {f.name: f.default for f in fields(ParallelOptions) if f.name in PARALLEL_FIELDS}


def normalize_parallel(parallel: ParallelOptions, backend_args: dict, backend: str) -> ParallelOptions:
    """Validate the parallel settings, adopting any given as ``--backend-arg KEY=VALUE`` (``backend_args``)
    into their fields (both spellings then give the same engine and cache key; backend_args keeps it as
    given). ``backend``: the backend asked for (``auto`` allowed). Raises ConfigError with a one-line reason."""
    args = backend_args
    values = {name: getattr(parallel, name) for name in PARALLEL_FIELDS}
    for name in PARALLEL_FIELDS:
        if name in args:
            given = args[name]
            if values[name] != _DEFAULTS[name] and values[name] != given:
                raise ConfigError(f"{name} is set twice ({values[name]!r} and backend_args {given!r}); keep one")
            values[name] = given
    # What the user set, before a Ray address implies the Ray executor: an error names one of these.
    given = [name for name in PARALLEL_FIELDS if values[name] != _DEFAULTS[name]]
    for name in SIZE_FIELDS:
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{name} must be a whole number of at least 1, got {v!r}")
    executor, address = values["distributed_executor_backend"], values["ray_address"]
    if executor is not None and executor not in EXECUTOR_BACKENDS:
        raise ConfigError(f"distributed_executor_backend must be one of {', '.join(EXECUTOR_BACKENDS)}, got {executor!r}")
    if address is not None:
        if not isinstance(address, str) or not address.strip():
            raise ConfigError(f"ray_address must be an address such as ray://head:10001 or auto, got {address!r}")
        if executor not in (None, "ray"):
            raise ConfigError(f"ray_address needs distributed_executor_backend=ray, got {executor!r}")
        values["distributed_executor_backend"] = executor = "ray"
    if values["data_parallel_size"] > 1 and executor != "external_launcher":
        raise ConfigError("data_parallel_size > 1: vLLM's offline LLM runs replicas only with "
                          "distributed_executor_backend=external_launcher (one process per rank, e.g. torchrun)")
    if given:
        from harness.backends.base import resolve_backend_name

        backend = resolve_backend_name(backend)
        if backend != "vllm":
            raise ConfigError(f"{given[0]} applies to the vllm backend only (backend is {backend})")
    return replace(parallel, **values)


def parallel_args(parallel: ParallelOptions) -> dict:
    """The parallel settings that differ from vLLM's defaults, as ``vllm.LLM`` keyword arguments (plus
    ``ray_address``, which ``engine_kwargs`` turns into RAY_ADDRESS). Empty for a one-device run."""
    return {name: getattr(parallel, name) for name in PARALLEL_FIELDS if getattr(parallel, name) != _DEFAULTS[name]}


def output_parallel_args(parallel: ParallelOptions) -> dict:
    return {k: v for k, v in parallel_args(parallel).items() if k in _OUTPUT_CHANGING}


def check_sampling(sampling: SamplingConfig) -> None:
    """Decoding vLLM cannot do: a one-line ConfigError, before any model loads."""
    if sampling.beam_search and sampling.early_stopping == "true":
        raise ConfigError("--early-stopping true: vLLM's beam search has no early stop (it searches until no better "
                          "beam can be found, as 'never' does); use false or never, or --backend hf")


def check_devices(extra: dict, n_gpus: int) -> None:
    """On one host (no Ray), tensor x pipeline parallel needs that many visible GPUs: say so before vLLM
    fails deep inside start-up."""
    need = extra.get("tensor_parallel_size", 1) * extra.get("pipeline_parallel_size", 1)
    if need > n_gpus and extra.get("distributed_executor_backend") != "ray":
        raise BackendError(f"tensor_parallel_size x pipeline_parallel_size = {need} needs {need} GPUs on this host, "
                           f"{n_gpus} visible; use distributed_executor_backend=ray with a Ray cluster to span hosts")


# vLLM 0.32's batch-invariant kernels (VLLM_BATCH_INVARIANT=1) run on NVIDIA GPUs of this compute capability on.
BATCH_INVARIANT_CAPABILITY = (8, 0)


def check_batch_invariant(backend: str, *, capability: tuple[int, int] | None | str = "probe") -> None:
    """Refuse --batch-invariant, with one line, where vLLM has no batch-invariant mode. ``capability``: the
    GPU's compute capability (None: no NVIDIA GPU); probed with torch when not given."""
    if backend != "vllm":
        raise ConfigError(f"--batch-invariant is vLLM's batch-invariant mode: it needs --backend vllm (backend is {backend})")
    if capability == "probe":
        capability = _gpu_capability()
    if capability is None:
        raise ConfigError("--batch-invariant needs an NVIDIA GPU of compute capability >= 8.0 (vLLM's "
                          "VLLM_BATCH_INVARIANT); this machine has none: use --dtype float32 for layout-independent reports")
    if tuple(capability) < BATCH_INVARIANT_CAPABILITY:
        raise ConfigError(f"--batch-invariant needs an NVIDIA GPU of compute capability >= 8.0; this one is "
                          f"{capability[0]}.{capability[1]}: use --dtype float32 for layout-independent reports")


def _gpu_capability() -> tuple[int, int] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or getattr(torch.version, "hip", None):  # ROCm: no NVIDIA capability
        return None
    return tuple(torch.cuda.get_device_capability(0))
