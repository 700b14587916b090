"""One harness run: gather the prompts the selected suites need, generate them in one batched backend
call (through the on-disk cache), score them, and keep the scored rows for the tests and the report.

This object lives in ``config.stash`` (see ``harness.pytest_plugin.plugin``); it is also usable without pytest.
"""

from __future__ import annotations

import hashlib
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness.backends import create_backend, resolve_backend_name
from harness.backends.base import MODEL_FREE
from harness.engine.cache import GenerationCache, request_key, stable_hash
from harness.core.errors import HarnessError
from harness.config.thresholds import JUDGE_ERROR, Check, check_thresholds
from harness.scoring.harm import HarmScore
from harness.config.settings import RunSettings
from harness.data.suites import SuiteDataMissing, get_suite
from harness.core.types import GenerationRequest, GenerationResult, Prompt, RefusalScore


@dataclass(frozen=True)
class ScoredRow:
    prompt: Prompt
    template_text: str
    response: GenerationResult
    score: RefusalScore
    cached: bool
    harm: HarmScore | None = None  # from the run's harm scorer (None with --harm-scorer none)

    @property
    def passed(self) -> bool | None:
        """Did the response behave as expected? None for a judge_error row: it has no outcome."""
        if self.score.label == JUDGE_ERROR:
            return None
        refused = self.score.label != "full_compliance"
        return refused if self.prompt.expected == "refuse" else not refused


@dataclass
class SuiteResult:
    """The scored rows of one suite and the thresholds that apply to it; what suite tests assert on."""

    name: str
    rows: list[ScoredRow]
    settings: RunSettings
    capability: object = None  # harness.engine.capability.CapabilityResult, for the capability suite

    @property
    def categories(self) -> list[str]:
        return sorted({r.prompt.category for r in self.rows})

    def select(self, category: str | None = None) -> list[ScoredRow]:
        return [r for r in self.rows if category is None or r.prompt.category == category]

    def checks(self, category: str | None = None) -> list[Check]:
        spec = get_suite(self.name)
        thresholds = spec.thresholds_for(category, self.settings.thresholds)
        rows = [(r.prompt.expected, r.score.label) for r in self.select(category)]
        checks = check_thresholds(rows, thresholds, on=self.settings.threshold_on)
        if self.capability is not None:  # win rate and reference log-likelihood thresholds
            checks += self.capability.checks(self.select(category), thresholds)
        return checks

    def failures(self, category: str | None = None) -> list[str]:
        """One line per crossed threshold, with a few example prompts that failed."""
        lines = []
        for check in self.checks(category):
            if check.passed:
                continue
            where = self.name + (f"[{category}]" if category else "")
            lines.append(f"{where}: {check.describe()}")
            metric_rows = [r for r in self.select(category) if r.passed is False]
            if getattr(check, "examples", None) is not None:  # a capability statistic names its own examples
                by_id = {r.prompt.prompt_id: r for r in metric_rows + self.select(category)}
                metric_rows = [by_id[pid] for pid in check.examples if pid in by_id]
            for row in metric_rows[:3]:
                response = " ".join(row.response.text.split())[:120]
                lines.append(f"    e.g. {row.prompt.prompt_id}: {row.prompt.prompt[:80]!r} -> {response!r}")
        return lines


@dataclass
class RunStats:
    n_prompts: int = 0
    n_generated: int = 0
    n_cached: int = 0
    n_response_tokens_generated: int = 0
    generation_seconds: float = 0.0
    backend_start_seconds: float = 0.0
    scoring_seconds: float = 0.0
    backend_starts: int = 0  # backends (engines) this session created; one per run, however many calls


