"""One harness run: gather the prompts the selected suites need, generate them in one batched backend
call (through the on-disk cache), score them, and keep the scored rows for the tests and the report.

This object lives in ``config.stash`` (see ``harness.pytest_plugin.plugin``); it is also usable without pytest.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from harness.backends import create_backend, resolve_backend_name
from harness.backends.base import MODEL_FREE
from harness.engine.cache import GenerationCache, prompt_request_key, stable_hash
from harness.engine.preflight import RunPlan, preflight
from harness.engine.progress import generation_bar
from harness.engine.response_scoring import ResponseScoring
from harness.core.clock import run_origin
from harness.core.errors import DataError, HarnessError
from harness.core.files import sha256_file
from harness.data.fetch import DataFetchError, DataLocationError
from harness.data.integrity import DataIntegrityError
from harness.engine.human_labels import open_label_store, with_human_labels
from harness.engine.suite_result import ScoredRow, SuiteResult
from harness.models.templates import user_message
from harness.config.thresholds import JUDGE_ERROR
from harness.scoring.error_rates import rates_from_record
from harness.config.settings import RunSettings
from harness.data.suites import SuiteDataMissing, get_suite
from harness.core.types import GenerationRequest, GenerationResult, ModelInfo, Prompt, RefusalScore


class DataMissingError(DataError):
    """A selected suite's dataset is neither in the data folder nor in the cache, and could not be fetched."""


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
    # Where the wall time went, phase by phase (harness.engine.summary.time_line adds them up). Each is measured
    # where it happens, and no two overlap: a phase inside another is not part of it.
    startup_seconds: float = 0.0  # process start (harness.core.clock) to this session: interpreter, imports, settings
    data_seconds: float = 0.0  # fetching, verifying and loading the suites' data (load_suite)
    model_prep_seconds: float = 0.0  # resolving the model (fingerprint, GGUF to safetensors), tokenizer, prompt formatting
    report_seconds: float = 0.0  # writing the report and the other outputs, as far as measured so far
    wall_seconds: float = 0.0  # process start to the report (or to the terminal summary); 0 until then


