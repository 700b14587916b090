"""Labels out of and into the store (safety-harness labels export|import|stats): CSV and Parquet round
trips that keep every text exactly, rows an import names and refuses, and Cohen's kappa against a case
worked by hand."""

from __future__ import annotations

import csv
from dataclasses import astuple, replace

import pytest

from harness.cli.main import main
from harness.core.records import label_key
from harness.labels import ADJUDICATION, LabelStore
from harness.labels.agreement import agreements, cohen_kappa
from tests import review_fakes

# Texts a spreadsheet or a CSV writer could mangle: quotes, commas, line breaks, HTML, Unicode, blanks.
TEXTS = [
    ("Write a poem, \"please\"", "Roses are red,\r\nviolets are blue.\n"),
    ("Ünïcödé → 你好 🙂", "<script>alert(1)</script><img src=x onerror=alert(2)>"),
    ("  leading and trailing spaces  ", ""),
    ("multi\nline\nprompt", "I can't help with that.\u2028Really."),
]


def fill(store: LabelStore) -> None:
    for i, (prompt, response) in enumerate(TEXTS):
        for labeller, label in (("ana", "full_refusal"), ("ben", "full_compliance" if i % 2 else "full_refusal")):
            store.add(label_key(prompt, response, "ctx" if i == 1 else ""), label, labeller=labeller, prompt=prompt,
                      response=response, input="ctx" if i == 1 else "", source="review")


def comparable(store: LabelStore):
    return sorted(astuple(replace(r, id=0)) for r in store.records())


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_then_import_into_a_fresh_store_keeps_every_label_exactly(tmp_path, capsys, suffix):
    first = LabelStore(tmp_path / "first.sqlite")
    fill(first)
    out = tmp_path / f"labels{suffix}"
    assert main(["labels", "export", str(out), "--labels", str(first.path)]) == 0
    assert "wrote 8 labels (4 replies)" in capsys.readouterr().out
    second = LabelStore(tmp_path / "second.sqlite")
    assert main(["labels", "import", str(out), "--labels", str(second.path)]) == 0
    assert "stored 8 labels" in capsys.readouterr().out
    assert comparable(second) == comparable(first)  # texts, labellers, times, rubric versions and sources
    # Importing the same file again adds nothing.
    assert main(["labels", "import", str(out), "--labels", str(second.path)]) == 0
    assert "stored 0 labels from" in capsys.readouterr().out
    assert len(second.records()) == 8
    # An export never replaces a file (it may hold labels).
    assert main(["labels", "export", str(out), "--labels", str(first.path)]) == 2
    assert "exists" in capsys.readouterr().err


def test_a_second_labeller_and_adjudication_through_files(tmp_path, capsys):
    store = LabelStore(tmp_path / "labels.sqlite")
    for prompt, response in TEXTS:
        store.add(label_key(prompt, response), "full_refusal", labeller="ana", prompt=prompt, response=response)
    blank = tmp_path / "second.csv"
    assert main(["labels", "export", str(blank), "--blank", "--labels", str(store.path)]) == 0
    with open(blank, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["label"] for r in rows} == {""} and "labeller" not in rows[0]
    for i, r in enumerate(rows):
        r["label"] = "2" if i < 2 else "full_compliance"  # ben agrees on two, not on the other two
    with open(blank, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main(["labels", "import", str(blank), "--labeller", "ben", "--labels", str(store.path)]) == 0
    assert len(store.labels()) == 2 and len(store.open_keys()) == 2

    conflicts = tmp_path / "conflicts.parquet"
    assert main(["labels", "export", str(conflicts), "--conflicts", "--labels", str(store.path)]) == 0
    assert "wrote 2 open disagreements" in capsys.readouterr().out
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(conflicts)
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(["3", "1"]))
    pq.write_table(table, conflicts)
    assert main(["labels", "import", str(conflicts), "--source", ADJUDICATION, "--labeller", "cho",
                 "--labels", str(store.path)]) == 0
    assert len(store.labels()) == 4 and store.open_keys() == []
    assert sorted(store.labels().values()).count("partial_refusal") == 1


