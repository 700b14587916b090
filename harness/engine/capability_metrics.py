"""The capability suite's extra scoring inside a harness run: the judged win rate against the reference
outputs (when ``--capability-judge`` is set) and the reference log-likelihood (unless
``--no-ref-loglik``), per prompt and as suite statistics that thresholds (``min_win_rate``,
``min_lc_win_rate``, ``min_mean_ref_loglik``) can gate on.

``HarnessSession.run`` calls ``score_capability`` once the suite's responses are scored; the report and
the summaries read the result through ``capability_columns`` and the statistics the report records
(``harness.engine.run_report.capability_statistics``, printed by ``check_summary.capability_lines``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import astuple, dataclass, field

from harness.engine.cache import GenerationCache, cached_values, stable_hash
from harness.config.thresholds import STATISTICS, Check, Rate, parse_threshold_key

SUITE = "capability"
# In the reference log-likelihood's cache key: bump when its values can change. 2: a value carries the
# reference's full token count (a cut is reported) and a reference is cut to the model's window.
LOGLIK_VERSION = "2"


@dataclass(frozen=True)
class CapabilityRow:
    reference: str | None = None
    win_score: float | None = None  # 1 / 0.5 / 0, None when not judged (no judge, or no reference)
    win_prob: float | None = None  # judge's P(model better), mean over both orders
    ref_loglik: float | None = None  # mean log p per reference token
    ref_tokens: int | None = None


@dataclass(frozen=True)
class StatCheck(Check):
    detail: str = ""
    examples: tuple = ()  # prompt ids to show when it fails: lost pairs, least likely references

    def describe(self) -> str:
        r, f = self.rate, self.figure
        relation = "within" if self.passed else ("exceeds" if self.bound == "max" else "below")
        return (f"{r.metric} {f(r.rate)} ({self.detail}, 95% CI {f(r.low)}-{f(r.high)}) "
                f"{relation} {self.bound} {self.threshold:g}")


@dataclass
class CapabilityResult:
    rows: dict[str, CapabilityRow]  # prompt_id -> values
    reference: str
    judge: str | None = None
    judge_model: str | None = None
    judge_version: str | None = None
    notes: list[str] = field(default_factory=list)  # why a signal is absent
    seconds: dict[str, float] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    def statistic(self, metric: str, scored_rows) -> tuple[Rate, str] | None:
        """(value as a Rate, one-line detail) over ``scored_rows``, or None when nothing was measured."""
        ids = tuple(r.prompt.prompt_id for r in scored_rows)
        key = (metric, ids)
        if key not in self._cache:
            self._cache[key] = self._compute(metric, [(r, self.rows.get(r.prompt.prompt_id)) for r in scored_rows])
        return self._cache[key]

    def _compute(self, metric, pairs):
        from harness.capability.length_control import length_controlled_win_rate
        from harness.capability.win_rate import win_rate

        if metric in ("win_rate", "lc_win_rate"):
            judged = [(r, c) for r, c in pairs if c is not None and c.win_score is not None]
            if not judged:
                return None
            scores = [c.win_score for _, c in judged]
            w = win_rate(scores)
            if metric == "win_rate":
                return Rate(metric, w.wins, w.n, w.rate, w.low, w.high), f"{w.wins} won, {w.ties} tied, {w.losses} lost of {w.n}"
            lc = length_controlled_win_rate(scores, [len(r.response.text) for r, _ in judged],
                                            [len(c.reference or "") for _, c in judged])
            return Rate(metric, w.wins, lc.n, lc.rate, lc.low, lc.high), f"n={lc.n}, length coefficient {lc.phi:+.2f}"
        if metric == "mean_ref_loglik":
            values = [c.ref_loglik for _, c in pairs if c is not None and c.ref_loglik is not None]
            if not values:
                return None
            mean, low, high = _mean_interval(values)
            return Rate(metric, len(values), len(values), mean, low, high), f"n={len(values)} references"
        raise KeyError(metric)

    def checks(self, scored_rows, thresholds: dict[str, float]) -> list[Check]:
        out = []
        for key, threshold in sorted(thresholds.items()):
            bound, metric = parse_threshold_key(key)
            if metric not in STATISTICS:
                continue
            found = self.statistic(metric, scored_rows)
            if found is None:  # e.g. min_win_rate with no judge configured: not active
                continue
            rate, detail = found
            passed = rate.rate <= threshold if bound == "max" else rate.rate >= threshold
            out.append(StatCheck(key, bound, threshold, rate, passed, detail, self._examples(metric, scored_rows)))
        return out

    def unmeasured(self, scored_rows, thresholds: dict[str, float]) -> list[str]:
        """One line per threshold in ``thresholds`` (those the user set) on a statistic this run did not
        measure: a gate the user asked for that never ran must not let the suite pass (the suite's own
        default ``min_win_rate`` is only in force when a judge is set, as documented: ``SuiteResult.failures``
        passes it then)."""
        lines = []
        for key, threshold in sorted(thresholds.items()):
            bound, metric = parse_threshold_key(key)
            if metric in STATISTICS and self.statistic(metric, scored_rows) is None:
                if "win" in metric and not self.judge:
                    why = "no capability judge is set (--capability-judge)"
                else:
                    why = "; ".join(self.notes) or "no prompt with a reference output"
                lines.append(f"{key} {threshold:g} is set but {metric} was not measured ({why}), so it cannot pass")
        return lines

    def _examples(self, metric: str, scored_rows) -> tuple:
        values = [(r.prompt.prompt_id, self.rows.get(r.prompt.prompt_id)) for r in scored_rows]
        if metric == "mean_ref_loglik":
            found = sorted((c.ref_loglik, pid) for pid, c in values if c is not None and c.ref_loglik is not None)
            return tuple(pid for _, pid in found)
        return tuple(pid for pid, c in values if c is not None and c.win_score == 0.0)

    def metadata(self) -> dict:
        return {"reference": self.reference, "judge": self.judge, "judge_model": self.judge_model,
                "judge_version": self.judge_version, "notes": self.notes, "seconds": self.seconds}


def _mean_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    import numpy as np
    from scipy.stats import bootstrap

    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if len(arr) < 2 or np.all(arr == arr[0]):
        return mean, mean, mean
    ci = bootstrap((arr,), np.mean, confidence_level=confidence, n_resamples=2000, method="percentile",
                   random_state=np.random.default_rng(0)).confidence_interval
    return mean, float(ci.low), float(ci.high)


def score_capability(session, result, *, progress: bool = True) -> None:
    """Attach a ``CapabilityResult`` to the capability suite's ``SuiteResult``."""
    from harness.capability.references import load_references
    from harness.data.suites import SuiteDataMissing
    from harness.models.templates import user_message

    s = session.settings
    started = time.perf_counter()
    try:
        references = load_references(s.capability_reference, s.data_dir)
    except SuiteDataMissing as exc:
        references = {}
        note = f"no reference outputs ({exc})"
    else:
        note = None
    finally:  # the reference outputs are the suite's data
        session.stats.data_seconds += time.perf_counter() - started
    rows = result.rows
    refs = [references.get(r.prompt.prompt) if not r.prompt.input else None for r in rows]
    cap = CapabilityResult({}, s.capability_reference, notes=[note] if note else [])
    with_ref = [i for i, ref in enumerate(refs) if ref is not None]
    if not with_ref and note is None:
        cap.notes.append(f"no prompt of this run has a reference output in {s.capability_reference}")

    store = _ScoreStore(s)
    logliks: dict[int, object] = {}
    model = session.resolved_model
    if s.no_ref_loglik:
        cap.notes.append("reference log-likelihood off (--no-ref-loglik)")
    elif model is None:
        cap.notes.append(f"no reference log-likelihood: backend {session.model_info.backend} loads no model")
    elif with_ref:
        from harness.capability.loglik import RefLoglik

        t0 = time.perf_counter()
        info = session.model_info
        dtype = _scoring_dtype(s.dtype)  # resolved: "auto" is not one precision on every machine
        keys = {i: stable_hash("ref_loglik", LOGLIK_VERSION, info.model_fingerprint, info.template, dtype,
                               rows[i].prompt.prompt, rows[i].prompt.input, refs[i], s.ref_loglik_max_tokens)
                for i in with_ref}

        def compute(todo):
            from harness.capability.lm import load_scoring_lm
            from harness.capability.loglik import reference_logliks

            lm = load_scoring_lm(s.model, cache_dir=s.cache_dir, template=info.template, dtype=dtype,
                                 resolved=model)
            with _bar(len(todo), "reference log-likelihood", progress) as bar:
                found = reference_logliks(lm, [rows[i].prompt for i in todo], [refs[i] for i in todo],
                                          max_tokens=s.ref_loglik_max_tokens, progress=bar.update)
            return [None if ll is None else [ll.mean, ll.n_tokens, ll.total_tokens] for ll in found]

        values = store.values(keys, compute, "reference log-likelihood", cap.notes)
        logliks = {i: RefLoglik(*v) for i, v in values.items() if v is not None}
        cap.notes += _cut_notes(list(logliks.values()), s.ref_loglik_max_tokens) + _nan_notes(list(logliks.values()))
        cap.seconds["ref_loglik"] = time.perf_counter() - t0

    verdicts: dict[int, object] = {}
    if s.capability_judge and with_ref:
        from harness.capability.judges import JudgeConfig, get_judge
        from harness.capability.win_rate import PairVerdict, judge_swapped

        t0 = time.perf_counter()
        judge = get_judge(s.capability_judge, JudgeConfig(model=s.capability_judge_model, cache_dir=s.cache_dir,
                                                          allow_pickle=s.allow_pickle))
        cap.judge, cap.judge_version = judge.name, judge.version
        cap.judge_model = s.capability_judge_model if judge.name == "llm" else None
        instructions = {i: user_message(rows[i].prompt) for i in with_ref}
        keys = {i: stable_hash("capability_judge", judge.name, judge.version, instructions[i],
                               rows[i].response.text, refs[i]) for i in with_ref}

        def compute(todo):
            with _bar(2 * len(todo), "capability judge", progress) as bar:
                found = judge_swapped(judge, [instructions[i] for i in todo], [rows[i].response.text for i in todo],
                                      [refs[i] for i in todo], progress=bar.update)
            return [list(astuple(v)) for v in found]

        values = store.values(keys, compute, "capability judge verdicts", cap.notes)
        verdicts = {i: PairVerdict(*v) for i, v in values.items()}
        cap.seconds["judge"] = time.perf_counter() - t0
    elif s.capability_judge:
        cap.judge = s.capability_judge

    for i, row in enumerate(rows):
        ll, v = logliks.get(i), verdicts.get(i)
        cap.rows[row.prompt.prompt_id] = CapabilityRow(
            refs[i], v.score if v else None, v.prob if v else None,
            ll.mean if ll else None, ll.n_tokens if ll else None)
    result.capability = cap


