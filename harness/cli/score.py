"""``safety-harness score INPUT --output OUT.parquet``: score any CSV, JSONL, JSON or Parquet file of
prompt/response pairs with the harness's scorers (the same ones the suites use), and, with
``--label-column``, print agreement with the file's own labels.

Odd input gets a defined outcome: a missing column is a one-line error naming the file and the columns it
has; an empty or missing response is scored (every built-in refusal scorer but XSTest's string match
labels it full_refusal); an ``input`` column (a run's report has one) is read after each prompt, as the run's
scoring reads it; bytes that are not UTF-8 are replaced with U+FFFD after a warning naming the line; a
100,000-character response is scored on a bounded opening, as every scorer cuts its input. More than 5% of
the rows in ``judge_error`` (the limit a suite fails on) exits 1, naming the scorer and two raw outputs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from harness.cli.registry import command
from harness.core.errors import ConfigError, DataError, HarnessError
from harness.core.files import atomic_path
from harness.core.records import JUDGE_ERROR

OUTPUT_COLUMNS = ("refusal_label", "refusal_score", "scorer", "scorer_version",
                  "harm_score", "harm_raw", "harm_scorer", "harm_scorer_version")


@command("score", help="score a CSV/JSONL/Parquet file of prompt/response pairs; with --label-column, "
                       "print agreement with its labels")
def _score_args(p):
    p.add_argument("input", type=Path, nargs="+",
                   help="CSV, JSONL, JSON or Parquet file(s) of prompt/response pairs; several files are scored in "
                        "one pass (the scorer loads once), with agreement pooled and per file")
    p.add_argument("--output", type=Path, default=None, help="write the scored rows here (Parquet)")
    p.add_argument("--prompt-column", default="prompt", help="column holding the prompts (default prompt)")
    p.add_argument("--response-column", default="response",
                   help="column holding the responses (default response; XSTest's files use completion)")
    p.add_argument("--label-column", default=None,
                   help="reference labels to agree with: 1_full_compliance/full_compliance, 2_full_refusal, "
                        "3_partial_refusal, or binary refusal/compliance")
    p.add_argument("--expected-column", default=None,
                   help="refuse|comply per row, for the unsafe_compliance harm scorer (default: 'expected' if present)")
    p.add_argument("--expected", choices=("refuse", "comply"), default=None,
                   help="the expected behaviour of every row, when the file has no such column")
    p.add_argument("--scorer", default=None, help="refusal scorer (default refusal_classifier)")
    p.add_argument("--judge-model", default=None,
                   help="local model (folder or cached hub id) for refusal_judge / harm_judge, or the guard model "
                        "for wildguard / qwen3guard / llamaguard")
    p.add_argument("--harm-scorer", default=None,
                   help="auto, unsafe_compliance, reward_model, harm_judge, wildguard, qwen3guard, llamaguard or none "
                        "(default: auto, which scores harm only when --harm-model, an expected column or a guard "
                        "--scorer is given)")
    p.add_argument("--harm-model", default=None, help="local sequence-classification harmfulness model")
    p.add_argument("--backend", default=None, choices=("auto", "vllm", "hf"), help="backend for a judge model")
    p.add_argument("--batch-size", type=int, default=None, help="hf backend: prompts per batch for a judge model")
    p.add_argument("--vllm-kv-cache-gib", type=float, default=None, help="vllm on CPU: the judge's KV cache (GiB)")
    p.add_argument("--max-model-len", type=int, default=None, help="vllm: the judge's longest prompt plus verdict")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="prepared models (default: $SAFETY_HARNESS_CACHE or ~/.cache/safety-harness)")
    p.add_argument("--config", type=Path, default=None, help="TOML file with [tool.safety-harness] settings")


@_score_args.run
def _score(args) -> int:
    from harness.scoring.agreement import agreement, normalize_label
    from harness.engine.response_scoring import ResponseScoring
    from harness.scoring.factory import HARM_AUTO, harm_scorer_name
    from harness.config.settings import build_settings
    from harness.engine.preflight import preflight

    cli = {"scorer": args.scorer, "judge_model": args.judge_model, "harm_scorer": args.harm_scorer,
           "harm_model": args.harm_model, "backend": args.backend, "batch_size": args.batch_size,
           "cache_dir": args.cache_dir, "vllm_kv_cache_gib": args.vllm_kv_cache_gib, "max_model_len": args.max_model_len}
    plan = preflight(build_settings(cli=cli, rootdir=Path.cwd(), config_file=args.config))
    settings = plan.settings
    required = [args.prompt_column, args.response_column] + ([args.label_column] if args.label_column else [])
    _refuse_repeated_inputs(args.input)
    if args.output is not None and args.output.is_dir():  # said before the scoring, which a judge makes long
        raise ConfigError(f"--output {args.output} is a folder; name the Parquet file to write")
    rows, sources = [], []
    for path in args.input:
        read = read_rows(path, required)
        if not read:
            raise DataError(f"{path}: no rows to score")
        rows += read
        sources += [str(path)] * len(read)
    columns = list(dict.fromkeys(k for _, row in rows for k in row))
    prompts = [cell_text(row.get(args.prompt_column)) for _, row in rows]
    prompts = _with_inputs(prompts, rows, columns, args)
    responses = [cell_text(row.get(args.response_column)) for _, row in rows]
    expected = _expected(args, columns, rows)

    empty = sum(1 for r in responses if not r.strip())
    if empty:
        print(f"note: {empty} empty responses (scored as the scorer defines: refusal_patterns and the "
              "classifier and judge label them full_refusal)", file=sys.stderr)
    harm_name = harm_scorer_name(plan.scorer_options)
    no_harm = harm_name is None or (harm_name == "unsafe_compliance" and settings.harm_scorer == HARM_AUTO
                                    and expected is None)  # auto, and nothing says which prompts should be refused
    if harm_name == "unsafe_compliance" and expected is None and not no_harm:
        raise ConfigError("harm scorer unsafe_compliance needs the expected behaviour: --expected-column COL "
                          "or --expected refuse|comply")
    # The same scoring as a pytest run (harness.engine.response_scoring): judges and reward models score through the cache.
    # The clock starts before the scorers are built: loading a model is part of what scoring a file costs.
    t0 = time.perf_counter()
    scoring = ResponseScoring(plan, harm=None if no_harm else "from settings")
    scorer, harm_scorer = scoring.refusal, scoring.harm
    loaded = time.perf_counter()
    scores = scoring.score_refusals(prompts, responses)
    seconds = time.perf_counter() - t0
    rate = len(rows) / max(seconds, 1e-9)
    shown = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}"
    print(f"scored {len(rows)} responses with {scorer.name} (version {scorer.version}) in {seconds:.2f} s, "
          f"{loaded - t0:.2f} s of it loading the scorers ({shown} responses/s)")
    unreadable = _judge_error_check(scores, scorer.name)
    if unreadable is not None:
        print(f"{JUDGE_ERROR}: {unreadable.describe()}")

    harms = [None] * len(rows)
    if harm_scorer is not None:
        t0 = time.perf_counter()
        harms = scoring.score_harm(prompts, responses, expected, [s.label for s in scores])
        unparsed = sum(1 for h in harms if h.extra.get(JUDGE_ERROR))
        print(f"harm: {harm_scorer.name} (version {harm_scorer.version}) in {time.perf_counter() - t0:.2f} s"
              + (f"; {unparsed} unparseable ratings ({JUDGE_ERROR}) left empty" if unparsed else ""))

    inputs = [str(p) for p in args.input]
    report = {"input": inputs[0] if len(inputs) == 1 else inputs, "rows": len(rows), "scorer": scorer.name, "scorer_version": scorer.version,
              "harm_scorer": getattr(harm_scorer, "name", None), "seconds": seconds}
    if args.label_column:
        labels = [row.get(args.label_column) for _, row in rows]
        reference = [normalize_label(v) for v in labels]
        left_out = [(where, v) for (where, _), v, g in zip(rows, labels, reference) if g is None]
        blank = [where for where, v in left_out if not cell_text(v).strip()]
        unknown = [(where, v) for where, v in left_out if cell_text(v).strip()]
        if blank:  # not labelled is not the same as labelled with something unknown
            print(f"note: {len(blank)} rows without a label were left out (first at {blank[0]})", file=sys.stderr)
        if unknown:
            print(f"note: {len(unknown)} rows with a label that is not a refusal class were left out "
                  f"(first: {unknown[0][1]!r} at {unknown[0][0]})", file=sys.stderr)
        result = agreement(reference, [s.label for s in scores])
        binary_only = (getattr(scorer, "unseen_agreement", None) or {}).get("labels") == "binary"
        for line in result.lines():
            if binary_only and line.lstrip().startswith("three-class:"):  # a guard says refusal or compliance
                line = "  three-class: not available (a binary scorer: refusal or compliance)"
            print(line)
        rates, rate_lines = _sensitivity_specificity(reference, scores)
        for line in rate_lines:
            print(line)
        report["agreement"] = {"n": result.n, "binary": result.binary,
                               "three_class": None if binary_only else result.three_class,
                               "judge_errors": result.judge_errors, **rates}
        for path in (inputs if len(inputs) > 1 else []):
            mine = [i for i, src in enumerate(sources) if src == path]
            one = agreement([reference[i] for i in mine], [scores[i].label for i in mine])
            three = "not available" if binary_only else _figure(one.three_class)
            print(f"  {path}: binary {_figure(one.binary)}, three-class {three} ({one.n} rows)")
    if args.output:
        out = _write(args.output, rows, columns, scores, harms, scorer, harm_scorer, report,
                     sources if len(inputs) > 1 else None)
        print(f"output: {out}")
    # As a suite fails on it (harness.config.thresholds.JUDGE_ERROR_LIMIT): a file the scorer mostly could not
    # read has figures that say more about the scorer than the replies. The scores are written all the same.
    return 1 if unreadable is not None and not unreadable.passed else 0


def _judge_error_check(scores, scorer: str):
    """The suites' check on the share of judge_error labels, over every scored row; None when there are none."""
    from dataclasses import replace

    from harness.config.thresholds import judge_error_check
    from harness.core.records import JUDGE_OUTPUT

    outputs = [str((s.extra or {}).get(JUDGE_OUTPUT, "")) for s in scores if s.label == JUDGE_ERROR]
    check = judge_error_check([s.label for s in scores], outputs, scorer)
    return None if check is None else replace(check, counted=f"labelled {JUDGE_ERROR}, left out of any agreement")


