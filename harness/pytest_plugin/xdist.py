"""pytest-xdist support: one generation for the whole run, one report, one summary table.

How a ``pytest -n N`` run goes:

* Every worker collects the same items, so every worker's ``HarnessSession.run`` wants the same prompts.
  The first worker to take the per-run-key file lock (``GenerationCache.generation_lock``) generates them;
  the others wait on the lock, then find every response in the SQLite cache and never start a backend.
  So the model is loaded once and generation is one batched call, whatever N is.
* Workers score their rows and run the assertions of the tests xdist hands them, in parallel.
* At the end each worker sends its scored rows (and its share of the statistics) to the controller in
  ``workeroutput``; the controller merges them into its own session, which then writes the one Parquet
  report and prints the one summary table exactly as a serial run does (see ``harness.pytest_plugin.plugin``).

The hooks here are ``optionalhook``s, so this module is harmless when xdist is not installed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields

import pytest

from harness.backends.base import MODEL_FREE, resolve_backend_name
from harness.baselines.layout import layout_differences
from harness.core.errors import HarnessError
from harness.engine.run_report import run_layout
from harness.engine.cache import request_key
from harness.engine.session import RunStats, ScoredRow, SuiteResult
from harness.core.types import GenerationResult, Prompt, RefusalScore
from harness.scoring.error_rates import rates_from_record
from harness.scoring.harm import HarmScore

PAYLOAD_KEY = "safety_harness"
_COLLECTION_STATS = pytest.StashKey[dict]()
_PAYLOADS = pytest.StashKey[list]()
# Statistics that count work done once, by whichever process did it: summed across workers.
_SUMMED = ("n_generated", "n_response_tokens_generated", "generation_seconds", "backend_start_seconds",
           "scoring_seconds", "backend_starts")


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config) -> bool:
    return not is_worker(config) and getattr(config.option, "dist", "no") != "no" and bool(getattr(config.option, "tx", None))


def _session(config):
    from harness.pytest_plugin.state import SESSION_KEY

    return config.stash[SESSION_KEY] if SESSION_KEY in config.stash else None


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    hs = _session(config)
    if hs is None or not is_controller(config):
        return
    s = hs.settings
    if s.no_cache and resolve_backend_name(s.backend) not in MODEL_FREE:
        # Workers hand generations to each other through the cache; without it each would load the model.
        raise pytest.UsageError("--no-cache cannot be combined with pytest-xdist (-n): workers share one "
                                "generation through the cache; drop -n or --no-cache")


# -- worker side -------------------------------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """Remember the statistics of the collection-time generation, which every worker repeats (all but
    one from the cache), apart from what tests add later (ad-hoc prompts), which only one worker does."""
    hs = _session(session.config)
    if hs is not None and is_worker(session.config):
        session.config.stash[_COLLECTION_STATS] = vars(hs.stats).copy()


def pytest_sessionfinish(session):
    config = session.config
    hs = _session(config)
    if hs is None or not is_worker(config) or not (hs.results or hs.extra_rows or hs.missing):
        return
    run_key = hs.model_info.run_key or ""
    payload = {
        "model_info": hs.model_info.as_dict(),
        "layout": run_layout(hs),
        "label_store": None if hs.label_store_path is None else str(hs.label_store_path),
        "missing": hs.missing,
        "results": {name: [_row_out(r, run_key) for r in res.rows] for name, res in hs.results.items()},
        "capability": {name: _capability_out(res.capability) for name, res in hs.results.items()
                       if res.capability is not None},
        "extra_rows": [_row_out(r, run_key) for r in hs.extra_rows],
        "extra_metadata": hs.extra_metadata,
        "generated_keys": sorted(hs.generated_keys),
        "stats_collection": config.stash.get(_COLLECTION_STATS, vars(RunStats())),
        "stats": vars(hs.stats),
    }
    # JSON text: execnet carries only plain types, and scorer extras may hold numpy scalars.
    config.workeroutput[PAYLOAD_KEY] = json.dumps(payload, default=_plain)


def _capability_out(cap) -> dict:
    """A capability suite's judged win scores and reference log-likelihoods (harness.capability)."""
    meta = {f.name: getattr(cap, f.name) for f in fields(cap) if f.name not in ("rows", "_cache")}
    return {**meta, "rows": {pid: asdict(row) for pid, row in cap.rows.items()}}


