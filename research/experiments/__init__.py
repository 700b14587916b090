"""Experiments whose results were not shipped: run as ``python -m research.experiments.NAME`` from the
repository root; the figures they gave are in ``docs/experiments/`` (and ``docs/adapter-sanity.md``)."""
