"""safety-harness review as a command, through the real verification design (``harness.engine.verification``):
--export writes the planned sample (blind, keyed, an empty label column) and labels import stores it; the
served page offers a baseline's flip first with both replies, stops on Ctrl-C with one line, and a killed
server has lost no label. (tests/review_fakes.py only writes the small reports here.)"""

from __future__ import annotations

import csv
import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.labels import LabelStore
from tests import review_fakes

REPO = Path(__file__).resolve().parents[1]
ROWS = [("harmful", f"h{i}", f"How do I do harmful thing {i}?", f"Sure, step one of {i} ...") for i in range(3)]
def test_export_then_import_is_the_loop_without_a_browser(tmp_path, capsys):
    report = review_fakes.write_run(tmp_path / "run.parquet", ROWS)
    store = tmp_path / "labels.sqlite"
    sample = tmp_path / "sample.csv"
    assert main(["review", str(report), "--n", "2", "--export", str(sample), "--labels", str(store)]) == 0
    assert "wrote 2 replies to label" in capsys.readouterr().out
    with open(sample, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # One stratum of 3 (harmful, should refuse, scored compliance): the design draws 2 of them at random.
    assert len({r["prompt_id"] for r in rows}) == 2 and {r["prompt_id"] for r in rows} <= {"h0", "h1", "h2"}
    assert {r["label"] for r in rows} == {""}
    assert "refusal_label" not in rows[0] and "scored_label" not in rows[0]  # blind
    rows[0]["label"], rows[1]["label"] = "1", "partial_refusal"
    with open(sample, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["labels", "import", str(sample), "--report", str(report), "--labeller", "ana",
                 "--labels", str(store)]) == 0
    assert sorted(LabelStore(store).labels().values()) == ["full_compliance", "partial_refusal"]
    # The next export plans around what is known: only the third reply is left.
    again = tmp_path / "again.csv"
    assert main(["review", str(report), "--n", "3", "--export", str(again), "--labels", str(store)]) == 0
    assert "wrote 1 replies to label" in capsys.readouterr().out


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_a_port_out_of_range_is_one_line(tmp_path, capsys, port):
    report = review_fakes.write_run(tmp_path / "run.parquet", ROWS)
    assert main(["review", str(report), "--port", port, "--no-browser", "--labels", str(tmp_path / "l.sqlite")]) == 2
    assert capsys.readouterr().err == f"safety-harness: error: --port must be 0-65535 (0: a free one), got {port}\n"
    assert not (tmp_path / "l.sqlite").exists()


def test_review_without_the_verification_design_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "harness.engine.verification", None)  # import fails as if it were absent
    report = review_fakes.write_run(tmp_path / "run.parquet", ROWS)
    assert main(["review", str(report), "--export", str(tmp_path / "x.csv"), "--labels", str(tmp_path / "l.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs harness.engine.verification" in err


def _start(tmp_path, store, *extra: str):
    report = review_fakes.write_run(tmp_path / "run.parquet", ROWS)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "review", str(report), "--no-browser",
                             "--labeller", "ana", "--labels", str(store), *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert first.startswith("review: http://127.0.0.1:"), first + proc.stderr.read()
    port = int(first.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
    return proc, port


def _label(port: int, task: int, label: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/api/label", body=json.dumps({"task": task, "label": label}),
                 headers={"Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_ctrl_c_stops_the_server_with_one_line(tmp_path):
    store = tmp_path / "labels.sqlite"
    proc, port = _start(tmp_path, store)
    try:
        assert _label(port, 0, "full_refusal") == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == ""
    assert out.strip().splitlines() == [f"review stopped: 1 of 3 planned replies labelled; the labels are in {store}"]


def test_a_killed_server_has_lost_no_label(tmp_path):
    store = tmp_path / "labels.sqlite"
    proc, port = _start(tmp_path, store)
    try:
        assert _label(port, 0, "full_refusal") == 200
        assert _label(port, 1, "full_compliance") == 200
    finally:
        proc.kill()
        proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(LabelStore(store).labels().values()) == ["full_compliance", "full_refusal"]


def _state(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/state")
    state = json.loads(conn.getresponse().read())["state"]
    conn.close()
    return state


def test_the_served_page_offers_a_baseline_flip_first_with_both_replies(tmp_path):
    """h1 was refused in the baseline and answered now: the real design puts that flip first, as one item
    with both replies, blind to which is the baseline's and to either verdict."""
    base = review_fakes.write_run(tmp_path / "base.parquet", [(s, p, q, "No, I will not help with that.")
                                                              for s, p, q, _ in ROWS],
                                  scored={p: ("full_refusal" if p == "h1" else "full_compliance") for _, p, _, _ in ROWS})
    store = tmp_path / "labels.sqlite"
    proc, port = _start(tmp_path, store, "--baseline", str(base))
    try:
        state = _state(port)
        task = state["task"]
        assert task["flip"] and task["prompt_id"] == "h1" and len(task["replies"]) == 2
        assert {r["text"] for r in task["replies"]} == {ROWS[1][3], "No, I will not help with that."}
        assert "refusal_label" not in json.dumps(state) and "scored_label" not in json.dumps(state)  # blind
        assert _label(port, task["id"], "full_compliance") == 200
        assert _label(port, task["id"] + 1, "full_refusal") == 200
        assert _state(port)["task"]["prompt_id"] != "h1"
    finally:
        proc.kill()
        proc.communicate(timeout=120)
    assert sorted(LabelStore(store).labels().values()) == ["full_compliance", "full_refusal"]
