"""Reports of a harness run: the per-prompt Parquet file and the human summaries."""
