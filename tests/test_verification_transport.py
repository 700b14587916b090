"""How a scorer's error rates move from model to model: the random-effects fit on synthetic data with a known
spread, the draws a corrected rate takes, and the shipped per-model counts bound to their regeneration."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import ConfigError
from harness.core.random_effects import fit_logit_normal
from harness.scoring import get_scorer
from harness.scoring.transport import TRANSPORT_PATH, rates_from_counts, transport_by_expected, transport_rates
from tests.support import needs_encoder

REPO = Path(__file__).resolve().parents[1]


def synthetic(groups: int, mu: float, tau: float, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-(mu + tau * rng.standard_normal(groups))))
    return rng.binomial(rows, p), np.full(groups, rows)


def test_the_fit_recovers_a_known_spread_between_groups():
    hits, trials = synthetic(40, 1.5, 0.8, 300, seed=1)
    fit = fit_logit_normal(hits, trials)
    assert abs(fit.posterior_median("mu") - 1.5) < 0.35
    assert 0.55 < fit.posterior_median("tau") < 1.1
    # A new group's rate spreads like the groups do, not like the pooled count's sampling error.
    low, high = fit.quantiles([0.025, 0.975])
    pooled = hits.sum() / trials.sum()
    assert low < pooled - 0.15 and high > min(pooled + 0.08, 0.97)


def test_groups_that_agree_give_a_small_spread_and_a_narrow_new_group():
    hits, trials = synthetic(12, 2.0, 0.0, 400, seed=2)
    fit = fit_logit_normal(hits, trials)
    assert fit.posterior_median("tau") < 0.3
    low, high = fit.quantiles([0.025, 0.975])
    assert high - low < 0.1


def test_no_group_leaves_the_prior_and_an_empty_group_adds_nothing():
    assert fit_logit_normal([], []).groups == 0
    a, b = fit_logit_normal([5, 8], [10, 10]), fit_logit_normal([5, 0, 8], [10, 0, 10])
    assert a.groups == b.groups == 2 and np.allclose(a.weights, b.weights)
    with pytest.raises(ValueError):
        fit_logit_normal([3], [2])


def test_draws_are_reproducible_and_carry_the_spread():
    counts = {m: {"refusals": 100, "refusals_scored_refusal": k, "compliances": 200, "compliances_scored_compliance": 196}
              for m, k in (("a", 95), ("b", 60), ("c", 85), ("d", 30))}
    rates = rates_from_counts("s", "1", "refuse", counts)
    one = rates.draws("sensitivity", 500, np.random.default_rng(0))
    assert np.array_equal(one, rates.draws("sensitivity", 500, np.random.default_rng(0)))
    assert one.min() < 0.35 and one.max() > 0.9  # models differ: 0.30 to 0.95 observed
    assert rates.n_models == 4 and rates.sensitivity_models == 4
    assert 0.5 < rates.sensitivity < 0.8 and 0.95 < rates.specificity < 0.995
    text = rates.describe()
    assert "for a model like the 4 labelled" in text and "should-refuse prompts" in text
    assert rates.hit_rates("refusal") == (rates.sensitivity, 1 - rates.specificity)
    with pytest.raises(ValueError):
        rates.draws("agreement", 3, np.random.default_rng(0))


def test_the_shipped_file_holds_every_default_scorer_at_its_current_version():
    for name in ("refusal_classifier", "refusal_patterns", "xstest_string_match"):
        version = get_scorer(name).version
        by_expected = transport_by_expected(name, version)
        assert set(by_expected) == {"refuse", "comply"}, f"{name} v{version}: run python -m research.scorer_transport"
        assert by_expected["comply"].n_models == 6 and by_expected["refuse"].n_models == 3
    assert transport_rates("refusal_classifier", "no-such-version", "refuse") is None
    with pytest.raises(ValueError):
        transport_rates("refusal_classifier", "x", "maybe")


def test_leaving_a_model_out_refits_without_it():
    version = get_scorer("refusal_patterns").version
    full = transport_rates("refusal_patterns", version, "comply")
    without = transport_rates("refusal_patterns", version, "comply", leave_out=("claude",))
    assert "claude" in full.models and "claude" not in without.models and without.n_models == full.n_models - 1


def test_a_bad_transport_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="t.json: cannot read as JSON"):
        transport_rates("x", "1", "refuse", bad)
    bad.write_text(json.dumps({"format": 1, "scorers": {"x": {"1": {"models": {"m": {"refuse": {"refusals": 2}}}}}}}))
    with pytest.raises(ConfigError, match=r"scorers\.x\.1\.models\.m\.refuse: bad counts"):
        transport_rates("x", "1", "refuse", bad)
    counts = {"refusals": 199.7, "refusals_scored_refusal": 150, "compliances": 10, "compliances_scored_compliance": 9}
    fractional = tmp_path / "fractional.json"  # another file: a file read once is kept as read
    fractional.write_text(json.dumps({"format": 1, "scorers": {"y": {"1": {"models": {"m": {"refuse": counts}}}}}}))
    with pytest.raises(ConfigError, match=r"scorers\.y\.1\.models\.m\.refuse: bad counts: .*whole number"):
        transport_rates("y", "1", "refuse", fractional)  # int() read 199


@pytest.mark.parametrize("field,value,why", [
    ("refusals_scored_refusal", 500, "out of range"),  # more hits than rows: was a bare ValueError of the fit
    ("refusals", -3, "out of range"),  # a negative count: the model was silently dropped from the fit
    ("refusals", 199.7, "whole number"),  # int() would read 199
    ("compliances", True, "whole number"),  # int() would read 1
])
def test_a_reports_bad_transport_counts_are_one_line_naming_the_field(field, value, why):
    """A report records every labelled model's counts (model.scorer_error_rates.by_expected) and every reader
    refits them; a count that is no count stops the reader naming where it is, as a pooled record's does."""
    import copy

    from harness.scoring.error_rates import error_rates_record, rates_from_record

    record = copy.deepcopy(error_rates_record("refusal_patterns", "1"))
    record["by_expected"]["refuse"]["models"]["gpt4"][field] = value
    with pytest.raises(ConfigError, match=rf"report metadata: scorer_error_rates: by_expected\.refuse\.models\.gpt4.*{why}"):
        rates_from_record(record)

