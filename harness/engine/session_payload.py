"""A session as plain JSON text and back: what a pytest-xdist worker sends the controller at its end, and how
the controller's session is rebuilt from every worker's, as a serial run would hold it (the hooks are in
harness.pytest_plugin.xdist).

Every part travels by field name (``dataclasses.asdict``) and is rebuilt with the same types: a field added
to a result type travels without either side counting positions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from harness.core.types import GenerationResult, Prompt, RefusalScore
from harness.engine.cache import prompt_request_key
from harness.engine.run_report import run_layout
from harness.engine.session import HarnessSession, RunStats
from harness.engine.suite_result import ScoredRow
from harness.scoring.harm import HarmScore

# Statistics that count work done once, by whichever process did it: summed across workers. (Engine start and
# generation happen under the run's generation lock, one worker at a time, so their seconds add up in wall time.)
SUMMED_STATS = ("n_generated", "n_response_tokens_generated", "generation_seconds", "backend_start_seconds",
                "backend_starts")
# Phases every worker goes through at the same time as the others (each starts, loads the suites' data, prepares
# the model and scores every row): the slowest worker's seconds are what the run waited, not their sum.
SIDE_BY_SIDE_STATS = ("startup_seconds", "data_seconds", "model_prep_seconds", "scoring_seconds")


def has_payload(session: HarnessSession) -> bool:
    """Whether the session holds anything the controller needs (a worker that ran no suite holds nothing)."""
    return bool(session.results or session.extra_rows or session.missing)


def to_payload(session: HarnessSession, collection_stats: dict | None = None) -> str:
    """The session's rows, records and statistics as JSON text (execnet carries only plain types, and scorer
    extras may hold numpy scalars). ``collection_stats``: the statistics as they stood after collection, which
    every worker repeats (all but one from the cache)."""
    run_key, backend = session.model_info.run_key or "", session.model_info.backend
    payload = {
        "model_info": session.model_info.as_dict(),
        "layout": run_layout(session),
        "label_store": None if session.label_store_path is None else str(session.label_store_path),
        "missing": session.missing,
        "held_categories": session.held_categories,
        "held_suites": session.held_suites,
        "results": {name: [_row_out(r, run_key, backend) for r in res.rows] for name, res in session.results.items()},
        "capability": {name: _capability_out(res.capability) for name, res in session.results.items()
                       if res.capability is not None},
        "extra_rows": [_row_out(r, run_key, backend) for r in session.extra_rows],
        "extra_metadata": session.extra_metadata,
        "generated_keys": sorted(session.generated_keys),
        "stats_collection": collection_stats if collection_stats is not None else vars(RunStats()),
        "stats": vars(session.stats),
    }
    return json.dumps(payload, default=_plain)


def merge_payloads(session: HarnessSession, payloads: list[str | dict]) -> None:
    """Rebuild ``session`` from the workers' payloads so far (JSON text or its parsed dict), as a serial run
    would hold it. Call it again with every payload as more workers finish."""
    payloads = [json.loads(p) if isinstance(p, str) else p for p in payloads]
    generated = set().union(*(p["generated_keys"] for p in payloads))

    def row_in(d: dict) -> ScoredRow:
        harm = HarmScore(**d["harm"]) if d.get("harm") is not None else None
        return ScoredRow(Prompt(**d["prompt"]), d["text"], GenerationResult(**d["response"]),
                         RefusalScore(**d["score"]), cached=d["key"] not in generated, harm=harm,
                         human_label=d.get("human_label"))

    session.results.clear()
    session.extra_rows.clear()
    held: dict[str, set] = {}  # every worker collected the same items; the union all the same
    for p in payloads:
        for suite, categories in (p.get("held_categories") or {}).items():
            held.setdefault(suite, set()).update(categories)
    session.held_categories = {suite: sorted(c) for suite, c in sorted(held.items())}
    suites = [p["held_suites"] for p in payloads if p.get("held_suites") is not None]
    session.held_suites = sorted(set().union(*suites)) if suites else None
    seen: set = set()
    for p in payloads:
        session.model_info = session.model_info.merged(p["model_info"])
        if p.get("label_store"):
            session.label_store_path = Path(p["label_store"])
        session.missing.update(p["missing"])
        for name, rows in p["results"].items():
            if name not in session.results:  # every worker scored every suite; the first copy serves
                capability = p.get("capability", {}).get(name)
                session.results[name] = session.suite_result(name, [row_in(d) for d in rows], capability=(
                    None if capability is None else _capability_in(capability)))
                # e.g. for the data files' provenance
                session.prompts[name] = [r.prompt for r in session.results[name].rows]
        for d in p["extra_rows"]:  # rows two workers both recorded (shared base prompts) are kept once
            ident = (d["prompt"]["suite"], d["prompt"]["category"], d["prompt"]["prompt_id"])
            if ident not in seen:
                seen.add(ident)
                session.extra_rows.append(row_in(d))
        for key, value in p["extra_metadata"].items():
            if isinstance(value, dict) and isinstance(session.extra_metadata.get(key), dict):
                session.extra_metadata[key].update(value)
            else:
                session.extra_metadata[key] = value
    session.generated_keys = generated
    session.stats = merge_stats(payloads, controller=session)


def merge_stats(payloads: list[dict], controller=None) -> RunStats:
    """Work done once is summed; the collection-time counts, which every worker repeats, are those of the
    worker that saw the cache least filled (the one that generated), plus each worker's later ad-hoc work.
    Phases the workers go through side by side take the slowest worker's seconds; the startup is the
    ``controller`` session's own (before it started the workers) plus the slowest worker's, and the report and
    wall times are the controller's (the workers write no report)."""
    names = [f.name for f in fields(RunStats)]
    merged = {name: sum(p["stats"].get(name, 0) for p in payloads) for name in names if name in SUMMED_STATS}
    merged.update({name: max(p["stats"].get(name, 0.0) for p in payloads) for name in SIDE_BY_SIDE_STATS})
    if controller is not None:
        merged["startup_seconds"] += controller.own_startup_seconds
        merged["report_seconds"] = controller.stats.report_seconds
        merged["wall_seconds"] = controller.stats.wall_seconds
    _count_shared_work_once(merged, payloads)
    first = [p["stats_collection"] for p in payloads]
    merged["n_prompts"] = max(s["n_prompts"] for s in first)
    merged["n_cached"] = min(s["n_cached"] for s in first)
    for p in payloads:
        merged["n_prompts"] += p["stats"]["n_prompts"] - p["stats_collection"]["n_prompts"]
        merged["n_cached"] += p["stats"]["n_cached"] - p["stats_collection"]["n_cached"]
    return RunStats(**merged)


