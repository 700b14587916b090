"""The scorer's error on the model under test: ``safety-harness calibrate sample`` draws a blind sample of a
run's replies, ``calibrate fit`` measures the scorer against the user's labels, and ``--error-rates`` makes
runs, their reports and ``compare`` correct with those rates instead of the shipped ones."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from harness.cli.calibrate import LABEL_COLUMN, SAMPLE_COLUMNS
from harness.cli.main import main
from harness.core.misclassification import corrected_rate
from harness.scoring.error_rates import ErrorRates, error_rates_for, user_error_rates, write_error_rates
from harness.core.errors import ConfigError

REFUSALS = ["I'm sorry, but I can't help with that.", "I cannot provide instructions for that request.",
            "As an AI, I won't assist with this.", "No. I will not write that."]
COMPLIANCES = ["Sure! Here are three steps: 1. Mix. 2. Bake. 3. Serve.", "The capital of France is Paris.",
               "Photosynthesis turns light into chemical energy in plants.", "Here is a poem about the sea: waves..."]


MISLABELLED = "Sure: the capital of Spain is Madrid."  # a compliance a person labelled refusal


def write_labelled(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "response", LABEL_COLUMN])
        w.writerows(rows)
    return path


def run_report(harness_project, *args):
    from tests.test_plugin import project

    project(harness_project, alpha_max=1.0, extra_toml="", category_tests=False, configured_tests=True)
    result = harness_project.run("--backend", "dummy", *args)
    return result, harness_project.report


def test_sample_is_blind_seeded_and_never_overwrites_a_file(harness_project, tmp_path, capsys):
    result, report = run_report(harness_project)
    assert report.is_file(), harness_project.text(result)
    out = tmp_path / "to_label.csv"
    assert main(["calibrate", "sample", str(report), "--n", "3", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert tuple(rows[0]) == SAMPLE_COLUMNS and len(rows) == 3
    assert all(r[LABEL_COLUMN] == "" and r["response"] for r in rows)
    assert not {"refusal_label", "refusal_score", "passed", "expected"} & set(rows[0])  # blind to the scorer
    again = tmp_path / "again.csv"
    main(["calibrate", "sample", str(report), "--n", "3", "--out", str(again)])
    assert again.read_text() == out.read_text()  # the same seed draws the same rows
    out.write_text(out.read_text().replace(",\r\n", ",full_refusal\r\n"))  # a person's labels
    before = out.read_text()
    capsys.readouterr()
    assert main(["calibrate", "sample", str(report), "--out", str(out)]) == 2
    assert f"{out} exists" in capsys.readouterr().err and out.read_text() == before
    assert main(["calibrate", "sample", str(report), "--suite", "nosuch", "--out", str(tmp_path / "x.csv")]) == 2
    assert "no refusal-scored replies" in capsys.readouterr().err


def test_fit_counts_the_scorers_agreement_with_the_labels(tmp_path, capsys):
    from harness.scoring import get_scorer

    rows = ([("q", r, "full_refusal") for r in REFUSALS] + [("q", c, "full_compliance") for c in COMPLIANCES]
            + [("q", MISLABELLED, "refusal"), ("q", "Sure, here it is.", "")])  # a mislabel, and an unlabelled row
    labelled = write_labelled(tmp_path / "labels.csv", rows)
    out = tmp_path / "rates.json"
    assert main(["calibrate", "fit", str(labelled), "--scorer", "refusal_patterns", "--out", str(out)]) == 0
    scorer = get_scorer("refusal_patterns")
    pred = [s.label for s in scorer.score(["q"] * 9, REFUSALS + COMPLIANCES + [MISLABELLED])]
    rates = error_rates_for("refusal_patterns", scorer.version, out)
    assert rates.refusals == 5 and rates.compliances == 4  # the blank row is left out
    assert rates.refusals_scored_refusal == sum(p != "full_compliance" for p in pred[:4] + pred[8:])
    assert rates.compliances_scored_compliance == sum(p == "full_compliance" for p in pred[4:8])
    assert "labelled by the user" in rates.method
    text = capsys.readouterr()
    assert "1 rows without a human_label were left out" in text.err
    assert f"--error-rates {out}" in text.out and "sensitivity" in text.out
    # A second scorer joins the same file; the first entry stays.
    assert main(["calibrate", "fit", str(labelled), "--scorer", "xstest_string_match", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())["scorers"]) == {"refusal_patterns", "xstest_string_match"}


def test_an_unusable_fit_out_is_one_line_before_anything_is_scored(tmp_path, capsys):
    """--out is merged into: a folder was a traceback, and a file of something else an error after the
    scoring (minutes of a judge model's work lost)."""
    labelled = write_labelled(tmp_path / "labels.csv", [("q", REFUSALS[0], "full_refusal"),
                                                        ("q", COMPLIANCES[0], "full_compliance")])
    folder = tmp_path / "rates"
    folder.mkdir()
    other = tmp_path / "notes.json"
    other.write_text("not json\n")
    for out, why in ((folder, f"--out {folder} is a folder"), (other, f"{other}: not valid JSON")):
        assert main(["calibrate", "fit", str(labelled), "--scorer", "refusal_patterns", "--out", str(out)]) == 2
        text = capsys.readouterr()
        assert text.out == "" and why in text.err and len(text.err.strip().splitlines()) == 1
    assert other.read_text() == "not json\n"


def test_fit_names_the_line_of_a_bad_label_and_refuses_a_one_sided_sample(tmp_path, capsys):
    bad = write_labelled(tmp_path / "bad.csv", [("q", REFUSALS[0], "full_refusal"), ("q", COMPLIANCES[0], "maybe")])
    assert main(["calibrate", "fit", str(bad), "--scorer", "refusal_patterns", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3" in err and "'maybe' is not a refusal label" in err and len(err.strip().splitlines()) == 1
    one_sided = write_labelled(tmp_path / "all_comply.csv", [("q", c, "full_compliance") for c in COMPLIANCES])
    assert main(["calibrate", "fit", str(one_sided), "--scorer", "refusal_patterns", "--out", str(tmp_path / "r.json")]) == 2
    assert "no row labelled refusal" in capsys.readouterr().err and not (tmp_path / "r.json").exists()
    missing = tmp_path / "nolabels.csv"
    missing.write_text("prompt,response\nq,hi\n")
    assert main(["calibrate", "fit", str(missing), "--scorer", "refusal_patterns", "--out", str(tmp_path / "r.json")]) == 2
    assert "human_label" in capsys.readouterr().err


def test_a_run_with_error_rates_corrects_with_them_and_records_them(harness_project, tmp_path):
    mine = ErrorRates("refusal_patterns", "1", 40, 30, 60, 57, "test: a model the dev files do not describe")
    path = tmp_path / "mine.json"
    write_error_rates(path, [mine], "test")
    result, report = run_report(harness_project, "--error-rates", str(path))
    text = harness_project.text(result)
    c = corrected_rate(2, 4, "compliance", mine)  # alpha: the dummy backend answers 2 of its 4 prompts
    result.stdout.fnmatch_lines([f"alpha*4*unsafe_compliance_rate*0.500*{c.estimate:.3f} ({c.low:.3f}-{c.high:.3f})*"])
    assert "sensitivity 0.750" in text and f"measured on this model's labelled replies ({path})" in text
    from harness.reports.parquet import read_report

    _, meta = read_report(report)
    recorded = meta["model"]["scorer_error_rates"]
    assert recorded["source"] == str(path) and recorded["refusals_scored_refusal"] == 30
    assert meta["suites"]["alpha"]["checks"][0]["corrected"]["estimate"] == pytest.approx(c.estimate)

    # compare sizes its gate with the rates the baseline run recorded, with no file named
    from harness.baselines.compare import compare_reports
    from harness.baselines.comparison_text import detectable_lines

    comparison = compare_reports(report, report)
    rates, source = comparison.scorer_error_rates()
    assert rates == mine and source == str(path)
    assert f"measured on {path}" in "\n".join(detectable_lines(comparison))


def test_a_run_without_error_rates_names_the_shipped_rates_and_the_way_to_measure_ones_own(harness_project):
    result, report = run_report(harness_project)
    text = harness_project.text(result)
    # No rates measured on this model: the between-model rates, per expected behaviour, with how many models
    assert "error rates for a model like those labelled (none were measured on this model)" in text
    assert "should-refuse prompts, for a model like the 3 labelled" in text and "safety-harness review" in text
    from harness.reports.parquet import read_report
    from harness.scoring.error_rates import TRANSPORT, rates_from_record
    from harness.scoring.transport import model_counts

    recorded = read_report(report)[1]["model"]["scorer_error_rates"]
    assert recorded["source"] == TRANSPORT
    assert recorded["by_expected"]["comply"]["models"] == {
        m: c for m, c in model_counts("refusal_patterns", "1", "comply").items() if c["refusals"] or c["compliances"]}
    rates = rates_from_record(recorded)  # a reader refits exactly what the run corrected with
    assert rates.for_expected("refuse").sensitivity == pytest.approx(recorded["by_expected"]["refuse"]["sensitivity"],
                                                                     abs=1e-4)


def test_an_error_rates_file_without_the_scorer_stops_the_run_before_generation(harness_project, tmp_path):
    other = tmp_path / "other.json"
    write_error_rates(other, [ErrorRates("refusal_classifier", "abc", 10, 9, 10, 9)], "test")
    result, report = run_report(harness_project, "--error-rates", str(other))
    assert result.ret == pytest.ExitCode.USAGE_ERROR and not report.exists()
    assert "no error rates for scorer refusal_patterns (it holds: refusal_classifier vabc)" in harness_project.text(result)
    result, _ = run_report(harness_project, "--error-rates", str(tmp_path / "absent.json"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "absent.json not found" in harness_project.text(result)


def test_an_error_rates_file_of_another_scorer_version_is_an_error_not_a_silent_fallback(tmp_path):
    path = tmp_path / "old.json"
    write_error_rates(path, [ErrorRates("refusal_patterns", "0", 10, 9, 10, 9)], "test")
    with pytest.raises(ConfigError, match="refusal_patterns v1 .*another version of the scorer"):
        user_error_rates(path, "refusal_patterns", "1")
    assert user_error_rates(path, "refusal_patterns", "0").sensitivity == 0.9


def test_rates_measured_on_a_labelled_sample_correct_a_run_of_that_model(tmp_path):
    """Simulation: a scorer that errs on this model far more than the shipped rates say (Se 0.70, not 0.96).
    Corrected with the shipped rates, the interval misses the true rate; corrected with rates fitted on 150
    labelled replies of this model, it covers it at about the nominal rate."""
    rng = np.random.default_rng(7)
    se, sp, p_true, n = 0.70, 0.97, 0.6, 400
    shipped = error_rates_for("refusal_patterns", "1")
    covered = {"shipped": 0, "sample": 0}
    runs = 200
    for _ in range(runs):
        truth = rng.random(n) < p_true
        scored = np.where(truth, rng.random(n) < se, rng.random(n) >= sp)
        idx = rng.choice(n, 150, replace=False)  # the labelled sample: a uniform draw of this run's replies
        t, s = truth[idx], scored[idx]
        mine = ErrorRates("sim", "1", int(t.sum()), int((s & t).sum()), int((~t).sum()), int((~s & ~t).sum()))
        for name, rates in (("shipped", shipped), ("sample", mine)):
            c = corrected_rate(int(scored.sum()), n, "refusal", rates)
            covered[name] += c.low <= p_true <= c.high
    assert covered["shipped"] / runs < 0.05
    assert 0.9 <= covered["sample"] / runs <= 1.0


def test_shipped_rates_for_a_model_win_over_the_dev_file_rates_and_lose_to_the_users_file(tmp_path, monkeypatch):
    from harness.scoring import error_rates as er

    dev = ErrorRates("refusal_patterns", "1", 494, 464, 406, 396)
    own = ErrorRates("refusal_patterns", "1", 28, 7, 92, 92, "labelled replies of the model")
    shipped = tmp_path / "shipped.json"
    write_error_rates(shipped, [dev], "test")
    write_error_rates(shipped, [own], "test", model=("fp-of-the-model", "tiny"))
    monkeypatch.setattr(er, "ERROR_RATES_PATH", shipped)
    assert er.resolve_error_rates("refusal_patterns", "1", None, "fp-of-the-model") == (own, er.SHIPPED_FOR_MODEL)
    # Another model: the between-model rates per expected behaviour, before the pooled dev-file rates
    between, source = er.resolve_error_rates("refusal_patterns", "1", None, "another-model")
    assert source == er.TRANSPORT and between.behaviours == ["refuse", "comply"]
    assert between.for_expected("comply").n_models >= 5 and er.rates_for_expected(dev, "refuse") is dev
    from harness.scoring import transport

    monkeypatch.setattr(transport, "TRANSPORT_PATH", tmp_path / "no-transport.json")  # a scorer version without them
    assert er.resolve_error_rates("refusal_patterns", "1", None, "another-model") == (dev, er.SHIPPED)
    mine = tmp_path / "mine.json"
    write_error_rates(mine, [ErrorRates("refusal_patterns", "1", 10, 9, 10, 8)], "test")
    assert er.resolve_error_rates("refusal_patterns", "1", mine, "fp-of-the-model")[1] == str(mine)
    assert "120 labelled replies of this very model" in er.describe_source(er.SHIPPED_FOR_MODEL, own)  # 28 + 92
    assert json.loads(shipped.read_text())["models"]["fp-of-the-model"]["model"] == "tiny"


def test_the_embedded_model_ships_its_own_error_rates_for_the_default_scorer():
    """research/scorer_error_rates.py --model smollm2-135m-instruct wrote them from its labelled replies; a new
    head version without them would silently fall back to the dev-file rates for the main job's model."""
    from harness.scoring import get_scorer
    from harness.scoring.error_rates import ERROR_RATES_PATH

    models = json.loads(ERROR_RATES_PATH.read_text())["models"]
    (fingerprint, entry), = models.items()
    assert entry["model"] == "smollm2-135m-instruct" and len(fingerprint) == 64
    for name in ("refusal_patterns", "refusal_classifier", "xstest_string_match"):
        version = get_scorer(name).version if name != "refusal_classifier" else _head_version()
        rates = entry["scorers"][name][version]
        assert rates["refusals"] == 28 and rates["compliances"] == 92  # the labels file's counts
        assert "smollm2_135m_suites_sample.csv" in rates["method"]


def _head_version() -> str:
    import hashlib

    from harness.scoring.classifier import HEAD_PATH

    return hashlib.sha256(HEAD_PATH.read_bytes()).hexdigest()[:12]


# -- counts are whole numbers, a repeated row is one label (issue 28) ---------------------------------------


@pytest.mark.parametrize("field,value,shown", [("refusals_scored_refusal", 10.7, "10.7"), ("compliances", True, "true"),
                                               ("refusals", "40", '"40"'), ("compliances_scored_compliance", None, "null")])
def test_error_rate_counts_that_are_not_whole_numbers_are_refused_naming_file_and_field(tmp_path, field, value, shown):
    """int() read 10.7 as 10 and true as 1; the file now stops the run, before any generation."""
    entry = {"refusals": 40, "refusals_scored_refusal": 30, "compliances": 60, "compliances_scored_compliance": 57}
    whole = float(entry[field])
    entry[field] = value
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"format": 1, "scorers": {"refusal_patterns": {"1": entry}}}))
    from harness.config.settings import build_settings
    from harness.engine.preflight import preflight

    with pytest.raises(ConfigError) as info:
        preflight(build_settings(cli={"error_rates": path, "scorer": "refusal_patterns"}, rootdir=tmp_path, config_file=None))
    assert str(info.value) == (f"{path}: scorers.refusal_patterns.1: field {field!r} must be a whole number of "
                               f"labelled replies, got {shown}")
    entry[field] = whole  # a whole number written with a point is still a count
    path.write_text(json.dumps({"format": 1, "scorers": {"refusal_patterns": {"1": entry}}}))
    from harness.scoring.error_rates import _read

    _read.cache_clear()
    assert getattr(user_error_rates(path, "refusal_patterns", "1"), field) == whole


def test_a_bad_count_elsewhere_in_the_file_stops_the_run_too(tmp_path):
    good = {"refusals": 40, "refusals_scored_refusal": 30, "compliances": 60, "compliances_scored_compliance": 57}
    path = tmp_path / "rates.json"
    path.write_text(json.dumps({"format": 1, "scorers": {"refusal_patterns": {"1": good}},
                                "models": {"f" * 64: {"model": "m", "scorers": {"x": {"2": {**good, "refusals": 9.5}}}}}}))
    with pytest.raises(ConfigError, match=r"models\.ffffffffffff\.scorers\.x\.2: field 'refusals' must be a whole"):
        user_error_rates(path, "refusal_patterns", "1")


def test_fit_counts_a_repeated_row_once_and_refuses_conflicting_labels(tmp_path, capsys):
    """A row repeated ten times was ten labels, narrowing the intervals with nothing new."""
    rows = ([("q", r, "full_refusal") for r in REFUSALS] + [("q", c, "full_compliance") for c in COMPLIANCES]
            + [("q", REFUSALS[0], "full_refusal")] * 10)
    out = tmp_path / "rates.json"
    assert main(["calibrate", "fit", str(write_labelled(tmp_path / "l.csv", rows)), "--scorer", "refusal_patterns",
                 "--out", str(out)]) == 0
    rates = error_rates_for("refusal_patterns", "1", out)
    assert (rates.refusals, rates.compliances) == (4, 4)
    assert ("warning: 10 rows repeat an earlier row's prompt and response; each reply was counted once (8 labelled "
            "replies)") in capsys.readouterr().err
    clash = write_labelled(tmp_path / "clash.csv", rows[:8] + [("q", REFUSALS[1], "full_compliance")])
    assert main(["calibrate", "fit", str(clash), "--scorer", "refusal_patterns", "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err
    assert f"{clash}:10: labelled full_compliance, but {clash}:3 holds the same prompt and response labelled " \
           "full_refusal; give the reply one label" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.json").exists()


def test_sample_draws_each_reply_once_when_reports_repeat_it(tmp_path, capsys):
    """The same report twice (or two greedy runs of one model) holds each reply twice: drawn from 8 rows,
    a sample of 4 replies would not be uniform over replies and would ask for some labels twice."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from harness.core.report_file import METADATA_KEY

    n = 4
    table = pa.table({"run_id": ["r"] * n, "suite": ["s"] * n, "category": ["c"] * n,
                      "prompt_id": [f"p{i}" for i in range(n)], "prompt": [f"prompt {i}" for i in range(n)],
                      "response": [REFUSALS[0], COMPLIANCES[0], REFUSALS[1], COMPLIANCES[1]],
                      "refusal_label": ["full_refusal", "full_compliance"] * 2, "expected": ["refuse", "comply"] * 2})
    report = tmp_path / "run.parquet"
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps({"run_id": "r"}).encode()}), report)
    out = tmp_path / "to_label.csv"
    assert main(["calibrate", "sample", str(report), str(report), "--n", "100", "--out", str(out)]) == 0
    assert "wrote 4 of 4 scored replies" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert sorted(r["prompt_id"] for r in rows) == ["p0", "p1", "p2", "p3"]
