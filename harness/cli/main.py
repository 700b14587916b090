"""``safety-harness``: the command line of the safety regression harness. Each subcommand lives in its own
module and registers itself with ``harness.cli.registry.command``; user errors print one line and exit 2."""

from __future__ import annotations

import argparse
import sys

from harness.cli import calibrate, catalog, data, labels, results, review, score, train  # noqa: F401  (each registers its subcommands)
from harness.cli.registry import COMMANDS
from harness.core.errors import HarnessError

DESCRIPTION = """\
safety-harness: safety regression tests for instruction-tuned language models.

The suites run under pytest:  pytest suites/ --model MODEL   (a model folder, a LoRA adapter or an
alias; the embedded SmolLM2-135M-Instruct by default). The first run fetches the datasets its suites
read into ~/.cache/safety-harness/data. These commands prepare models and data and read the reports."""

EPILOG = """\
examples:
  safety-harness data fetch                 get every built-in suite's datasets (pinned, sha256-checked)
  pytest suites/ --limit 20                 a quick run of every suite on the default model
  safety-harness summary reports/runs/run-ID.parquet
  safety-harness compare base.parquet candidate.parquet
  safety-harness calibrate sample reports/runs/run-ID.parquet --n 200 --out to_label.csv
  safety-harness review reports/runs/run-ID.parquet      label the replies that decide the gate

'safety-harness COMMAND --help' describes each command."""

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safety-harness", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    for name, (configure, run, help_text) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        configure(p)
        p.set_defaults(func=run)
    return parser


# The exit status when whoever reads the output stops reading (``safety-harness ... | head -1``): what a shell
# reports for a command ended by SIGPIPE (128 + 13). Not 0: ``compare | head`` must not read as "no regression".
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # --help writes too
        try:
            status = args.func(args)
        except HarnessError as exc:
            print(f"safety-harness: error: {exc}", file=sys.stderr)
            return 2
        sys.stdout.flush()  # a write into a closed pipe fails here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        # Python's recipe: the reader went away, so say nothing more; pointing stdout at devnull keeps the
        # interpreter's last flush of what is still buffered from raising again on the way out.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