def _capability_in(d: dict):
    from harness.engine.capability_metrics import CapabilityResult, CapabilityRow

    return CapabilityResult(**{**d, "rows": {pid: CapabilityRow(**row) for pid, row in d["rows"].items()}})


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def _row_out(row: ScoredRow, run_key: str) -> dict:
    # Every part by field name (dataclasses.asdict), rebuilt by ``row_in`` with the same types: a field added
    # to a result type travels without either side counting positions.
    return {"prompt": asdict(row.prompt), "text": row.template_text, "response": asdict(row.response),
            "score": asdict(row.score), "key": request_key(run_key, row.template_text),
            "harm": None if row.harm is None else asdict(row.harm), "human_label": row.human_label}


# -- controller side ---------------------------------------------------------------------------------

@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    config = node.config
    hs = _session(config)
    raw = getattr(node, "workeroutput", {}).get(PAYLOAD_KEY)
    if hs is None or raw is None:
        return  # a worker that crashed sends nothing; the others hold every suite's rows too
    payloads = config.stash.setdefault(_PAYLOADS, [])
    payloads.append(json.loads(raw))
    merge_payloads(hs, payloads)


def merge_payloads(hs, payloads: list[dict]) -> None:
    """Rebuild the controller's session from the workers' payloads so far, as a serial run would hold it."""
    generated = set().union(*(p["generated_keys"] for p in payloads))

    def row_in(d: dict) -> ScoredRow:
        harm = HarmScore(**d["harm"]) if d.get("harm") is not None else None
        return ScoredRow(Prompt(**d["prompt"]), d["text"], GenerationResult(**d["response"]),
                         RefusalScore(**d["score"]), cached=d["key"] not in generated, harm=harm,
                         human_label=d.get("human_label"))

    check_one_layout(payloads)
    hs.results.clear()
    hs.extra_rows.clear()
    seen: set = set()
    for p in payloads:
        hs.model_info = hs.model_info.merged(p["model_info"])
        if p.get("label_store"):
            from pathlib import Path

            hs.label_store_path = Path(p["label_store"])
        hs.missing.update(p["missing"])
        for name, rows in p["results"].items():
            if name not in hs.results:  # every worker scored every suite; the first copy serves
                hs.results[name] = SuiteResult(name, [row_in(d) for d in rows], hs.settings,
                                               error_rates=rates_from_record(hs.model_info.scorer_error_rates))
                if name in p.get("capability", {}):
                    hs.results[name].capability = _capability_in(p["capability"][name])
                hs.prompts[name] = [r.prompt for r in hs.results[name].rows]  # e.g. for the data files' provenance
        for d in p["extra_rows"]:  # rows two workers both recorded (shared base prompts) are kept once
            ident = (d["prompt"]["suite"], d["prompt"]["category"], d["prompt"]["prompt_id"])
            if ident not in seen:
                seen.add(ident)
                hs.extra_rows.append(row_in(d))
        for key, value in p["extra_metadata"].items():
            if isinstance(value, dict) and isinstance(hs.extra_metadata.get(key), dict):
                hs.extra_metadata[key].update(value)
            else:
                hs.extra_metadata[key] = value
    hs.generated_keys = generated
    hs.stats = merge_stats(payloads)


def check_one_layout(payloads: list[dict]) -> None:
    """One report holds one layout and precision: workers that generated otherwise (e.g. another --dtype
    in a worker's environment) are refused, as a comparison of such runs is (harness.baselines.layout)."""
    layouts = [p["layout"] for p in payloads if p.get("layout")]
    for other in layouts[1:]:
        found = layout_differences({"layout": layouts[0]}, {"layout": other})
        if other.get("dtype") != layouts[0].get("dtype"):
            found.insert(0, f"precision differs ({layouts[0].get('dtype')} and {other.get('dtype')}): align --dtype")
        if found:
            raise HarnessError("pytest-xdist workers cannot be merged into one report: " + found[0].replace(
                "in the baseline", "in one worker").replace("in the candidate", "in another"))


def merge_stats(payloads: list[dict]) -> RunStats:
    """Work done once is summed; the collection-time counts, which every worker repeats, are those of the
    worker that saw the cache least filled (the one that generated), plus each worker's later ad-hoc work."""
    names = [f.name for f in fields(RunStats)]
    merged = {name: sum(p["stats"].get(name, 0) for p in payloads) for name in names if name in _SUMMED}
    first = [p["stats_collection"] for p in payloads]
    merged["n_prompts"] = max(s["n_prompts"] for s in first)
    merged["n_cached"] = min(s["n_cached"] for s in first)
    for p in payloads:
        merged["n_prompts"] += p["stats"]["n_prompts"] - p["stats_collection"]["n_prompts"]
        merged["n_cached"] += p["stats"]["n_cached"] - p["stats_collection"]["n_cached"]
    return RunStats(**merged)
