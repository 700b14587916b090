"""Pairs of runs whose responses may differ for their engine layout or precision alone.

Reads the ``layout`` and ``model`` records of two reports' metadata (harness.engine.layout). A report
without a layout record (written before it existed) is not judged: there is nothing to compare.
"""

from __future__ import annotations

from harness.backends.base import LAYOUT_FREE_DTYPES
from harness.core.errors import HarnessError

# The layout settings, with the option that aligns each.
LAYOUT_OPTIONS = (("replicas", "--replicas"), ("tensor_parallel_size", "--tensor-parallel-size"),
                  ("pipeline_parallel_size", "--pipeline-parallel-size"), ("data_parallel_size", "--data-parallel-size"),
                  ("batch_cap", "the batch cap (--batch-size for hf, --backend-arg max_num_seqs=N for vllm)"))


def layout_differences(base_meta: dict, cand_meta: dict) -> list[str]:
    """One phrase per setting to align, naming it; empty when the two runs' responses cannot differ for
    layout or precision alone."""
    base, cand = base_meta.get("layout"), cand_meta.get("layout")
    if not base or not cand:
        return []
    found = []
    same_model = ((base_meta.get("model") or {}).get("model_fingerprint")
                  == (cand_meta.get("model") or {}).get("model_fingerprint"))
    if same_model and base.get("dtype") and cand.get("dtype") and base["dtype"] != cand["dtype"]:
        found.append(f"precision differs for the same model (baseline {base['dtype']}, candidate {cand['dtype']}): "
                     f"align --dtype")
    # No precision (a replay or dummy run generates nothing), float32, or vLLM's batch-invariant mode.
    free = all(r.get("dtype") in (None, *LAYOUT_FREE_DTYPES) or r.get("batch_invariant") for r in (base, cand))
    if not free:
        dtype = next(r["dtype"] for r in (base, cand) if r.get("dtype") not in (None, *LAYOUT_FREE_DTYPES))
        if bool(base.get("batch_invariant")) != bool(cand.get("batch_invariant")):
            found.append(f"batch-invariant mode differs in {dtype} (baseline {bool(base.get('batch_invariant'))}, "
                         f"candidate {bool(cand.get('batch_invariant'))}): align --batch-invariant")
        for key, option in LAYOUT_OPTIONS:
            if base.get(key) != cand.get(key):
                found.append(f"engine layout differs in {dtype} ({key} {base.get(key)} in the baseline, "
                             f"{cand.get(key)} in the candidate): align {option}, or run both with --dtype float32")
    return found


def check_one_layout(layouts: list[dict | None]) -> None:
    """One report holds one layout and precision: pytest-xdist workers that generated otherwise (e.g. another
    --dtype in a worker's environment) are refused, as a comparison of such runs is. ``layouts``: each
    worker's ``layout`` record (None where it generated nothing)."""
    layouts = [layout for layout in layouts if layout]
    for other in layouts[1:]:
        found = layout_differences({"layout": layouts[0]}, {"layout": other})
        if other.get("dtype") != layouts[0].get("dtype"):
            found.insert(0, f"precision differs ({layouts[0].get('dtype')} and {other.get('dtype')}): align --dtype")
        if found:
            raise HarnessError("pytest-xdist workers cannot be merged into one report: " + found[0].replace(
                "in the baseline", "in one worker").replace("in the candidate", "in another"))