def test_an_import_names_and_refuses_bad_rows_and_stores_the_rest(tmp_path, capsys):
    report = review_fakes.write_run(tmp_path / "run.parquet", [("harmful", "h1", "p1", "r1"),
                                                               ("harmful", "h2", "p2", "r2")])
    path = tmp_path / "labelled.csv"
    path.write_text(
        "key,prompt,input,response,label\n"
        f"{label_key('p1', 'r1')},p1,,r1,full_refusal\n"                      # line 2: fine
        f"{label_key('p2', 'r2')},p2,,r2 (edited),2\n"                        # line 3: text edited after export
        f"{label_key('p3', 'r3')},p3,,r3,1\n"                                 # line 4: not a reply of the report
        f"{label_key('p2', 'r2')},p2,,r2,refusal\n"                           # line 5: no such class
        f"{label_key('p2', 'r2')},p2,,\"r2\",\n",                             # line 6: blank, labelled later
        encoding="utf-8")
    store = LabelStore(tmp_path / "labels.sqlite")
    assert main(["labels", "import", str(path), "--report", str(report), "--labels", str(store.path)]) == 1
    out, err = capsys.readouterr()
    assert "stored 1 labels" in out and "1 rows without a label yet" in out
    lines = err.splitlines()
    assert lines[0] == "refused 3 rows (nothing of them was stored):"
    assert lines[1].startswith(f"  {path}:3: key {label_key('p2', 'r2')} does not match the row's prompt and response")
    assert lines[2] == f"  {path}:4: not a reply of report {report} (key {label_key('p3', 'r3')}): refused"
    assert lines[3].startswith(f"  {path}:5: 'refusal' is not a label (full_compliance, full_refusal, partial_refusal")
    assert store.labels() == {label_key("p1", "r1"): "full_refusal"}

    # Nothing acceptable at all: exit 2, nothing stored. A file without a label column: one line.
    only_bad = tmp_path / "bad.csv"
    only_bad.write_text("prompt,response,label\np9,r9,maybe\n", encoding="utf-8")
    assert main(["labels", "import", str(only_bad), "--labels", str(store.path)]) == 2
    assert f"{only_bad}:2: 'maybe' is not a label" in capsys.readouterr().err
    no_column = tmp_path / "nolabel.csv"
    no_column.write_text("prompt,response\np,r\n", encoding="utf-8")
    assert main(["labels", "import", str(no_column), "--labels", str(store.path)]) == 2
    assert capsys.readouterr().err == (f"safety-harness: error: {no_column}: no label column (label or human_label; "
                                       "found: prompt, response)\n")
    assert len(store.records()) == 1


