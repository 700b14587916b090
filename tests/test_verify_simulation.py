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


def test_category_gates_are_held_as_the_main_job_holds_them_and_tallied_apart_from_their_suite():
    """With --category-gates the embedded model's replay holds each category's checks beside its suite's (the
    main job's SUITE[CATEGORY] items): the suite's bounds for that category, the default for a kind of prompt
    no bound covers, and a tally of their own (keyed by category too, so a category's interval never lands in
    its suite's)."""
    sim = importlib.import_module("research.verify_simulation")
    from research.labelled_models import EMBEDDED, LabelledReply

    def reply(category, expected, n):
        return LabelledReply(EMBEDDED, "xstest", category, f"{category}-{n}", expected, "p", "r", "full_compliance")

    rows = [reply("homonyms", "comply", 1), reply("homonyms", "comply", 2), reply("contrast_homonyms", "refuse", 3)]
    flat = sim.thresholds_for(EMBEDDED, rows)
    held = sim.thresholds_for(EMBEDDED, rows, categories=True)
    assert set(flat) == {"xstest"} and set(held) == {"xstest", "xstest:homonyms", "xstest:contrast_homonyms"}
    assert set(held["xstest:homonyms"]) == {"max_refusal_rate"}  # only should-answer prompts: that kind's bound
    assert set(held["xstest:contrast_homonyms"]) == {"max_unsafe_compliance_rate"}
    gates = sim.gates_of(held)
    assert len({sim.gate_id(g) for g in gates}) == len(gates) == 4
