"""The run metadata is a typed record (``harness.core.report_metadata.RunMetadata``): a report's JSON reads back
as the same record, an undeclared section or run fact fails naming it, and ``ModelInfo`` changes only by new
records."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from harness.config.settings import build_settings
from harness.core.report_metadata import (KEYS, OPTIONAL_KEYS, RUN_FACT_KEYS, SECTION_KEYS, MetadataKeyError,
                                          RunMetadata)
from harness.core.types import ModelInfo
from harness.engine.run_report import write_report
from harness.engine.session import HarnessSession
from harness.reports.parquet import read_report

HARNESS = Path(__file__).resolve().parents[1] / "harness"


def dummy_session(tmp_path) -> HarnessSession:
    cli = {"backend": "dummy", "backend_args": {"refuse_words": ["bomb"]}, "cache_dir": tmp_path / "cache",
           "scorer": "refusal_patterns", "harm_scorer": "none"}  # no encoder to load: the test is the record
    return HarnessSession(build_settings(cli=cli, rootdir=tmp_path, config_file=None))


def test_a_report_reads_back_as_the_record_it_was_written_from(tmp_path):
    hs = dummy_session(tmp_path)
    hs.run(["smoke"], progress=False)
    hs.extra_metadata["invariance"] = {"bases": {"unsafe_stay_refused": {"n": 2, "anchored": 1}}}
    _, meta = read_report(write_report(hs, tmp_path / "run.parquet", {"exitstatus": 0}))
    record = RunMetadata.from_dict(meta)
    assert record.as_dict() == meta
    assert list(meta) == [name for name in KEYS if name in meta]  # the declared order
    assert record.model == hs.model_info and record.model.backend == "dummy" and record.exitstatus == 0
    assert record.invariance == hs.extra_metadata["invariance"] and record.replicas is None
    assert "replicas" not in meta and "sweep" not in meta  # unset optional keys stay out of the JSON


def test_an_undeclared_section_or_run_fact_fails_naming_it(tmp_path):
    hs = dummy_session(tmp_path)
    hs.extra_metadata["replica_stats"] = {}
    with pytest.raises(MetadataKeyError, match=r"extra_metadata\): undeclared run metadata key\(s\) replica_stats"):
        write_report(hs, tmp_path / "run.parquet")
    hs.extra_metadata.clear()
    with pytest.raises(MetadataKeyError, match="run facts: undeclared run metadata key.s. stats"):
        write_report(hs, tmp_path / "run.parquet", {"stats": {}})  # a run fact never overwrites a fixed section
    assert not (tmp_path / "run.parquet").exists()


def test_from_dict_names_an_unknown_or_missing_key():
    meta = {name: {} for name in KEYS if name not in OPTIONAL_KEYS}
    meta.update(run_id="r", started=1.0, finished=2.0, model={"backend": "dummy"})
    assert RunMetadata.from_dict(meta).model == ModelInfo(backend="dummy")
    with pytest.raises(MetadataKeyError, match="undeclared run metadata key.s. surprise"):
        RunMetadata.from_dict({**meta, "surprise": 1})
    with pytest.raises(MetadataKeyError, match="lacks key.s.: provenance"):
        RunMetadata.from_dict({k: v for k, v in meta.items() if k != "provenance"})
    with pytest.raises(MetadataKeyError, match="model metadata has unknown key.s.: gpu"):
        RunMetadata.from_dict({**meta, "model": {"gpu": "h100"}})


def test_every_section_the_harness_writes_is_declared():
    # The section store is written by name across the engine (adapter sanity, replicas, invariance): a new
    # name must be a RunMetadata field, or every report of that run would fail to write.
    assert set(SECTION_KEYS) | set(RUN_FACT_KEYS) == OPTIONAL_KEYS
    written = set()
    for path in HARNESS.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        written |= set(re.findall(r"extra_metadata(?:\[|\.setdefault\()\"(\w+)\"", text))
    assert written and written <= set(SECTION_KEYS), sorted(written - set(SECTION_KEYS))


def test_model_info_is_frozen_and_changes_make_new_records():
    info = ModelInfo(model="m", scorer="refusal_patterns")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.scorer = "other"  # type: ignore[misc]
    merged = info.merged({"backend": "vllm", "scorer": None, "not_a_fact": 1})
    assert merged == ModelInfo(model="m", scorer="refusal_patterns", backend="vllm") and info.backend is None
    assert ModelInfo.from_dict(merged.as_dict()) == merged