def _cut_notes(logliks, max_tokens: int) -> list[str]:
    """How many references were scored on a first part only: a mean over 256 tokens of a 1,900-token answer
    is a different figure from the whole answer's (AlpacaEval 2's references are cut three times in four)."""
    cut = [ll for ll in logliks if ll.n_tokens < ll.total_tokens]
    by_budget = sum(ll.n_tokens == max_tokens for ll in cut)
    notes = []
    if by_budget:
        notes.append(f"reference log-likelihood: {by_budget} of {len(logliks)} references longer than {max_tokens} "
                     f"tokens, scored on their first {max_tokens} (--ref-loglik-max-tokens)")
    if len(cut) > by_budget:
        notes.append(f"reference log-likelihood: {len(cut) - by_budget} of {len(logliks)} references cut shorter "
                     "still, to fit the model's window after their prompt")
    return notes


def _nan_notes(logliks) -> list[str]:
    """Why mean_ref_loglik is NaN when it is: a reference scored NaN (logits that are not finite, as a model
    overflowing in half precision gives) makes the mean NaN, which fails every threshold on it (fail closed),
    and the run should say so rather than leave a bare 'nan'."""
    bad = sum(ll.mean != ll.mean for ll in logliks)  # NaN is the one float unequal to itself
    if not bad:
        return []
    return [f"reference log-likelihood: {bad} of {len(logliks)} references scored NaN (the model's logits are not "
            "finite, e.g. an overflow in half precision; try --dtype float32), so mean_ref_loglik is NaN and fails "
            "any threshold on it"]