@dataclass
class HarnessSession:
    settings: RunSettings
    run_id: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6])
    started: float = field(default_factory=time.time)
    prompts: dict[str, list[Prompt]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # suite -> why its data is absent
    data_errors: dict[str, str] = field(default_factory=dict)  # suite -> why its data is absent (fails the run)
    data_unusable: set = field(default_factory=set)  # suites whose data_errors line is a changed file or bad folder
    results: dict[str, SuiteResult] = field(default_factory=dict)
    stats: RunStats = field(default_factory=RunStats)
    # Frozen facts of the model and scorers for the report, replaced (never changed) by ``_record_model``. The
    # model the run names has one source, ``settings.model``; ``model_info.model`` is the report's copy of it.
    model_info: ModelInfo = field(default_factory=ModelInfo)
    resolved_model: object = field(default=None, repr=False)  # the live ResolvedModel (None: model-free backend)
    generated_keys: set = field(default_factory=set)  # cache keys this session generated itself
    extra_rows: list = field(default_factory=list)  # ScoredRows outside any suite's gate (e.g. invariance search)
    extra_metadata: dict = field(default_factory=dict)  # merged into the report's run metadata
    label_store_path: Path | None = None  # the label store this run read people's labels from (None: no store)
    # suite -> the categories whose own checks the run holds (the per-category test items pytest selected,
    # ``assert_thresholds(suite, category)``): recorded in the report beside the suite's checks, and the
    # categories that split the suite's strata of verified rates (harness.engine.verify_rows).
    held_categories: dict[str, list[str]] = field(default_factory=dict)
    # The suites whose own checks a selected test item holds (a suite test, not a category's or a baseline
    # item): -k, -m or --deselect can leave a suite's own test out while its categories' run. None outside a
    # pytest run, where every suite's checks are its verdict.
    held_suites: list[str] | None = None
    _backend: object = field(default=None, repr=False)  # kept open across generate calls; see close()
    _formatting: tuple | None = field(default=None, repr=False)  # (resolved model, tokenizer, template)
    _scoring: object = field(default=None, repr=False)  # ResponseScoring, built on first need
    notify: object = field(default=_stderr_line, repr=False)  # one line of progress news (dataset fetches)
    plan: RunPlan | None = field(default=None, repr=False)  # the checked settings and options (engine.preflight)
    # perf_counter() readings: where the run's wall time starts (harness.core.clock) and when writing the
    # report began (None: not yet).
    origin: float = field(default_factory=run_origin, repr=False)
    report_started: float | None = field(default=None, repr=False)
    own_startup_seconds: float = field(default=0.0, init=False, repr=False)  # this process's, whatever a merge adds

    def __post_init__(self):
        if self.plan is None:  # settings from build_settings: run the checks across packages here
            self.plan = preflight(self.settings)
        self.settings = self.plan.settings
        self.stats.startup_seconds = self.own_startup_seconds = time.perf_counter() - self.origin

    def stop_clock(self) -> None:
        """Bring ``wall_seconds`` and ``report_seconds`` up to now (the report's metadata and the terminal summary
        each call this when they are written)."""
        now = time.perf_counter()
        self.stats.wall_seconds = now - self.origin
        if self.report_started is not None:
            self.stats.report_seconds = now - self.report_started

    # -- prompts -------------------------------------------------------------------------------------
    def load_suite(self, name: str) -> list[Prompt] | None:
        """The suite's prompts after --limit, or None when its data is absent (reason in ``missing``)."""
        if name in self.prompts:
            return self.prompts[name]
        if name in self.missing:
            return None
        if name in self.data_errors:
            raise DataMissingError(self.data_error_line([name]))
        started = time.perf_counter()
        try:
            return self._load_suite(name)
        finally:
            self.stats.data_seconds += time.perf_counter() - started

    def _load_suite(self, name: str) -> list[Prompt] | None:
        spec = get_suite(name)
        try:
            if spec.builtin:  # a first run fetches the files its suites read (harness/data/manifest.toml)
                from harness.data.fetch import ensure_available

                ensure_available(name, self.settings.data_dir, source=self.settings.data_source, notify=self.notify)
            prompts = spec.load(self.settings.data_dir)
        except (SuiteDataMissing, DataFetchError) as exc:
            return self._data_missing(name, str(exc))
        except (DataIntegrityError, DataLocationError) as exc:  # not missing: never skipped, its own line
            self.data_errors[name] = str(exc)
            self.data_unusable.add(name)
            raise DataMissingError(str(exc)) from None
        if self.settings.limit is not None:
            from harness.data.sampling import stratified_sample

            prompts = stratified_sample(prompts, self.settings.limit, seed=self.settings.seed)
        self.prompts[name] = prompts
        return prompts

    def _data_missing(self, name: str, reason: str) -> None:
        """A selected suite without its data fails the run (a missing dataset never passes a gate), with
        the one thing to do; --allow-missing-data turns that into a skip."""
        if self.settings.allow_missing_data:
            self.missing[name] = reason
            return None
        self.data_errors[name] = reason
        raise DataMissingError(self.data_error_line([name]))

    def data_error_line(self, names: list[str]) -> str:
        """One line for the selected suites whose data is missing: why, and exactly what to run."""
        names = [n for n in names if n in self.data_errors]
        unusable = [n for n in names if n in self.data_unusable]
        if unusable:  # the file's or folder's own line says what to do
            return self.data_errors[unusable[0]]
        first = self.data_errors[names[0]]
        if len(names) == 1:
            return (f"{first}; run `safety-harness data fetch {names[0]}` (or pass --data-dir DIR, or "
                    "--allow-missing-data to skip the suite)")
        return (f"{len(names)} suites ({', '.join(names)}) miss their datasets, e.g. {first}; run `safety-harness "
                "data fetch` (or pass --data-dir DIR, or --allow-missing-data to skip those suites)")

    # -- generation ----------------------------------------------------------------------------------
    def run(self, suite_names: list[str], *, progress: bool = True) -> None:
        """Generate (or read from cache) and score every prompt of ``suite_names`` in one batch."""
        wanted = [n for n in dict.fromkeys(suite_names) if n not in self.results and self.load_suite(n) is not None]
        prompts = [p for n in wanted for p in self.prompts[n]]
        if not prompts:
            return
        store = open_label_store(self)  # before generation: a damaged store stops the run with its one line
        rows = with_human_labels(self.score_prompts(prompts, progress=progress), store)
        for name in wanted:
            self.results[name] = self.suite_result(name, [r for r in rows if r.prompt.suite == name])
        if "capability" in wanted:
            from harness.engine.capability_metrics import score_capability

            score_capability(self, self.results["capability"], progress=progress)

    def suite_result(self, name: str, rows: list[ScoredRow], capability=None) -> SuiteResult:
        """A suite's result as the tests see it: the one builder for a serial run and for the rows merged
        from pytest-xdist workers (harness.engine.session_payload)."""
        return SuiteResult(name, rows, self.settings, capability=capability,
                           error_rates=rates_from_record(self.model_info.scorer_error_rates),
                           held_categories=tuple(self.held_categories.get(name, ())))

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
        if self._scoring is None:  # built once: a judge or reward model loads once per session
            self._scoring = ResponseScoring(self.plan)
        # The scorers that read the prompt (judges, guards, a reward model) get the user turn the model answered:
        # an Alpaca-style input is part of the request.
        scores, harms = self._scoring.score([user_message(p) for p in prompts], texts, [p.expected for p in prompts])
        scoring, info = self._scoring, self.model_info
        facts = {"scorer": scoring.refusal.name, "scorer_version": scoring.refusal.version,
                 "scorer_unseen_agreement": getattr(scoring.refusal, "unseen_agreement", None),
                 "judge_errors": info.judge_errors + sum(s.label == JUDGE_ERROR for s in scores)}
        if info.scorer_error_rates is None:  # resolved once; the report records which rates were used
            from harness.scoring.error_rates import error_rates_record

            facts["scorer_error_rates"] = error_rates_record(
                scoring.refusal.name, scoring.refusal.version, self.settings.error_rates, info.model_fingerprint)
        if scoring.harm is not None:
            facts.update(harm_scorer=scoring.harm.name, harm_scorer_version=scoring.harm.version)
        self._record_model(**facts)
        return scores, harms

    def _record_model(self, **facts) -> None:
        """The one place the run's ``ModelInfo`` changes: a new frozen record with these facts."""
        self.model_info = replace(self.model_info, **facts)

    def _build_requests(self, prompts: list[Prompt]) -> list[GenerationRequest]:
        started = time.perf_counter()
        try:
            return self._requests(prompts)
        finally:
            self.stats.model_prep_seconds += time.perf_counter() - started

    def _requests(self, prompts: list[Prompt]) -> list[GenerationRequest]:
        s = self.settings
        backend = resolve_backend_name(s.backend)
        if backend in MODEL_FREE:
            fingerprint = _file_digest(s.replay) if backend == "replay" and s.replay else backend
            self._record_model(model=str(s.replay or s.model) if backend == "replay" else s.model,
                               model_fingerprint=fingerprint, backend=backend, template="raw")
            self.resolved_model = None
            texts = [user_message(p) for p in prompts]  # the raw template's text: an input is part of it
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
            from harness.engine.prompt_window import backend_window, check_prompt_lengths

            # Before any generation: a prompt the model cannot hold stops the run, naming the prompt.
            check_prompt_lengths([GenerationRequest("", p, t, i) for p, t, i in zip(prompts, texts, ids)],
                                 window=backend_window(backend, model.path, s.max_model_len),
                                 max_new_tokens=s.max_new_tokens, backend=backend)
            self._record_model(model=s.model, model_fingerprint=model.fingerprint, backend=backend, template=template,
                               dtype=_generation_dtype(backend, s.dtype, adapter=bool(model.adapter_path)))
            self.resolved_model = model
        info = self.model_info
        key_parts = [info.model_fingerprint, backend, info.template, sampling_key(s.sampling)]
        if info.dtype:  # greedy outputs differ between precisions
            key_parts.append({"dtype": info.dtype})
        if s.batch_invariant:  # other kernels than the default ones: other numerics
            key_parts.append({"batch_invariant": True})
        from harness.engine.layout import layout_key_part

        layout = layout_key_part(s, backend, info.dtype)  # bfloat16 responses depend on the layout
        if layout:
            key_parts.append({"layout": layout})
        output_args = self.plan.output_backend_args  # e.g. quantization, tensor_parallel_size; none: old keys stay valid
        if output_args:
            key_parts.append(output_args)
        if s.trust_remote_code and backend not in MODEL_FREE:  # the folder's own model class, not transformers'
            key_parts.append({"trust_remote_code": True})
        if backend == "hf":  # replies made under the folder's own decoding are not this run's
            from harness.backends.hf import decoding_key_part

            decoding = decoding_key_part(self.resolved_model.path, s.sampling)
            if decoding:
                key_parts.append(decoding)
        run_key = stable_hash(*key_parts)
        self._record_model(run_key=run_key)
        return [GenerationRequest(prompt_request_key(run_key, backend, p, t), p, t, i)
                for p, t, i in zip(prompts, texts, ids)]

    def _generate(self, requests, *, progress: bool):
        s = self.settings
        info = self.model_info
        use_cache = not s.no_cache and info.backend not in MODEL_FREE
        unique = list({r.key: r for r in requests}.values())
        self.stats.n_prompts += len(requests)
        if not use_cache:
            by_key = self._generate_and_commit(unique, progress, cache=None)
            return [by_key[r.key] for r in requests], set()
        cache = GenerationCache(s.cache_dir)
        keys = [r.key for r in unique]
        found = cache.get_many(keys)
        if len(found) < len(keys):
            # One process generates a given run's prompts; others (xdist workers, a second CI job)
            # wait here and then find everything in the cache.
            with cache.generation_lock(info.run_key):
                found = cache.get_many(keys)
                todo = [r for r in unique if r.key not in found]
                if todo:
                    self._generate_and_commit(todo, progress, cache=cache)
                    found.update(cache.get_many([r.key for r in todo]))
        cached = set(keys) - self.generated_keys
        # Rows, as n_prompts and the report's `cached` column count them: two prompts of one text share a key.
        self.stats.n_cached += sum(r.key in cached for r in requests)
        return [found[r.key] for r in requests], cached

    def _generate_and_commit(self, todo, progress: bool, *, cache: GenerationCache | None) -> dict[str, GenerationResult]:
        """Generate ``todo``, committing each part the backend hands back as it finishes (a chunk of
        ``chunk_size`` prompts, a replica's shard) to the cache and the run's statistics: a killed run loses
        at most the parts under way. Without a cache, chunking buys nothing, so it is one batched call."""
        backend = self._start_backend()  # before the bar: a backend that fails to start leaves no bar behind
        out: dict[str, GenerationResult] = {}
        committing = 0.0  # seconds spent in the cache, not generating

        def commit(results: dict[str, GenerationResult]) -> None:
            nonlocal committing
            t0 = time.perf_counter()
            if cache is not None:
                cache.put_many(results)
            committing += time.perf_counter() - t0
            out.update(results)
            self.generated_keys.update(results)
            self.stats.n_generated += len(results)
            self.stats.n_response_tokens_generated += sum(res.n_tokens for res in results.values())

        bar = generation_bar(len(todo), progress)
        t0 = time.perf_counter()
        try:
            backend.generate(todo, progress=bar.update, on_results=commit,
                             chunk_size=self.settings.chunk_size if cache is not None else None)
        finally:
            self.stats.generation_seconds += time.perf_counter() - t0 - committing
            bar.close()
            self.extra_metadata.update(backend.run_facts())  # e.g. the replicas' shards and faults
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

            backend = start_replicas(self.plan.parallel, model=self.resolved_model, sampling=self.plan.sampling,
                                     options=self.plan.backend_options)
        else:
            backend = create_backend(self.model_info.backend, model=self.resolved_model,
                                     sampling=self.plan.sampling, options=self.plan.backend_options)
        try:  # an adapter must change the outputs: fail loudly when it does not (harness/engine/adapter_sanity.py)
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


def sampling_key(sampling) -> dict:
    """The decoding as the cache key holds it. Without sampling (greedy, beam search) neither backend reads the
    seed or top_p, and --seed also draws the --limit sample: there they take their defaults, so a greedy run
    with another seed is served the replies it would generate (and a default run keeps its key)."""
    out = sampling.as_dict()
    if sampling.temperature == 0:
        out.update(seed=type(sampling).seed, top_p=type(sampling).top_p)
    return out


def _generation_dtype(backend: str, dtype: str, *, adapter: bool) -> str:
    from harness.backends.base import generation_dtype, on_gpu

    return generation_dtype(backend, dtype, on_gpu(), adapter=adapter)


def _file_digest(path: Path) -> str:
    try:
        return sha256_file(path)[:16]
    except OSError as exc:
        raise HarnessError(f"replay file {path}: {exc.strerror}") from None
