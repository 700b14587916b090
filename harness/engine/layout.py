"""How a run was spread over engines and in which precision, as its report records them.

Greedy responses in bfloat16 (or float16) depend on the batch a request shares: the same prompts
answered by one engine or by two replicas, or with another batch cap, can differ in a few tokens
(docs/parallel.md, "Layout and precision"). In float32 they do not, as measured. The record lets a
comparison refuse pairs whose responses may differ for the layout or precision alone
(harness.baselines.layout).
"""

from __future__ import annotations

from harness.backends.base import LAYOUT_FREE_DTYPES
from harness.config.options import BackendOptions


def batch_cap(settings, backend: str | None) -> int | None:
    """Most sequences decoded together: hf's batch size; vLLM's max_num_seqs when set (None: vLLM's own)."""
    if backend == "hf":
        return settings.batch_size
    cap = settings.backend_args.get("max_num_seqs")
    return cap if isinstance(cap, int) and not isinstance(cap, bool) else None


def layout_record(settings, backend: str | None, dtype: str | None) -> dict:
    """The engine layout and precision of a run, as the report's ``layout`` metadata."""
    return {
        "dtype": dtype, "replicas": settings.replicas, "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size, "data_parallel_size": settings.data_parallel_size,
        "batch_cap": batch_cap(settings, backend), "batch_invariant": bool(settings.batch_invariant),
    }


def layout_key_part(settings, backend: str | None, dtype: str | None) -> dict:
    """What of the layout joins the generation cache key: nothing for float32 or batch-invariant runs, else
    the replica count and batch cap where they differ from one engine and the default cap, so a cached
    bfloat16 response is served only to a run of its own layout (and old keys stay valid)."""
    if dtype in LAYOUT_FREE_DTYPES or settings.batch_invariant:
        return {}
    part = {}
    if settings.replicas > 1:
        part["replicas"] = settings.replicas
    cap = batch_cap(settings, backend)
    # hf always has a batch size: only one other than the default joins the key, as vLLM's cap joins it only when set.
    if cap is not None and (backend != "hf" or cap != BackendOptions.batch_size):
        part["batch_cap"] = cap
    return part
