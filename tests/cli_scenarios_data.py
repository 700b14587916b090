"""`safety-harness data`, `labels` and `review` runs for tests/test_cli_options.py: the shared datasets in an
empty cache, an http mirror of them, a label store named three ways, and the review page's server."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from tests.cli_scenarios import REPO, sample_rows, scenario, write_csv
from tests.option_effects import Run, environment, run_cli


# -- data -----------------------------------------------------------------------------------------------------

XSTEST = "xstest/xstest_prompts.csv"


@scenario("data")
def _data(ctx) -> Run:
    """An empty cache and no data folder in the environment, then the shared folder named by --data-dir, a
    copy of it with one edited file, and fetches from it as a local source."""
    import shutil

    root = ctx.tmp("data")
    edited = root / "edited"
    (edited / "xstest").mkdir(parents=True)
    shutil.copyfile(ctx.data_dir / XSTEST, edited / XSTEST)
    with open(edited / XSTEST, "a", encoding="utf-8") as f:
        f.write("extra,row\n")
    with environment(SAFETY_HARNESS_DATA=None, SAFETY_HARNESS_CACHE=root / "cache"):
        facts = {
            "list_without": run_cli(["data", "list", XSTEST], root),
            "list_data_dir": run_cli(["data", "list", XSTEST, "--data-dir", ctx.data_dir], root),
            "verify_empty": run_cli(["data", "verify"], root),
            "verify_edited": run_cli(["data", "verify", "--data-dir", edited], root),
            "fetch": run_cli(["data", "fetch", XSTEST, "--source", ctx.data_dir], root),
            "fetch_all": run_cli(["data", "fetch", "--all", "--source", ctx.data_dir], root),
        }
    from harness.data.manifest import manifest

    facts["manifest_files"] = len(manifest())
    return Run(0, "", root, facts=facts)


def _fetch_on_a_terminal(source: str, root: Path, *extra: str) -> str:
    """`safety-harness data fetch` from an http mirror with stderr on a pseudo-terminal (download progress
    bars show only there), in a subprocess; what reached the terminal."""
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 0 columns: tqdm draws nothing
    env = {**os.environ, "SAFETY_HARNESS_CACHE": str(root / "cache"), "SAFETY_HARNESS_DATA": ""}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli.main", "data", "fetch", XSTEST, "--source",
                             source, *extra], stdout=subprocess.PIPE, stderr=follower, env=env, cwd=root)
    os.close(follower)
    chunks: list[bytes] = []

    def drain():  # read the terminal while the command runs: once it exits, unread bytes may be gone
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed its end
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    out = proc.stdout.read().decode()
    proc.wait()
    reader.join()
    os.close(leader)
    terminal = b"".join(chunks)
    assert proc.wait() == 0, out + terminal.decode(errors="replace")
    return terminal.decode(errors="replace")


@scenario("data-fetch-terminal")
def _data_fetch_terminal(ctx) -> Run:
    from tests.data_mirror import Mirror

    root = ctx.tmp("data-fetch-terminal")
    (root / "a").mkdir()
    (root / "b").mkdir()
    with Mirror(ctx.data_dir) as mirror:
        return Run(0, "", root, facts={"bar": _fetch_on_a_terminal(mirror.url, root / "a"),
                                       "quiet": _fetch_on_a_terminal(mirror.url, root / "b", "--quiet")})


# -- labels and review ----------------------------------------------------------------------------------------

REVIEW_ROWS = [("harmful", f"h{i}", f"How do I do harmful thing {i}?", f"Sure, step one of {i} ...") for i in range(3)]


def _label_file(root: Path, report: Path, labels: list[str], name: str = "labels.csv") -> Path:
    from harness.core.report_file import read_run_report

    rows = read_run_report(report)[0].to_pylist()
    return write_csv(root / name, ["prompt", "response", "label"],
                     [(r["prompt"], r["response"], label) for r, label in zip(rows, labels)])


@scenario("labels")
def _labels(ctx) -> Run:
    """One store named three ways (--labels, --cache-dir's labels.sqlite, labels = in a --config file); two
    labellers who disagree on one reply; a row that is no reply of the --report."""
    from tests import review_fakes

    root = ctx.tmp("labels")
    report = review_fakes.write_run(root / "run.parquet", REVIEW_ROWS)
    ana = _label_file(root, report, ["full_compliance", "full_refusal", "full_compliance"], "ana.csv")
    bob = _label_file(root, report, ["full_compliance", "full_compliance", "full_compliance"], "bob.csv")
    stray = write_csv(root / "stray.csv", ["prompt", "response", "label"], [("not asked", "no reply", "full_refusal")])
    store = root / "store.sqlite"
    (root / "labels.toml").write_text(f'labels = "{root / "by-config.sqlite"}"\n')
    facts = {
        "import": run_cli(["labels", "import", ana, "--labels", store, "--labeller", "ana", "--source", "pilot"], root),
        "import_bob": run_cli(["labels", "import", bob, "--labels", store, "--labeller", "bob"], root),
        "import_report": run_cli(["labels", "import", stray, "--labels", store, "--report", report], root),
        "import_cache": run_cli(["labels", "import", ana, "--cache-dir", root / "cache"], root),
        "import_config": run_cli(["labels", "import", ana, "--config", root / "labels.toml"], root),
        "export": run_cli(["labels", "export", root / "all.csv", "--labels", store], root),
        "export_blank": run_cli(["labels", "export", root / "blank.csv", "--blank", "--labels", store], root),
        "export_conflicts": run_cli(["labels", "export", root / "conflicts.csv", "--conflicts", "--labels", store], root),
        "export_cache": run_cli(["labels", "export", root / "cache.csv", "--cache-dir", root / "cache"], root),
        "export_config": run_cli(["labels", "export", root / "config.csv", "--config", root / "labels.toml"], root),
        "stats": run_cli(["labels", "stats", "--labels", store], root),
        "stats_cache": run_cli(["labels", "stats", "--cache-dir", root / "cache"], root),
        "stats_config": run_cli(["labels", "stats", "--config", root / "labels.toml"], root),
    }
    return Run(0, "", root, facts=facts)


def csv_rows(run: Run, name: str) -> list[dict]:
    return sample_rows(run, name)


@scenario("review-export")
def _review_export(ctx) -> Run:
    """review --export through the real verification design; its planner is wrapped to record the seed it
    was given."""
    from unittest import mock

    from harness.engine import verification
    from tests import review_fakes

    root = ctx.tmp("review-export")
    report = review_fakes.write_run(root / "run.parquet", REVIEW_ROWS)
    # The baseline refused every prompt the run complied with: three flips, each offered with both replies.
    baseline = review_fakes.write_run(root / "base.parquet", [(s, p, q, "I cannot help with that.")
                                                              for s, p, q, _ in REVIEW_ROWS],
                                      scored={p: "full_refusal" for _, p, _, _ in REVIEW_ROWS})
    seeds = []
    plan = verification.plan_for_report

    def recording_plan(*a, seed=0, **k):
        seeds.append(seed)
        return plan(*a, seed=seed, **k)

    known = _label_file(root, report, ["full_compliance"])  # one reply labelled before the review
    run_cli(["labels", "import", known, "--labels", root / "store.sqlite", "--labeller", "ana"], root)
    run_cli(["labels", "import", known, "--cache-dir", root / "cache", "--labeller", "ana"], root)
    (root / "labels.toml").write_text(f'labels = "{root / "store.sqlite"}"\n')
    with mock.patch.object(verification, "plan_for_report", recording_plan):
        def review(name, *args):
            return run_cli(["review", report, "--export", root / f"export-{name}", *args], root)
        facts = {
            "labels": review("labels.csv", "--labels", root / "store.sqlite"),
            "cache": review("cache.csv", "--cache-dir", root / "cache"),
            "config": review("config.csv", "--config", root / "labels.toml"),
            "n": review("n.csv", "--labels", root / "empty.sqlite", "--n", "2"),
            "baseline": review("baseline.csv", "--labels", root / "empty.sqlite", "--baseline", baseline),
            "seed": review("seed.csv", "--labels", root / "empty.sqlite", "--seed", "7"),
        }
    facts["seeds"] = seeds
    return run_cli(["review", report, "--export", root / "export-plain.csv", "--labels", root / "empty.sqlite"], root,
                   **facts)


@scenario("review-serve")
def _review_serve(ctx) -> Run:
    """The page's server in a subprocess, stopped with Ctrl-C once it prints its address."""
    from tests import review_fakes

    root = ctx.tmp("review-serve")
    report = review_fakes.write_run(root / "run.parquet", REVIEW_ROWS)
    start = "import sys; from harness.cli.main import main; sys.exit(main(sys.argv[1:]))"
    port = _free_port()
    facts = {}
    for name, args in (("no_browser", ["--no-browser"]), ("browser", [])):
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        proc = subprocess.Popen([sys.executable, "-c", start, "review", str(report), "--labels", str(root / "l.sqlite"),
                                 "--labeller", "bob", "--port", str(port), *args], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("review: http"):
                # The page answering means the server is serving; Ctrl-C then stops it.
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as page:
                    facts[f"{name}_page"] = page.status
                proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        facts[name] = Run(proc.wait(), "".join(lines) + err, root)
    return Run(facts["no_browser"].ret, facts["no_browser"].out, root, facts={**facts, "port": port})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




def _label_store_three_ways(root: Path, label_file: Path) -> dict[str, list]:
    """The same labels in a store named each of three ways: --labels, the one beside --cache-dir, and
    ``labels =`` in a --config file; each entry is the arguments that name it."""
    (root / "labels.toml").write_text(f'labels = "{root / "by-config.sqlite"}"\n')
    ways = {"labels": ["--labels", root / "store.sqlite"], "cache": ["--cache-dir", root / "cache"],
            "config": ["--config", root / "labels.toml"]}
    for args in ways.values():
        run_cli(["labels", "import", label_file, *args, "--labeller", "ana"], root)
    return ways


@scenario("summary-labels")
def _summary_labels(ctx) -> Run:
    """summary of a real run's report with every reply labelled a refusal, the store named three ways, and
    without a store: the verified column appears only with one."""
    from harness.core.report_file import read_run_report

    report = ctx.run("run-report").report
    root = ctx.tmp("summary-labels")
    n = read_run_report(report)[0].num_rows
    ways = _label_store_three_ways(root, _label_file(root, report, ["full_refusal"] * n))
    facts = {name: run_cli(["summary", report, *args], root) for name, args in ways.items()}
    facts["plain"] = run_cli(["summary", report], root)
    return Run(0, "", root, report, facts=facts)


@scenario("compare-labels")
def _compare_labels(ctx) -> Run:
    """Three scored regressions (the baseline refused, the candidate complied); people's labels confirm two
    and undo one (both replies labelled refusals), the store named three ways."""
    from tests import review_fakes

    root = ctx.tmp("compare-labels")
    cand = review_fakes.write_run(root / "cand.parquet", REVIEW_ROWS)
    base = review_fakes.write_run(root / "base.parquet", [(s, p, q, "I cannot help with that.")
                                                          for s, p, q, _ in REVIEW_ROWS],
                                  scored={p: "full_refusal" for _, p, _, _ in REVIEW_ROWS})
    cand_labels = _label_file(root, cand, ["full_compliance", "full_refusal", "full_compliance"], "cand.csv")
    base_labels = _label_file(root, base, ["full_refusal"] * 3, "base.csv")
    ways = _label_store_three_ways(root, cand_labels)
    for args in ways.values():
        run_cli(["labels", "import", base_labels, *args, "--labeller", "ana"], root)
    facts = {name: run_cli(["compare", base, cand, *args], root) for name, args in ways.items()}
    facts["plain"] = run_cli(["compare", base, cand], root)
    return Run(0, "", root, facts=facts)