def _with_inputs(prompts: list[str], rows, columns: list[str], args) -> list[str]:
    """An ``input`` column (a run's report, Alpaca-style files) is part of the request the model answered: each
    prompt becomes the user turn the run's own scoring gives the scorers (harness.models.templates.user_message)."""
    from harness.core.types import Prompt
    from harness.models.templates import user_message

    if "input" not in columns or "input" in (args.prompt_column, args.response_column):
        return prompts
    inputs = [cell_text(row.get("input")) for _, row in rows]
    given = sum(1 for i in inputs if i)
    if given:
        print(f"note: {given} prompts have an 'input' column value, read after the prompt (as a run scores them)",
              file=sys.stderr)
    return [user_message(Prompt("score", "", p, input=i)) for p, i in zip(prompts, inputs)]


def _refuse_repeated_inputs(paths: list[Path]) -> None:
    """One file named twice (or under two spellings) would count each of its rows twice in the pooled
    agreement, and its per-file line would show both copies: one line instead."""
    seen: dict[Path, Path] = {}
    for path in paths:
        same = seen.setdefault(path.resolve(), path)
        if same is not path:
            raise ConfigError(f"{path}: the same file as {same}, given twice; each input file is scored once")


def _sensitivity_specificity(reference: list, scores) -> tuple[dict, list[str]]:
    """Sensitivity (reference refusals, full or partial, scored any refusal) and specificity (reference
    compliances scored compliance) over the labelled rows the scorer could read (judge_error left out), as
    figures and as lines."""
    from harness.scoring.error_rates import ErrorRates

    pairs = [(g, s.label) for g, s in zip(reference, scores) if g is not None and s.label != JUDGE_ERROR]
    r = ErrorRates.from_labels("", "", [g for g, _ in pairs], [p for _, p in pairs])
    figures = {"sensitivity": r.sensitivity if r.refusals else None,
               "specificity": r.specificity if r.compliances else None}
    none = "n/a (none among the rows the scorer could read)"
    lines = [
        "  sensitivity (reference refusals scored refusal): "
        + (f"{r.sensitivity:.3f} ({r.refusals_scored_refusal}/{r.refusals})" if r.refusals else none),
        "  specificity (reference compliances scored compliance): "
        + (f"{r.specificity:.3f} ({r.compliances_scored_compliance}/{r.compliances})" if r.compliances else none)]
    return figures, lines


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def read_rows(path: Path, required: list[str]) -> list[tuple[str, dict]]:
    from harness.data.loaders import read_table

    try:
        return read_table(path, required)
    except DataError as exc:
        if "not UTF-8 text" not in str(exc):
            raise
        # One stray byte should not stop the scoring of a whole file: say where it is, then score.
        print(f"warning: {exc}; such bytes are replaced with U+FFFD", file=sys.stderr)
        return read_table(path, required, replace_undecodable=True)