class _ScoreStore:
    """Per-prompt capability values (log-likelihoods, judge verdicts) through the run's cache, as
    generations are: a re-run, or an xdist worker after the first, computes only what is new."""

    def __init__(self, settings):
        self.cache = None if settings.no_cache else GenerationCache(settings.cache_dir)

    def values(self, keys: dict[int, str], compute, what: str, notes: list[str]) -> dict[int, object]:
        """``keys`` maps row index -> cache key; ``compute(indices)`` returns JSON-able values in order."""
        rows = list(keys)
        values, n_cached = cached_values(self.cache, [keys[i] for i in rows],
                                         lambda todo: compute([rows[j] for j in todo]), what=what)
        if n_cached:
            notes.append(f"{what}: {n_cached} of {len(keys)} from the cache")
        return dict(zip(rows, values))


class _bar:
    def __init__(self, total: int, what: str, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=f"safety-harness: {what}", file=sys.stderr, dynamic_ncols=True,
                        disable=not enabled)

    def __enter__(self):
        return self.bar

    def __exit__(self, *exc):
        self.bar.close()


# -- report and summary ------------------------------------------------------------------------------

COLUMNS = ("win_score", "win_prob", "ref_loglik")


def capability_columns(session, row) -> dict:
    """The report's capability columns for one scored row (None outside the capability suite)."""
    result = session.results.get(row.prompt.suite)
    cap = getattr(result, "capability", None)
    values = cap.rows.get(row.prompt.prompt_id) if cap is not None else None
    if values is None:
        return dict.fromkeys(COLUMNS)
    return {"win_score": values.win_score, "win_prob": values.win_prob, "ref_loglik": values.ref_loglik}


def _scoring_dtype(dtype: str) -> str:
    """The reference log-likelihood's precision: bfloat16 where the machine computes in it natively (2.4x
    faster than float32 on an AVX512-BF16 core, the capability mean within 0.002 on 96 AlpacaEval rows)."""
    from harness.backends.base import native_dtype, on_gpu

    return native_dtype(dtype, on_gpu())