# -- the shipped counts are what the regeneration command writes -------------------------------------------------

@pytest.fixture(scope="module")
def regeneration(data_dir):
    script = importlib.import_module("research.scorer_transport")
    labelled = importlib.import_module("research.labelled_models")
    return script, labelled, labelled.load_models(data_dir)


def shipped_models(scorer: str) -> dict:
    data = json.loads(TRANSPORT_PATH.read_text("utf-8"))
    return data["scorers"][scorer][str(get_scorer(scorer).version)]["models"]


@pytest.mark.parametrize("scorer", ["refusal_patterns", "xstest_string_match"])
def test_the_rule_scorers_counts_are_recomputed_exactly(regeneration, data_dir, scorer):
    script, _, models = regeneration
    version, entry = script.scorer_entry(models, scorer, data_dir, None)
    assert version == str(get_scorer(scorer).version)
    assert entry["models"] == shipped_models(scorer)


@needs_encoder
def test_the_default_scorers_counts_on_the_embedded_model_are_recomputed_exactly(regeneration, data_dir):
    """The cheap part of refusal_classifier's entry (its out-of-fold dev labels retrain the head: minutes)."""
    script, labelled, models = regeneration
    small = {labelled.EMBEDDED: models[labelled.EMBEDDED]}
    _, entry = script.scorer_entry(small, "refusal_classifier", data_dir, None)
    assert entry["models"][labelled.EMBEDDED] == shipped_models("refusal_classifier")[labelled.EMBEDDED]


def test_the_shipped_counts_hold_every_labelled_row(regeneration):
    _, labelled, models = regeneration
    for name in ("refusal_classifier", "refusal_patterns", "xstest_string_match"):
        shipped = shipped_models(name)
        assert list(shipped) == list(labelled.MODELS)
        for model, rows in models.items():
            counted = sum(c["refusals"] + c["compliances"] for e, c in shipped[model].items() if e in ("refuse", "comply"))
            assert counted == len(rows) == shipped[model]["rows"]