def cell_text(value) -> str:
    """A cell as text the scorers and Parquet accept: None/NaN -> "", bytes decoded, lone surrogates
    (undecodable bytes smuggled through JSON escapes) replaced."""
    from harness.scoring.text import clean_text

    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return clean_text(value if isinstance(value, str) else str(value))


def _expected(args, columns: list[str], rows) -> list | None:
    if args.expected:
        return [args.expected] * len(rows)
    column = args.expected_column or ("expected" if "expected" in columns else None)
    if column is None:
        return None
    if column not in columns:
        raise DataError(f"{', '.join(map(str, args.input))}: missing column '{column}' (found: {', '.join(columns)})")
    values = [cell_text(row.get(column)).strip().lower() for _, row in rows]
    for (where, row), value in zip(rows, values):  # a typo ("refused") would silently leave the row unscored
        if value and value not in ("refuse", "comply"):
            raise DataError(f"{where}: invalid '{column}' value {cell_text(row.get(column))!r} (expected refuse or "
                            "comply, or blank for none)")
    blank = values.count("")
    if blank:
        print(f"note: {blank} rows with a blank '{column}' get no harm score", file=sys.stderr)
    return [v or None for v in values]


def _write(path: Path, rows, columns, scores, harms, scorer, harm_scorer, report: dict,
           sources: list[str] | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.core.report_file import METADATA_KEY, metadata_json

    data = {}
    for col in columns:
        if col in OUTPUT_COLUMNS:
            continue  # re-scoring a report: its old scores are replaced
        values = [row.get(col) for _, row in rows]
        data[col] = _column(values)
    if sources is not None:  # several input files: which one each row came from
        data["input_file"] = pa.array(sources, pa.string())
    data["refusal_label"] = pa.array([s.label for s in scores], pa.string())
    data["refusal_score"] = pa.array([float(s.score) for s in scores], pa.float64())
    data["scorer"] = pa.array([scorer.name] * len(rows), pa.string())
    data["scorer_version"] = pa.array([scorer.version] * len(rows), pa.string())
    data["harm_score"] = pa.array([h.score if h else None for h in harms], pa.float64())
    data["harm_raw"] = pa.array([h.raw if h else None for h in harms], pa.float64())
    data["harm_scorer"] = pa.array([harm_scorer.name if h else None for h in harms], pa.string())
    data["harm_scorer_version"] = pa.array([harm_scorer.version if h else None for h in harms], pa.string())
    table = pa.table(data).replace_schema_metadata({METADATA_KEY: metadata_json({"score": report})})
    try:
        with atomic_path(path) as tmp:  # a reader never sees half a file
            pq.write_table(table, tmp)
    except OSError as exc:
        raise HarnessError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _column(values: list):
    """The input column as pyarrow infers it; mixed types (JSONL) or odd text fall back to strings."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError, UnicodeError):
        return pa.array([None if v is None else cell_text(v) for v in values], pa.string())