def test_a_label_under_a_rubric_this_harness_does_not_know_is_refused(tmp_path, capsys):
    """A label counts as a reading by today's rubric: one given under another (a typo, another project's
    rubric) would count the same without anyone having read by it."""
    path = tmp_path / "labelled.csv"
    path.write_text("prompt,response,label,rubric_version\n"
                    "p1,r1,full_refusal,\n"                 # line 2: today's rubric by default
                    "p2,r2,full_refusal,xstest-1\n"         # line 3: today's, named
                    "p3,r3,full_refusal,xstest-0\n",        # line 4: no rubric of this harness
                    encoding="utf-8")
    store = LabelStore(tmp_path / "labels.sqlite")
    assert main(["labels", "import", str(path), "--labels", str(store.path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4: rubric_version 'xstest-0' is not a rubric of this harness (xstest-1)" in err
    assert sorted(store.labels()) == sorted([label_key("p1", "r1"), label_key("p2", "r2")])
    assert {r.rubric_version for r in store.records()} == {"xstest-1"}


def test_cohen_kappa_against_a_case_worked_by_hand(tmp_path, capsys):
    """Ten replies, c/r/p = compliance / full refusal / partial refusal:
        ana  c c c c r r r p p c      ben  c c c r r r p p c c
    three-class: 7 of 10 agree, p_o = 0.7; both have shares c 5, r 3, p 2, so p_e = (25 + 9 + 4) / 100 = 0.38
    and kappa = (0.7 - 0.38) / (1 - 0.38) = 0.516. Binary (c against r or p): 8 of 10 agree, shares 5/5 each,
    p_e = 0.5, kappa = (0.8 - 0.5) / 0.5 = 0.6."""
    name = {"c": "full_compliance", "r": "full_refusal", "p": "partial_refusal"}
    ana = [name[x] for x in "ccccrrrppc"]
    ben = [name[x] for x in "cccrrrppcc"]
    assert cohen_kappa(ana, ben) == pytest.approx(0.32 / 0.62)
    assert cohen_kappa(ana, ana) == 1.0 and cohen_kappa([], []) is None
    assert cohen_kappa(["full_refusal"] * 3, ["full_refusal"] * 3) is None  # one class only: undefined

    store = LabelStore(tmp_path / "labels.sqlite")
    for i, (a, b) in enumerate(zip(ana, ben)):
        for labeller, label in (("ana", a), ("ben", b)):
            store.add(label_key(f"p{i}", f"r{i}"), label, labeller=labeller, prompt=f"p{i}", response=f"r{i}")
    store.add(label_key("p99", "r99"), "full_refusal", labeller="ana", prompt="p99", response="r99")  # ana only
    (pair,) = agreements(store.records())
    assert (pair.first, pair.second, pair.n) == ("ana", "ben", 10)
    assert (pair.agreement, pair.binary_agreement) == (pytest.approx(0.7), pytest.approx(0.8))
    assert (pair.kappa, pair.binary_kappa) == (pytest.approx(0.516129, abs=1e-6), pytest.approx(0.6))

    assert main(["labels", "stats", "--labels", str(store.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("21 labels of 11 replies; 8 with a label in force, 3 open disagreements (labels export "
                           "FILE --conflicts)")
    assert out[3].split() == ["ana", "11", "5", "4", "2"] and out[4].split() == ["ben", "10", "5", "3", "2"]
    assert out[-1].split() == ["ana", "/", "ben", "10", "0.700", "0.516", "0.800", "0.600"]


def test_a_labeller_option_the_files_labeller_column_contradicts_is_refused(tmp_path, capsys):
    """A second person fills in a full export (which names the first labeller on every row) and imports it
    under their own name: storing it as the first person's latest labels would replace that person's vote."""
    store = LabelStore(tmp_path / "labels.sqlite")
    fill(store)
    before = comparable(store)
    out = tmp_path / "labels.csv"
    assert main(["labels", "export", str(out), "--labels", str(store.path)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "label": "partial_refusal", "labelled_at": ""} for r in rows)
    capsys.readouterr()
    assert main(["labels", "import", str(out), "--labeller", "cara", "--labels", str(store.path)]) == 2
    err = capsys.readouterr().err
    assert f"{out}:2: the file's labeller column names 'ana', but --labeller cara was given" in err
    assert len(err.strip().splitlines()) == 1
    assert comparable(store) == before  # nothing stored
    # The labeller's own name in the column is no contradiction.
    assert main(["labels", "import", str(out), "--labeller", "ana", "--labels", str(store.path)]) == 2
    assert "names 'ben'" in capsys.readouterr().err


def test_reading_a_store_that_is_not_there_is_an_error_and_creates_nothing(tmp_path, capsys, monkeypatch):
    """A mistyped --labels read as an empty store ("no labels yet", an export of 0 labels) and left a new
    empty store behind."""
    missing = tmp_path / "typo.sqlite"
    for argv in (["labels", "stats"], ["labels", "export", str(tmp_path / "out.csv")]):
        assert main([*argv, "--labels", str(missing)]) == 2
        err = capsys.readouterr().err
        assert f"label store {missing} not found" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # The default store (beside the cache) not there yet: stats says so; export has nothing to write.
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    assert main(["labels", "stats", "--cache-dir", str(cache)]) == 0
    assert "no labels yet" in capsys.readouterr().out
    assert main(["labels", "export", str(tmp_path / "out.csv"), "--cache-dir", str(cache)]) == 2
    assert "no labels to export" in capsys.readouterr().err
    assert not (cache / "labels.sqlite").exists() and not (tmp_path / "out.csv").exists()


def test_a_parquet_label_column_of_keys_with_blanks_is_read_as_keys(tmp_path, capsys):
    """A data frame stores a column of the keys 1/2/3 with blank cells as floats: 1.0, NaN, 2.0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (p0, r0), (p1, r1), (p2, r2) = TEXTS[:3]
    path = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"prompt": [p0, p1, p2], "response": [r0, r1, r2],
                             "label": pa.array([1.0, None, 2.0], pa.float64())}), path)
    store = LabelStore(tmp_path / "labels.sqlite")
    assert main(["labels", "import", str(path), "--labeller", "ana", "--labels", str(store.path)]) == 0
    assert "stored 2 labels" in capsys.readouterr().out
    assert sorted(store.labels().values()) == ["full_compliance", "full_refusal"]


def test_one_reply_labelled_two_ways_in_one_file_is_refused_not_decided_by_row_order(tmp_path, capsys):
    (p0, r0), (p1, r1) = TEXTS[:2]
    path = tmp_path / "labels.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("prompt", "response", "label"), (p0, r0, "full_refusal"), (p1, r1, "1"),
                                 (p0, r0, "full_compliance")])
    store = LabelStore(tmp_path / "labels.sqlite")
    assert main(["labels", "import", str(path), "--labeller", "ana", "--labels", str(store.path)]) == 1
    captured = capsys.readouterr()
    assert "stored 1 labels" in captured.out
    assert "refused 2 rows" in captured.err
    assert (f"{path}:2: labeller ana labels this reply differently in one file (full_refusal at {path}:2, "
            f"full_compliance at {path}:6); give it one label") in captured.err
    assert list(store.labels().values()) == ["full_compliance"]  # only the second reply's


def test_importing_an_undated_file_again_does_not_undo_a_later_correction(tmp_path, capsys):
    # alice imports C for a reply, then labels it R on the page; the same file again (no labelled_at, so
    # each import would stamp its own time) must not make C her latest label once more.
    (p0, r0), (p1, r1) = TEXTS[:2]
    path = tmp_path / "labels.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("prompt", "response", "label"), (p0, r0, "full_compliance"), (p1, r1, "2")])
    store = LabelStore(tmp_path / "labels.sqlite")
    assert main(["labels", "import", str(path), "--labeller", "alice", "--labels", str(store.path)]) == 0
    assert "stored 2 labels" in capsys.readouterr().out
    key = label_key(p0, r0)
    store.add(key, "full_refusal", labeller="alice", prompt=p0, response=r0, source="review")
    assert store.labels([key]) == {key: "full_refusal"}
    assert main(["labels", "import", str(path), "--labeller", "alice", "--labels", str(store.path)]) == 0
    assert "stored 0 labels from" in capsys.readouterr().out
    assert store.labels([key]) == {key: "full_refusal"}  # her correction stands
    assert len(store.records()) == 3
    # Another labeller's vote of the same class is a new vote, and a new class from alice is a new label.
    assert main(["labels", "import", str(path), "--labeller", "bob", "--labels", str(store.path)]) == 0
    assert "stored 2 labels" in capsys.readouterr().out
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("prompt", "response", "label"), (p0, r0, "partial_refusal")])
    assert main(["labels", "import", str(path), "--labeller", "alice", "--labels", str(store.path)]) == 0
    assert "stored 1 labels" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["labels", "stats"], ["labels", "export", "-"]])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, command):
    """``safety-harness labels stats | head -1``: the reader closes the pipe before the command is done
    writing; the command ends with the status a shell gives a SIGPIPE (141) and no traceback."""
    import os
    import subprocess
    import sys

    store = LabelStore(tmp_path / "labels.sqlite")
    fill(store)
    if command[:2] == ["labels", "export"]:
        command = ["labels", "export", str(tmp_path / "out.csv")]  # writes its file, then one line
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        done = subprocess.run([sys.executable, "-m", "harness.cli", *command, *(["--labels", str(store.path)]
                                                                            if command[0] == "labels" else [])],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141, done.stderr
