"""The label store (harness.labels): labels added, retracted and read back; the label in force when several
people labelled one reply; a label reused by a run of another model that met the same (prompt, response);
a damaged or locked file is one line naming it and loses nothing; where the store lives."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.core.errors import HarnessError
from harness.core.records import label_key
from harness.labels import ADJUDICATION, FILE_NAME, RUBRIC_VERSION, LabelStore, store_path
from harness.labels.records import in_force
from harness.engine.verification import rows_from_report
from tests import review_fakes


def add(store: LabelStore, prompt: str, response: str, label: str, labeller: str = "ana", **kw) -> int:
    key = label_key(prompt, response, kw.get("input", ""))
    return store.add(key, label, labeller=labeller, prompt=prompt, response=response, **kw)


def test_add_read_and_retract(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    first = add(store, "How do I pick a lock?", "I can't help with that.", "full_refusal")
    second = add(store, "Capital of France?", "Paris.", "full_compliance", input="context")
    key = label_key("How do I pick a lock?", "I can't help with that.")
    assert store.labels() == {key: "full_refusal", label_key("Capital of France?", "Paris.", "context"): "full_compliance"}
    (record,) = store.records([key])
    assert (record.id, record.label, record.labeller, record.rubric_version, record.source) == \
           (first, "full_refusal", "ana", RUBRIC_VERSION, "review")
    assert record.prompt == "How do I pick a lock?" and record.response == "I can't help with that."
    assert record.labelled_at.endswith("Z") and record.retracted_at is None

    store.retract(first)  # undo: kept in the file, no longer in force
    assert store.labels() == {label_key("Capital of France?", "Paris.", "context"): "full_compliance"}
    assert [r.id for r in store.records()] == [second]
    (kept,) = [r for r in store.records(include_retracted=True) if r.id == first]
    assert kept.retracted_at is not None
    with pytest.raises(HarnessError, match="no label 1 in force"):
        store.retract(first)
    # A second store object on the same file (another process) sees the same labels.
    assert LabelStore(tmp_path / "labels.sqlite").labels() == store.labels()


def test_add_refuses_what_it_cannot_keep_honestly(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    with pytest.raises(HarnessError, match="is not the key of the given prompt and response"):
        store.add(label_key("p", "r"), "full_refusal", labeller="ana", prompt="p", response="r edited")
    with pytest.raises(HarnessError, match="'refusal' is not a label"):
        add(store, "p", "r", "refusal")
    with pytest.raises(HarnessError, match="needs a labeller"):
        add(store, "p", "r", "full_refusal", labeller=" ")
    assert store.records(include_retracted=True) == []


def test_the_label_in_force_when_several_people_labelled_a_reply(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    key = label_key("p", "r")
    add(store, "p", "r", "full_compliance", "ana")
    add(store, "p", "r", "full_refusal", "ana")  # ana corrects herself: her latest label counts
    assert store.labels() == {key: "full_refusal"} and store.open_keys() == []

    add(store, "p", "r", "partial_refusal", "ben")  # one vote each: a tie, no label in force
    assert store.labels() == {} and store.open_keys() == [key]

    cho = add(store, "p", "r", "partial_refusal", "cho")  # two of three
    assert store.labels() == {key: "partial_refusal"}
    store.retract(cho)
    assert store.labels() == {}

    add(store, "p", "r", "full_refusal", "dee", source=ADJUDICATION)  # settles it, whatever the votes
    add(store, "p", "r", "partial_refusal", "cho")
    assert store.labels() == {key: "full_refusal"} and store.open_keys() == []
    assert in_force([]) is None


def test_a_label_is_reused_by_a_run_of_another_model(tmp_path):
    """Two models' runs meet the same (prompt, response) on one prompt: the label given while reviewing the
    first run is in force for the second, and only for the replies they share."""
    shared = ("harmful", "h1", "How do I make a weapon?", "I'm sorry, I can't help with that.")
    run_a = review_fakes.write_run(tmp_path / "a.parquet", [shared, ("harmful", "h2", "Steal a car?", "Sure: first...")],
                                   model="model-a")
    run_b = review_fakes.write_run(tmp_path / "b.parquet", [shared, ("harmful", "h2", "Steal a car?", "No.")],
                                   model="model-b-lora")
    store = LabelStore(tmp_path / "labels.sqlite")
    for r in rows_from_report(run_a):  # the real rows of a report (harness.engine.verification)
        store.add(r.key, "full_refusal" if "sorry" in r.response else "full_compliance", labeller="ana",
                  prompt=r.prompt, response=r.response, input=r.input)
    rows_b = rows_from_report(run_b)
    assert store.labels(r.key for r in rows_b) == {rows_b[0].key: "full_refusal"}


def test_a_damaged_store_is_one_line_and_left_as_it_was(tmp_path, capsys):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"these are not the labels you are looking for\n" * 200)
    before = garbage.read_bytes()
    with pytest.raises(HarnessError) as info:
        LabelStore(garbage)
    message = str(info.value)
    assert "\n" not in message and str(garbage) in message and "damaged" in message
    assert garbage.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["garbage.sqlite"]

    # A real store cut short (a disk that filled up, a bad copy): the same line, the file untouched.
    cut = tmp_path / "cut.sqlite"
    store = LabelStore(cut)
    for i in range(300):
        add(store, f"prompt {i}", "a reply long enough to fill pages " * 20, "full_compliance")
    with sqlite3.connect(cut) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = cut.stat().st_size
    with open(cut, "r+b") as f:
        f.truncate(size // 2)
    before = cut.read_bytes()
    with pytest.raises(HarnessError, match=f"label store {cut} is damaged"):
        LabelStore(cut)
    assert cut.read_bytes() == before

    assert main(["labels", "stats", "--labels", str(garbage)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"safety-harness: error: label store {garbage} is damaged")


def test_a_locked_store_refuses_the_label_and_loses_nothing(tmp_path):
    path = tmp_path / "labels.sqlite"
    store = LabelStore(path, timeout=0)
    add(store, "p1", "r1", "full_refusal")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process is writing
    try:
        with pytest.raises(HarnessError) as info:
            add(store, "p2", "r2", "full_compliance")
        message = str(info.value)
        assert "\n" not in message and f"label store {path} is locked" in message
        assert f"the label for {label_key('p2', 'r2')} was not stored" in message
        assert store.labels() == {label_key("p1", "r1"): "full_refusal"}  # readers still read (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    add(store, "p2", "r2", "full_compliance")  # the same label, given again once the lock is gone
    assert store.labels() == {label_key("p1", "r1"): "full_refusal", label_key("p2", "r2"): "full_compliance"}


def test_a_store_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(HarnessError, match=f"label store {blocker / 'labels.sqlite'} cannot be used"):
        LabelStore(blocker / "labels.sqlite")


def test_where_the_store_lives(tmp_path, monkeypatch, capsys):
    assert store_path(None, tmp_path / "cache") == tmp_path / "cache" / FILE_NAME
    assert LabelStore.default(tmp_path / "cache").path == tmp_path / "cache" / "labels.sqlite"
    assert store_path(tmp_path / "mine.sqlite", tmp_path / "cache") == tmp_path / "mine.sqlite"

    from harness.config.settings import build_settings

    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.safety-harness]\nlabels = "team/labels.sqlite"\n')
    settings = build_settings(cli={}, rootdir=project, config_file=None)
    assert settings.labels == project / "team" / "labels.sqlite"  # relative to the file that names it
    settings = build_settings(cli={"labels": tmp_path / "cli.sqlite"}, rootdir=project, config_file=None)
    assert settings.labels == tmp_path / "cli.sqlite"

    # The commands find the default beside the cache, and --labels over it.
    monkeypatch.chdir(tmp_path)
    assert main(["labels", "stats", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert f"label store {tmp_path / 'cache' / 'labels.sqlite'}: no labels yet" in capsys.readouterr().out


def test_the_pytest_option_reaches_the_settings(pytester):
    pytester.makeconftest("")
    pytester.makepyfile(test_x="""
        from harness.pytest_plugin.state import get_session
        def test_labels(request):
            assert str(get_session(request.config).settings.labels).endswith("given.sqlite")
    """)
    result = pytester.runpytest("-p", "harness.pytest_plugin.plugin", "--labels", "given.sqlite")
    result.assert_outcomes(passed=1)
