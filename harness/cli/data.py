"""``safety-harness data list|fetch|verify``: the dataset files of harness/data/manifest.toml in the user
cache (or a data folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.registry import command

EPILOG = """\
The files are fetched from their upstream repositories at pinned commits and checked against their
pin (sha256, or git blob id) when downloaded and again when a run reads them. NAME is a suite (xstest, capability, ...), a source (stl, xstest, alpaca_eval,
alpaca_libre), a user (trainer, refusal_classifier, capability_judge) or a file name; with no NAME,
the files of the built-in suites. Destination: $SAFETY_HARNESS_CACHE/data or ~/.cache/safety-harness/data.
"""


@command("data", help="list, fetch or verify the datasets the suites read (pinned upstream files, sha256-checked)")
def _data_args(p):
    p.description = "List, fetch or verify the dataset files the suites, scorers and trainer read."
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="data_command", required=True, metavar="{list,fetch,verify}")
    ls = sub.add_parser("list", help="each file: where it is found, verified / missing, its licence",
                        description="Each dataset file of the manifest: verified (its content matches the "
                                    "manifest's sha256 or git blob id), MISMATCH or missing; its licence; where it "
                                    "was found (the data folder or the cache).")
    ls.add_argument("names", nargs="*", metavar="NAME", help="only these (default: every file)")
    ls.add_argument("--data-dir", type=Path, default=None,
                    help="look in this folder before the cache (default: $SAFETY_HARNESS_DATA)")
    fetch = sub.add_parser("fetch", help="download missing files into the user cache and verify them",
                           description="Download the missing dataset files into the user cache, each checked "
                                       "against its pin (sha256, or git blob id) before it is installed.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fetch.add_argument("names", nargs="*", metavar="NAME", help="what to fetch (default: the built-in suites' files)")
    fetch.add_argument("--source", default=None, metavar="URL_OR_DIR",
                       help="an http(s) mirror URL laid out <owner>/<repo>/<commit>/<path>, or a local folder "
                            "(a path or file:///path) holding the files (default: $SAFETY_HARNESS_DATA_SOURCE, "
                            "else GitHub)")
    fetch.add_argument("--all", action="store_true", help="every file of the manifest, training data included")
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")
    verify = sub.add_parser("verify", help="check the sha256 of every file present; exit 1 on a mismatch",
                            description="Check the sha256 of every dataset file present in the data folder or "
                                        "the cache; exit 1 when one differs from the manifest.")
    verify.add_argument("names", nargs="*", metavar="NAME", help="only these (default: every file)")
    verify.add_argument("--data-dir", type=Path, default=None,
                        help="check this folder's copies before the cache's (default: $SAFETY_HARNESS_DATA)")


@_data_args.run
def _data(args) -> int:
    return {"list": _list, "fetch": _fetch, "verify": _verify}[args.data_command](args)


def _selected(names: list[str]):
    from harness.data.manifest import manifest, select

    return select(names) if names else list(manifest().values())


def _data_dir(args) -> Path | None:
    """--data-dir, else $SAFETY_HARNESS_DATA: an existing folder, or one line saying it is not."""
    from harness.core.paths import data_dir_from_env
    from harness.data.fetch import data_folder

    return data_folder(args.data_dir if args.data_dir is not None else data_dir_from_env())


def _list(args) -> int:
    from harness.data.fetch import data_cache, locate, verify

    data_dir, cache = _data_dir(args), data_cache()
    print(f"data folder: {data_dir or '(none)'}; cache: {cache}")
    for entry in _selected(args.names):
        path = locate(entry.name, data_dir)
        state = "missing" if path is None else verify(entry, path)
        where = "" if path is None else (" (cache)" if _under(path, cache) else f" ({path})")
        print(f"{entry.name:55} {state.split(' (')[0]:9} {entry.licence}{where}")
    return 0


def _fetch(args) -> int:
    import sys

    from harness.data.fetch import DataFetchError, data_cache, fetch, prepare_cache, resolve_source
    from harness.data.manifest import manifest, select
    from harness.data.suites import builtin_suite_names

    entries = (list(manifest().values()) if args.all
               else select(args.names or None, default_users=builtin_suite_names()))
    # A source or cache that cannot be used is one line for the whole command, not one per file.
    source = resolve_source(args.source)
    prepare_cache(data_cache())
    failed = 0
    for entry in entries:  # one by one, so that one unreachable file does not hide the others
        try:
            fetch([entry], dest=data_cache(), source=source, notify=lambda line: print(line, flush=True),
                  progress=not args.quiet and sys.stderr.isatty())
        except DataFetchError as exc:
            failed += 1
            print(f"safety-harness: error: {exc}", file=sys.stderr)
    print(f"{len(entries) - failed} of {len(entries)} file(s) present and verified in {data_cache()}")
    return 2 if failed else 0


def _verify(args) -> int:
    from harness.data.fetch import data_cache, locate, verify

    data_dir, cache = _data_dir(args), data_cache()
    bad = checked = 0
    names = []
    for entry in _selected(args.names):
        path = locate(entry.name, data_dir)
        if path is None:
            continue
        state = verify(entry, path)
        checked += 1
        if state.startswith("MISMATCH"):
            bad += 1
            names.append(entry.name)
            print(f"{path}: {state}" + ("" if _under(path, cache) else " (a data folder's copy: restore or remove it)"))
    print(f"{checked} file(s) checked, {bad} mismatch(es)")
    if bad:
        print(f"{bad} file(s) differ from the manifest; `safety-harness data fetch {' '.join(names)}` fetches "
              "the upstream files into the cache again")
        return 1
    return 0


def _under(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False
