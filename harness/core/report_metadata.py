"""The report's run metadata as a typed record, and its schema: every key the JSON under
``report_file.METADATA_KEY`` may hold is a field of ``RunMetadata`` below, with its type, its meaning and what
writes it. ``docs/reference/report-metadata.md`` is generated from these fields (``python -m
harness.cli.docs_gen``), so the page cannot drift from what a report holds.

The engine builds the record when it writes a report (``harness.engine.run_report.run_metadata``): the fixed
sections from the session, the optional ones from the session's section store (``extra_metadata``, written by
the adapter sanity check, the replica pool and the invariance checks) and the caller's run facts
(``exitstatus``, ``sweep``). A section store key that is not declared here fails there, naming it, so a new
section cannot reach a report undocumented. ``as_dict`` is the JSON a report holds, unchanged from the
reports written before this record existed; ``from_dict`` reads it back."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

from harness.core.errors import HarnessError
from harness.core.types import ModelInfo


class MetadataKeyError(HarnessError):
    """A run metadata key that ``RunMetadata`` does not declare."""


def _key(meaning: str, written_by: str, *, optional: bool = False):
    """A metadata key: what it means and which command or option writes it (both on the reference page).
    An optional key is left out of the JSON when unset."""
    return field(default=None if optional else MISSING, metadata={"help": meaning, "written_by": written_by})


EVERY_RUN = "every report"


@dataclass(frozen=True)
class RunMetadata:
    """One run's metadata, in the order the report's JSON lists it."""

    run_id: str = _key("The run's id: UTC start time and a random suffix; also the `run_id` column.", EVERY_RUN)
    started: float = _key("When the session was created (Unix seconds).", EVERY_RUN)
    finished: float = _key("When the report was written (Unix seconds).", EVERY_RUN)
    versions: dict = _key("Python's and the installed packages' versions (safety-harness, torch, transformers, "
                          "vllm, peft, pyarrow, pytest), where installed.", EVERY_RUN)
    settings: dict = _key("Every run setting by its `RunSettings` name (paths as strings); see "
                          "[options](options.md).", EVERY_RUN)
    model: ModelInfo = _key("What the run generated and scored with; its keys are listed below.", EVERY_RUN)
    layout: dict = _key("How the run was spread and in which precision: `dtype`, `replicas`, "
                        "`tensor_parallel_size`, `pipeline_parallel_size`, `data_parallel_size`, `batch_cap`, "
                        "`batch_invariant`. A comparison refuses runs whose responses may differ for these alone.",
                        EVERY_RUN)
    stats: dict = _key("Counts: `n_prompts`, `n_generated`, `n_cached`, `n_response_tokens_generated`, "
                       "`backend_starts`. Where the wall time went, phase by phase, none overlapping another: "
                       "`startup_seconds` (process start to the session: interpreter, imports, settings), "
                       "`data_seconds` (fetching, verifying and loading the suites' data), `model_prep_seconds` "
                       "(resolving the model and its tokenizer and template, formatting the prompts), "
                       "`backend_start_seconds`, `generation_seconds`, `scoring_seconds`, then the capability "
                       "suite's `suites.capability.capability.seconds`, then `report_seconds`; `wall_seconds` is "
                       "process start to the report. `report_seconds` and `wall_seconds` stop where this metadata "
                       "is written: the Parquet file's own write, the outputs after it and the teardown are not in "
                       "them (the terminal summary's `time:` line counts them). With pytest-xdist, engine start and "
                       "generation are summed over the workers (they take turns), the other phases are the slowest "
                       "worker's, the startup adds the controller's own, and report and wall are the controller's.",
                       EVERY_RUN)
    suites: dict = _key("Per suite: `n`, `checks` (each check's rate, interval, threshold, `threshold_on`, verdict, "
                        "`corrected` and `verified` rates), `category_checks` (category -> its checks, alike, for "
                        "each category whose own test item the run held; absent in reports written before it and "
                        "in runs that held none), `gated` (false, and only then present, when no selected test held "
                        "the suite's own checks: -k, -m, --deselect or --lf left its suite test out, so the exit "
                        "status does not count them), `labelled`, `judge_errors` (row ids and two raw outputs), "
                        "`harm_judge_errors` (the replies the harm scorer could not read, alike) and "
                        "`capability` notes.", EVERY_RUN)
    missing_suites: dict = _key("Selected suites skipped for missing data, with the reason.",
                                "every report; filled with `--allow-missing-data`")
    labels: dict = _key("The label store read (`store`), the rows with a person's label (`labelled_rows`), and "
                        "`missing_store` when the store `--labels` names did not exist.", EVERY_RUN)
    provenance: dict = _key("What a later run is gated against: model fingerprint, git commit, machine, the SHA-256 "
                            "of each data file read, template, sampling settings and scorer version.", EVERY_RUN)
    # Optional sections, written into the session's section store (HarnessSession.extra_metadata) during the run.
    adapter_sanity: dict | None = _key(
        "The adapter sanity check's finding: `adapter`, `applied`, `max_logprob_shift`, `noise`, `dtype`, "
        "`differing` of `of` canaries, and `warning` when no greedy token changed.",
        "a run of a LoRA adapter, unless `--no-adapter-sanity`", optional=True)
    replicas: dict | None = _key(
        "What the replica pool did: `replicas`, `shards`, `replica_failures`, `shards_rerun` and each fault.",
        "`--replicas N` (N > 1)", optional=True)
    invariance: dict | None = _key(
        "The invariance checks' findings and cost: anchored `bases` per side, and per property its flips.",
        "the invariance suites (`--run-invariance`)", optional=True)
    # Run facts the caller of write_report adds.
    exitstatus: int | None = _key("pytest's exit status when the report was written (a later session-level failure, "
                                  "e.g. a baseline flips table that could not be written, is not in it).",
                                  "`pytest` (the plugin's report)", optional=True)
    sweep: str | None = _key("The sweep entry the report belongs to.", "`research/experiments/sweep.py`",
                             optional=True)

    def as_dict(self) -> dict:
        """The JSON a report holds: every key in field order, optional ones only when set."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in OPTIONAL_KEYS:
                continue
            out[f.name] = value.as_dict() if isinstance(value, ModelInfo) else value
        return out

    @classmethod
    def from_dict(cls, metadata: dict) -> "RunMetadata":
        """The record of a report's metadata (``report_file.read_report``'s dict); an undeclared key or a
        missing required one is a ``MetadataKeyError`` naming it."""
        check_keys(metadata, "report metadata")
        missing = [name for name in REQUIRED_KEYS if name not in metadata]
        if missing:
            raise MetadataKeyError(f"report metadata lacks key(s): {', '.join(missing)}")
        try:
            model = ModelInfo.from_dict(metadata["model"])
        except (TypeError, ValueError) as exc:
            raise MetadataKeyError(f"report metadata: {exc}") from None
        return cls(**{**metadata, "model": model})


KEYS = {f.name: f for f in fields(RunMetadata)}
OPTIONAL_KEYS = frozenset(name for name, f in KEYS.items() if f.default is None)
REQUIRED_KEYS = tuple(name for name in KEYS if name not in OPTIONAL_KEYS)
SECTION_KEYS = ("adapter_sanity", "replicas", "invariance")  # the keys of the session's section store
RUN_FACT_KEYS = ("exitstatus", "sweep")  # the keys a write_report caller may add


def check_keys(entries: dict, where: str, allowed=None) -> None:
    """Raise ``MetadataKeyError`` naming each key of ``entries`` that is not among ``allowed`` (default: every
    declared key), and where it came from."""
    allowed = KEYS if allowed is None else allowed
    unknown = sorted(set(entries) - set(allowed))
    if unknown:
        raise MetadataKeyError(f"{where}: undeclared run metadata key(s) {', '.join(unknown)}; declare each as a "
                               f"field of harness.core.report_metadata.RunMetadata (allowed here: "
                               f"{', '.join(allowed)})")