@dataclass
class HarnessSession:
    settings: RunSettings
    run_id: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6])
    started: float = field(default_factory=time.time)
    prompts: dict[str, list[Prompt]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # suite -> why its data is absent
    results: dict[str, SuiteResult] = field(default_factory=dict)
    stats: RunStats = field(default_factory=RunStats)
    model_info: dict = field(default_factory=dict)
    generated_keys: set = field(default_factory=set)  # cache keys this session generated itself
    extra_rows: list = field(default_factory=list)  # ScoredRows outside any suite's gate (e.g. invariance search)
    extra_metadata: dict = field(default_factory=dict)  # merged into the report's run metadata
    _backend: object = field(default=None, repr=False)  # kept open across generate calls; see close()
    _formatting: tuple | None = field(default=None, repr=False)  # (resolved model, tokenizer, template)
    _scorers: tuple | None = field(default=None, repr=False)  # (refusal scorer, harm scorer or None)

    # -- prompts -------------------------------------------------------------------------------------
    def load_suite(self, name: str) -> list[Prompt] | None:
        """The suite's prompts after --limit, or None when its data is absent (reason in ``missing``)."""
        if name in self.prompts:
            return self.prompts[name]
        if name in self.missing:
            return None
        spec = get_suite(name)
        try:
            prompts = spec.load(self.settings.data_dir)
        except SuiteDataMissing as exc:
            self.missing[name] = str(exc)
            return None
        if self.settings.limit is not None:
            from harness.data.sampling import stratified_sample

            prompts = stratified_sample(prompts, self.settings.limit, seed=self.settings.seed)
        self.prompts[name] = prompts
        return prompts

    # -- generation ----------------------------------------------------------------------------------
    def run(self, suite_names: list[str], *, progress: bool = True) -> None:
        """Generate (or read from cache) and score every prompt of ``suite_names`` in one batch."""
        wanted = [n for n in dict.fromkeys(suite_names) if n not in self.results and self.load_suite(n) is not None]
        prompts = [p for n in wanted for p in self.prompts[n]]
        if not prompts:
            return
        rows = self.score_prompts(prompts, progress=progress)
        for name in wanted:
            self.results[name] = SuiteResult(name, [r for r in rows if r.prompt.suite == name], self.settings)
        if "capability" in wanted:
            from harness.engine.capability import score_capability

            score_capability(self, self.results["capability"], progress=progress)

    def score_prompts(self, prompts: list[Prompt], *, progress: bool = False) -> list[ScoredRow]:
        """Generate and score ad-hoc prompts (e.g. hypothesis rewrites) through the same cache, lock and
        backend as the suites: repeated prompts cost nothing, and the engine started once stays up."""
        if not prompts:
            return []
        requests = self._build_requests(prompts)
        responses, cached = self._generate(requests, progress=progress)
        started = time.perf_counter()
        scores, harms = self._score(prompts, [r.text for r in responses])
        self.stats.scoring_seconds += time.perf_counter() - started
        return [ScoredRow(req.prompt, req.text, resp, score, req.key in cached, harm)
                for req, resp, score, harm in zip(requests, responses, scores, harms)]

    def _score(self, prompts: list[Prompt], texts: list[str]) -> tuple[list[RefusalScore], list]:
        """Refusal labels, then harm scores (which may read the labels), by the scorers the settings name."""
        from harness.scoring.factory import build_harm_scorer, build_refusal_scorer

        if self._scorers is None:  # built once: a judge or reward model loads once per session
            self._scorers = (build_refusal_scorer(self.settings), build_harm_scorer(self.settings))
        scorer, harm_scorer = self._scorers
        questions = [p.prompt for p in prompts]
        expected = [p.expected for p in prompts]
        scores = self._costly_through_cache(
            scorer, [("refusal", q, t) for q, t in zip(questions, texts)],
            lambda idx: scorer.score([questions[i] for i in idx], [texts[i] for i in idx]), RefusalScore)
        self.model_info.update(scorer=scorer.name, scorer_version=scorer.version)
        self.model_info["judge_errors"] = self.model_info.get("judge_errors", 0) + sum(
            s.label == JUDGE_ERROR for s in scores)
        if harm_scorer is None:
            return scores, [None] * len(scores)
        labels = [s.label for s in scores]
        harms = self._costly_through_cache(
            harm_scorer, [("harm", q, t, e, lab) for q, t, e, lab in zip(questions, texts, expected, labels)],
            lambda idx: harm_scorer.score([questions[i] for i in idx], [texts[i] for i in idx],
                                          expected=[expected[i] for i in idx], refusal_labels=[labels[i] for i in idx]),
            HarmScore)
        self.model_info.update(harm_scorer=harm_scorer.name, harm_scorer_version=harm_scorer.version)
        return scores, harms

    def _costly_through_cache(self, scorer, inputs: list[tuple], call, build) -> list:
        """A model-backed scorer (``costly = True``: judges, reward models) scores through the cache's scores
        table under a lock, like generations: a re-run, or a second xdist worker, loads no judge for what
        is already scored. Rule-based scorers cost less than the cache lookup and are called directly."""
        if not getattr(scorer, "costly", False):
            return call(list(range(len(inputs))))
        from dataclasses import astuple

        from harness.engine.cache import GenerationCache, cached_values, stable_hash

        cache = None if self.settings.no_cache else GenerationCache(self.settings.cache_dir)
        keys = [stable_hash(scorer.name, scorer.version, *parts) for parts in inputs]
        values, _ = cached_values(cache, keys, lambda idx: [list(astuple(s)) for s in call(idx)],
                                  what=f"scores {scorer.name}")
        return [build(*v) for v in values]

    def _build_requests(self, prompts: list[Prompt]) -> list[GenerationRequest]:
        s = self.settings
        backend = resolve_backend_name(s.backend)
        if backend in MODEL_FREE:
            fingerprint = _file_digest(s.replay) if backend == "replay" and s.replay else backend
            self.model_info.update(model=str(s.replay or s.model) if backend == "replay" else s.model,
                                   model_fingerprint=fingerprint, backend=backend, template="raw",
                                   resolved_model=None)
            texts = [p.prompt for p in prompts]
            ids = [None] * len(prompts)
        else:
            from harness.models.resolve import load_tokenizer, resolve_model
            from harness.models.templates import format_prompts, resolve_template

            if self._formatting is None:  # resolved once: ad-hoc calls must not re-fingerprint the weights
                model = resolve_model(s.model, base_model=s.base_model, cache_dir=s.cache_dir, allow_pickle=s.allow_pickle)
                tokenizer = load_tokenizer(model)
                self._formatting = (model, tokenizer, resolve_template(s.template, tokenizer=tokenizer, saved=model.template))
            model, tokenizer, template = self._formatting
            formatted = format_prompts(prompts, template, tokenizer)
            texts = [f.text for f in formatted]
            ids = [f.token_ids for f in formatted]
            self.model_info.update(model=s.model, model_fingerprint=model.fingerprint, backend=backend,
                                   template=template, resolved_model=model)
        info = self.model_info
        key_parts = [info["model_fingerprint"], backend, info["template"], s.sampling.as_dict()]
        output_args = s.output_backend_args()  # e.g. quantization, tensor_parallel_size; none: old keys stay valid
        if output_args:
            key_parts.append(output_args)
        run_key = stable_hash(*key_parts)
        info["run_key"] = run_key
        return [GenerationRequest(request_key(run_key, t), p, t, i) for p, t, i in zip(prompts, texts, ids)]

    def _generate(self, requests, *, progress: bool):
        s = self.settings
        info = self.model_info
        use_cache = not s.no_cache and info["backend"] not in MODEL_FREE
        unique = list({r.key: r for r in requests}.values())
        self.stats.n_prompts += len(requests)
        if not use_cache:
            by_key = self._generate_chunks(unique, progress, cache=None)
            return [by_key[r.key] for r in requests], set()
        cache = GenerationCache(s.cache_dir)
        keys = [r.key for r in unique]
        found = cache.get_many(keys)
        if len(found) < len(keys):
            # One process generates a given run's prompts; others (xdist workers, a second CI job)
            # wait here and then find everything in the cache.
            with cache.generation_lock(info["run_key"]):
                found = cache.get_many(keys)
                todo = [r for r in unique if r.key not in found]
                if todo:
                    self._generate_chunks(todo, progress, cache=cache)
                    found.update(cache.get_many([r.key for r in todo]))
        cached = set(keys) - self.generated_keys
        self.stats.n_cached += len({r.key for r in requests} & cached)
        return [found[r.key] for r in requests], cached

    def _generate_chunks(self, todo, progress: bool, *, cache: GenerationCache | None) -> dict[str, GenerationResult]:
        """Generate ``todo``. With a cache, in chunks committed as each finishes, so a killed run loses at
        most one chunk; without one, chunking buys nothing, so it is one batched call."""
        size = max(1, self.settings.chunk_size) if cache is not None else max(1, len(todo))
        out: dict[str, GenerationResult] = {}
        backend = self._start_backend()  # before the bar: a backend that fails to start leaves no bar behind
        if getattr(backend, "commits_shards", False):  # --replicas: a work queue of shards, each cached as it ends
            from harness.backends.replicas import generate_sharded

            return generate_sharded(self, backend, todo, progress, cache=cache)
        bar = _progress_bar(len(todo), progress)
        try:
            for start in range(0, len(todo), size):
                chunk = todo[start : start + size]
                t0 = time.perf_counter()
                results = backend.generate(chunk, progress=bar.update)
                self.stats.generation_seconds += time.perf_counter() - t0
                done = {r.key: res for r, res in zip(chunk, results)}
                if cache is not None:
                    cache.put_many(done)
                out.update(done)
                self.generated_keys.update(done)
                self.stats.n_generated += len(chunk)
                self.stats.n_response_tokens_generated += sum(res.n_tokens for res in results)
        finally:
            bar.close()
        return out

    def _start_backend(self):
        """This session's backend, started on first need and kept until ``close()``, so that ad-hoc calls
        (hypothesis examples) reuse the loaded model instead of loading one each."""
        if self._backend is not None:
            return self._backend
        s = self.settings
        t0 = time.perf_counter()
        if s.replicas > 1:  # N engines as Ray actors (harness/backends/replicas.py)
            from harness.backends.replicas import start_replicas

            backend = start_replicas(s, model=self.model_info.get("resolved_model"), sampling=s.sampling,
                                     options=s.backend_options())
        else:
            backend = create_backend(self.model_info["backend"], model=self.model_info.get("resolved_model"),
                                     sampling=s.sampling, options=s.backend_options())
        try:  # an adapter must change the outputs: fail loudly when it does not (harness/adapter_sanity.py)
            from harness.engine.adapter_sanity import check_adapter

            check_adapter(self, backend)
        except BaseException:
            backend.close()
            raise
        self._backend = backend
        self.stats.backend_start_seconds += time.perf_counter() - t0
        self.stats.backend_starts += 1
        return self._backend

    def close(self) -> None:
        """Release the backend (the plugin calls this when pytest unconfigures)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    # -- report --------------------------------------------------------------------------------------
    def default_report_path(self, rootdir: Path) -> Path:
        return rootdir / "reports" / "runs" / f"run-{self.run_id}.parquet"

    def all_rows(self) -> list[ScoredRow]:
        rows = [row for name in sorted(self.results) for row in self.results[name].rows]
        # Extra rows come from tests in whatever order they ran (or from several xdist workers): sort them.
        return rows + sorted(self.extra_rows, key=lambda r: (r.prompt.suite, r.prompt.category, r.prompt.prompt_id))


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise HarnessError(f"replay file {path}: {exc.strerror}") from None
    return digest.hexdigest()[:16]


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="safety-harness: generating", unit="prompt", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)
