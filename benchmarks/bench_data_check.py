"""The cost of checking the main job's data files on read: the built-in suites loaded as `pytest suites/`
loads them (each pinned file's sha256 checked before it is parsed), first with an empty hash memo, then
again with the memo warm (the run's later reads: a suite sharing files, the report's provenance). Prints
the files, the MB hashed, the seconds of each load and of the hashing alone, and hash time / load time
(a ratio, which a busy machine disturbs less than the absolute figures).

    python benchmarks/bench_data_check.py [--data-dir ../shared/data] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.data import integrity
from harness.data.manifest import manifest
from harness.data.suites import builtin_suite_names, get_suite


def load_all(names: list[str], data_dir: Path) -> int:
    return sum(len(get_suite(name).load(data_dir)) for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="data folder (default: $SAFETY_HARNESS_DATA)")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs of each measurement")
    args = parser.parse_args()
    from harness.core.paths import data_dir_for_parser

    args.data_dir = data_dir_for_parser(parser, args.data_dir)  # the one data-folder resolver

    names = sorted(builtin_suite_names())
    files = [f for f in manifest().values() if set(f.used_by) & set(names)]
    cold = warm = hash_only = float("inf")
    for _ in range(args.repeat):
        integrity.forget()
        started = time.perf_counter()
        prompts = load_all(names, args.data_dir)
        cold = min(cold, time.perf_counter() - started)
        hashed = integrity.hashed_bytes
        started = time.perf_counter()
        load_all(names, args.data_dir)
        warm = min(warm, time.perf_counter() - started)
        assert integrity.hashed_bytes == hashed, "the memoised second read hashed again"
        started = time.perf_counter()
        for f in files:
            integrity.content_hash(args.data_dir / f.name)
        hash_only = min(hash_only, time.perf_counter() - started)
    print(f"suites {', '.join(names)}: {prompts} prompts from {len(files)} pinned files")
    print(f"hashed on the first read: {len(files)} files, {hashed / 1e6:.3f} MB; on the second read: 0 bytes")
    print(f"first load (hash + parse) {cold * 1e3:.1f} ms, second load (memoised) {warm * 1e3:.1f} ms, "
          f"hashing alone {hash_only * 1e3:.2f} ms")
    print(f"hashing / first load = {hash_only / cold:.3f}; second load / first load = {warm / cold:.3f}")


if __name__ == "__main__":
    main()