def _count_shared_work_once(merged: dict, payloads: list[dict]) -> None:
    """Without a cache to share (--no-cache, or a backend that keeps none: dummy, replay), every worker
    generates every prompt itself, at the same time as the others: the run generated each distinct prompt
    once as far as its report goes ("prompts 30: generated 60" read as a double count), and its generation
    took the slowest worker's seconds, not their sum."""
    per_worker = [set(p.get("generated_keys", ())) for p in payloads]
    union = set().union(*per_worker)
    if sum(map(len, per_worker)) <= len(union):  # no prompt generated twice: the sums stand
        return
    tokens = {d["key"]: d["response"].get("n_tokens", 0) or 0
              for p in payloads for rows in [*p.get("results", {}).values(), p.get("extra_rows", [])] for d in rows}
    merged["n_generated"] = len(union)
    merged["n_response_tokens_generated"] = sum(tokens.get(key, 0) for key in union)
    for name in ("generation_seconds", "backend_start_seconds"):
        merged[name] = max(p["stats"].get(name, 0.0) for p in payloads)


def _row_out(row: ScoredRow, run_key: str, backend: str | None) -> dict:
    return {"prompt": asdict(row.prompt), "text": row.template_text, "response": asdict(row.response),
            "score": asdict(row.score), "key": prompt_request_key(run_key, backend, row.prompt, row.template_text),
            "harm": None if row.harm is None else asdict(row.harm), "human_label": row.human_label}


def _capability_out(cap) -> dict:
    """A capability suite's judged win scores and reference log-likelihoods (harness.capability)."""
    meta = {f.name: getattr(cap, f.name) for f in fields(cap) if f.name not in ("rows", "_cache")}
    return {**meta, "rows": {pid: asdict(row) for pid, row in cap.rows.items()}}


def _capability_in(d: dict):
    from harness.engine.capability_metrics import CapabilityResult, CapabilityRow

    return CapabilityResult(**{**d, "rows": {pid: CapabilityRow(**row) for pid, row in d["rows"].items()}})


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)
