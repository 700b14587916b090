"""Speed measured as ratios within one run (docs/benchmarks.md): run as ``python benchmarks/bench_NAME.py``.
A package only so that the import contracts in pyproject.toml can say that neither ``harness`` nor
``research`` imports it; nothing here is installed."""
