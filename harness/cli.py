"""``safety-harness`` command line. Subcommands register with ``@command``; later tools (score,
compare, train) add theirs the same way. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from harness.errors import HarnessError

_COMMANDS: dict[str, tuple[Callable, Callable, str]] = {}


def command(name: str, help: str):
    """Register ``configure(parser)`` as the arguments of subcommand ``name``; its ``run`` is attached."""

    def wrap(configure):
        def attach(run):
            _COMMANDS[name] = (configure, run, help)
            return run

        configure.run = attach
        return configure

    return wrap


@command("prepare", help="prepare a model alias (e.g. the embedded default) and print its folder and fingerprint")
def _prepare_args(p):
    p.add_argument("model", nargs="?", default=None, help="alias, model folder or adapter folder")
    p.add_argument("--base-model", default=None)
    p.add_argument("--cache-dir", type=Path, default=None)


@_prepare_args.run
def _prepare(args) -> int:
    from harness.models import DEFAULT_MODEL, resolve_model
    from harness.settings import default_cache_dir

    model = resolve_model(args.model or DEFAULT_MODEL, base_model=args.base_model,
                          cache_dir=args.cache_dir or default_cache_dir())
    print(f"{model.name}: {model.path}" + (f" + adapter {model.adapter_path}" if model.adapter_path else ""))
    print(f"fingerprint {model.fingerprint}")
    return 0


@command("suites", help="list the built-in suites, their sizes and default thresholds")
def _suites_args(p):
    p.add_argument("--data-dir", type=Path, default=None)


@_suites_args.run
def _suites(args) -> int:
    import os

    from harness.suites import SuiteDataMissing, all_suites

    data_dir = args.data_dir or (Path(os.environ["SAFETY_HARNESS_DATA"]) if "SAFETY_HARNESS_DATA" in os.environ else None)
    for name, spec in sorted(all_suites().items()):
        try:
            size = f"{len(spec.load(data_dir))} prompts"
        except SuiteDataMissing as exc:
            size = f"data missing ({exc})"
        thresholds = ", ".join(f"{k}={v:g}" for k, v in sorted(spec.thresholds.items()))
        print(f"{name:24} {size:14} {thresholds}\n    {spec.description}")
    return 0


@command("summary", help="print the per-suite summary of a Parquet report")
def _summary_args(p):
    p.add_argument("report", type=Path)


@_summary_args.run
def _summary(args) -> int:
    from reports.parquet import read_report
    from reports.summary import format_table

    if not args.report.is_file():
        raise HarnessError(f"report {args.report} not found")
    table, meta = read_report(args.report)
    rows = []
    for suite, info in sorted(meta.get("suites", {}).items()):
        for c in info["checks"]:
            rows.append((suite, str(c["n"]), c["key"], f"{c['rate']:.3f}", f"{c['ci_low']:.3f}-{c['ci_high']:.3f}",
                         f"{c['threshold']:g}", "PASS" if c["passed"] else "FAIL"))
    for line in format_table(("suite", "n", "threshold", "rate", "95% CI", "bound", "verdict"), rows):
        print(line)
    print(f"{table.num_rows} rows; model {meta.get('model', {}).get('model')}; run {meta.get('run_id')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safety-harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, run, help_text) in sorted(_COMMANDS.items()):
        p = sub.add_parser(name, help=help_text)
        configure(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"safety-harness: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
