"""The generated reference pages (docs/reference/) match the code they are generated from."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from harness.cli import docs_gen


def test_checked_in_reference_pages_are_current():
    stale = [str(p.relative_to(docs_gen.ROOT)) for p in docs_gen.stale_pages()]
    assert not stale, f"stale generated docs: {', '.join(stale)}; regenerate with `{docs_gen.REGENERATE}`"


def test_check_mode_names_a_stale_page(tmp_path, capsys, monkeypatch):
    docs_gen.write_pages(tmp_path)
    assert docs_gen.stale_pages(tmp_path) == []
    page = tmp_path / "options.md"
    page.write_text(page.read_text() + "hand edit\n")
    (tmp_path / "report-schema.md").unlink()
    assert docs_gen.stale_pages(tmp_path) == [page, tmp_path / "report-schema.md"]
    monkeypatch.setattr(docs_gen, "REFERENCE_DIR", tmp_path)
    monkeypatch.setattr(docs_gen, "ROOT", tmp_path)
    assert docs_gen.main(["--check"]) == 1
    assert f"options.md is stale: run `{docs_gen.REGENERATE}`" in capsys.readouterr().err
    assert docs_gen.main([]) == 0 and docs_gen.main(["--check"]) == 0


def test_every_settings_field_and_report_column_is_on_its_page():
    import dataclasses

    options = docs_gen.render_options()
    for f in dataclasses.fields(docs_gen._run_settings_class()):
        assert f"\n| {f.name} |" in options
    schema, _, _ = docs_gen._report_schema()
    report = docs_gen.render_report_schema()
    for field in schema:
        assert f"\n| `{field.name}` | `{field.type}` |" in report


def test_a_column_without_a_description_fails_generation(monkeypatch):
    schema, docs, key = docs_gen._report_schema()
    wider = schema.append(pa.field("new_column", pa.string()))
    monkeypatch.setattr(docs_gen, "_report_schema", lambda: (wider, docs, key))
    with pytest.raises(SystemExit, match="undocumented: new_column"):
        docs_gen.render_report_schema()


def test_command_line_spellings_are_real_pytest_options(pytestconfig):
    # pytest has no public list of registered options (and `pytest --help` is what a user would read); the
    # parser's groups are the same data.
    parser = pytestconfig._parser
    known = {name for group in parser._groups for option in group.options for name in option.names()}
    flags = set(re.findall(r"`(--[a-z][a-z0-9-]*)", docs_gen.render_options()))
    assert len(flags) > 30
    assert sorted(flags - known) == []


def test_every_metadata_key_and_model_fact_is_on_its_page(monkeypatch):
    import dataclasses

    run_metadata, model_info = docs_gen._metadata_records()
    page = docs_gen.render_report_metadata()
    for f in dataclasses.fields(run_metadata):
        assert f"\n| `{f.name}` |" in page and f.metadata["written_by"]
    for f in dataclasses.fields(model_info):
        assert f"\n| `model.{f.name}` |" in page

    @dataclasses.dataclass(frozen=True)
    class Wider(run_metadata):
        gpu: str | None = None  # declared without its meaning

    monkeypatch.setattr(docs_gen, "_metadata_records", lambda: (Wider, model_info))
    with pytest.raises(SystemExit, match="no help metadata for gpu"):
        docs_gen.render_report_metadata()
