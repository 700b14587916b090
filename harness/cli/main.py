"""``safety-harness``: the command line of the safety regression harness. Each subcommand lives in its own
module and registers itself with ``harness.cli.registry.command``; user errors print one line and exit 2."""

from __future__ import annotations

import argparse
import sys

from harness.cli import catalog, results, score, train  # noqa: F401  (each registers its subcommands)
from harness.cli.registry import COMMANDS
from harness.core.errors import HarnessError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safety-harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (configure, run, help_text) in sorted(COMMANDS.items()):
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
