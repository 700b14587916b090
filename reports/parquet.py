"""The Parquet report. Its schema, metadata key, writer and reader are the record contract every layer shares,
so they live in ``harness.core.report_file`` (the run metadata's record and schema: ``harness.core.report_metadata``); this module is where users and the docs find them."""

from harness.core.report_file import COLUMN_DOCS, METADATA_KEY, SCHEMA, read_report, write_report

__all__ = ["COLUMN_DOCS", "METADATA_KEY", "SCHEMA", "read_report", "write_report"]
