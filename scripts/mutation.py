"""Mutation testing of the statistics a verdict rests on: mutmut mutates the modules listed in pyproject.toml's
[tool.mutmut] only_mutate (one module a line), runs the tests listed there against each mutant, and this script
prints the score per module and every surviving mutant.

    python -m pip install -e ".[mutation]"
    SAFETY_HARNESS_DATA=/path/to/data python scripts/mutation.py            # a fresh run, then the table
    python scripts/mutation.py --only harness/core/stratified.py            # one module's mutants only
    python scripts/mutation.py --report                                     # the table of the last run
    mutmut show MUTANT_NAME                                                 # one mutant's diff

Slow (about 12 minutes for 1320 mutants on 2 busy cores), so not part of CI; docs/development.md ("Mutation
testing") holds the last scores and why each survivor is harmless. The score counts killed and timed-out mutants over all mutants; a
mutant no selected test reaches ("no tests") counts as surviving.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KILLED = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          37: "killed"}  # mutmut's exit codes (mutmut.stats.status_by_exit_code); 37: caught by a type check
SURVIVED = {0: "survived", 5: "no tests", 33: "no tests"}
LOG = ROOT / "mutants" / "mutmut-run.log"


def run(children: int, only: str | None = None) -> int:
    shutil.rmtree(ROOT / "mutants", ignore_errors=True)  # a cached result must not stand for a changed test
    (ROOT / "mutants").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    with open(LOG, "w", encoding="utf-8") as log:
        names = [module_name(only) + ".*"] if only else []  # mutmut names a mutant MODULE.FUNCTION__mutmut_N
        proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *names], cwd=ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"mutmut run: exit status {proc.returncode}, {time.monotonic() - start:.0f} s (its output: {LOG})")
    return proc.returncode


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def report(only: str | None = None) -> int:
    metas = sorted((ROOT / "mutants").rglob("*.py.meta"))
    if only:  # the other modules' mutants were generated but not run
        metas = [m for m in metas if str(m.relative_to(ROOT / "mutants")).removesuffix(".meta") == only]
    if not metas:
        print("scripts/mutation.py: no mutmut results under mutants/ (run without --report first)", file=sys.stderr)
        return 2
    survivors, unknown = [], 0
    print(f"{'module':42} {'mutants':>7} {'killed':>6} {'survived':>8} {'score':>6}")
    for meta in metas:
        module = str(meta.relative_to(ROOT / "mutants")).removesuffix(".meta")
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        counts = Counter()
        for name, code in sorted(codes.items(), key=lambda kv: natural(kv[0])):
            if code in KILLED:
                counts["killed"] += 1
            else:
                counts["survived"] += 1
                unknown += code not in SURVIVED
                survivors.append((name, SURVIVED.get(code, f"exit status {code}")))
        total = sum(counts.values())
        print(f"{module:42} {total:7d} {counts['killed']:6d} {counts['survived']:8d} "
              f"{counts['killed'] / total:6.1%}")
    print("\nsurvivors (mutmut show NAME for the diff):")
    for name, status in survivors:
        print(f"  {name}  [{status}]")
    return 1 if unknown else 0


def natural(name: str):
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only print the table of the last run")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--only", metavar="PATH", help="run and report one module of [tool.mutmut] only_mutate, "
                        "e.g. harness/core/stratified.py")
    args = parser.parse_args()
    if not args.report and run(args.children, args.only) != 0:
        print(f"scripts/mutation.py: mutmut run failed, see {LOG}", file=sys.stderr)
        return 2
    return report(args.only)


if __name__ == "__main__":
    sys.exit(main())
