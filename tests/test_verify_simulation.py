"""The simulation behind docs/verified-verdicts.md counts what it says it counts."""

from __future__ import annotations

import importlib
import math


def test_an_undecidable_calibrate_interval_is_a_miss_and_keeps_the_mean_half_width_a_number():
    """calibrate's Rogan-Gladen is undecidable (NaN bounds) on a sample where the scorer cannot be told from
    chance. Tallied as an interval, it made the column's mean half-width NaN for the whole table."""
    sim = importlib.import_module("research.verify_simulation")
    tally = sim.Tally()
    tally.add("calibrate", (0.2, 0.6), 0.5)
    tally.add("calibrate", (float("nan"), float("nan")), 0.5)
    tally.add("calibrate", None, 0.5)
    tally.add("calibrate", (0.0, 0.1), 0.5)
    assert tally.coverage("calibrate") == 0.25
    assert math.isclose(tally.half_width("calibrate"), (0.2 + 0.05) / 2)
