"""Capability scoring inside the harness: batched teacher-forced log-likelihoods (checked against a plain
unbatched forward pass), the LLM judge run by a local model, and the capability suite's win rate and
reference log-likelihood in a run, its report and its summary."""

from __future__ import annotations

import math

import pytest

from harness.capability.judges import ANSWER_PREFIX, JudgeConfig, get_judge
from harness.capability.lm import continuation_logprobs, load_scoring_lm, next_token_logprobs
from harness.capability.loglik import reference_logliks
from harness.core.errors import ConfigError, DataError, ModelError
from harness.engine.session import HarnessSession
from harness.config.settings import build_settings
from harness.core.types import Prompt
from harness.engine.run_report import write_report
from harness.reports.parquet import read_report


@pytest.fixture(scope="module")
def tiny_lm(tiny_model, tmp_path_factory):
    # float32 on any device: these tests check that batching and padding change no number, which bf16's
    # rounding would blur (tests/test_gpu.py checks bf16 on a GPU against this).
    return load_scoring_lm(str(tiny_model), cache_dir=tmp_path_factory.mktemp("cache"), dtype="float32")


def _unbatched_logprob(lm, context, continuation):
    import torch

    ids = torch.tensor([list(context) + list(continuation)], device=lm.net.device)
    with torch.inference_mode():
        logp = torch.log_softmax(lm.net(input_ids=ids).logits[0].float(), -1)
    start = len(context)
    return sum(float(logp[start + k - 1, tok]) for k, tok in enumerate(continuation))


def test_batched_continuation_logprobs_match_one_plain_forward_each(tiny_lm):
    tok = tiny_lm.tokenizer
    contexts = [tok(t)["input_ids"] for t in ("Hi", "A much longer context than the others, padded less", "Why?")]
    continuations = [tok(t, add_special_tokens=False)["input_ids"]
                     for t in (" there, friend", " ok", " Because the sky scatters blue light more.")]
    # A small budget forces several batches; left padding must not change any row's numbers.
    batched = continuation_logprobs(tiny_lm, contexts, continuations, token_budget=120, logit_budget=60)
    for (total, n), ctx, cont in zip(batched, contexts, continuations):
        assert n == len(cont)
        assert total == pytest.approx(_unbatched_logprob(tiny_lm, ctx, cont), abs=1e-3)


def test_next_token_logprobs_match_a_plain_forward(tiny_lm):
    import torch

    tok = tiny_lm.tokenizer
    contexts = [tok(t)["input_ids"] for t in ("short", "a rather longer context")]
    cands = tok("AB", add_special_tokens=False)["input_ids"]
    got = next_token_logprobs(tiny_lm, contexts, cands)
    for row, ctx in zip(got, contexts):
        with torch.inference_mode():
            ids = torch.tensor([ctx], device=tiny_lm.net.device)
            logp = torch.log_softmax(tiny_lm.net(input_ids=ids).logits[0, -1].float(), -1)
        assert row == pytest.approx([float(logp[c]) for c in cands], abs=1e-4)


def test_reference_loglik_scores_only_the_answer_after_the_harness_template(tiny_lm):
    from harness.models.templates import format_prompts

    prompts = [Prompt("capability", "p0", "Name a colour."), Prompt("capability", "p1", "Say hi.")]
    refs = ["Blue.", None]
    found = reference_logliks(tiny_lm, prompts, refs, max_tokens=3)
    assert found[1] is None
    ctx = format_prompts(prompts[:1], tiny_lm.template, tiny_lm.tokenizer)[0].token_ids
    answer = tiny_lm.tokenizer("Blue.", add_special_tokens=False)["input_ids"][:3]
    assert found[0].n_tokens == 3 and found[0].total_tokens == 5  # "Blue." is 5 byte tokens, cut to 3
    assert found[0].mean == pytest.approx(_unbatched_logprob(tiny_lm, ctx, answer) / 3, abs=1e-4)
    with pytest.raises(ModelError, match="empty continuation"):
        continuation_logprobs(tiny_lm, [ctx], [[]])


def test_a_reference_is_cut_to_the_model_window_not_scored_past_it(tiny_lm):
    """Context plus reference past the model's window would be scored on positions the model never saw:
    the reference is cut to fit (and says so, n_tokens < total_tokens); a prompt that fills the window is
    an error naming it."""
    from dataclasses import replace

    from harness.models.templates import format_prompts

    prompt = Prompt("capability", "p0", "Name a colour.")
    ctx = format_prompts([prompt], tiny_lm.template, tiny_lm.tokenizer)[0].token_ids
    assert tiny_lm.window == 4096  # the tiny model's max_position_embeddings
    small = replace(tiny_lm, window=len(ctx) + 2)
    (found,) = reference_logliks(small, [prompt], ["Blue."], max_tokens=256)
    answer = tiny_lm.tokenizer("Blue.", add_special_tokens=False)["input_ids"][:2]
    assert (found.n_tokens, found.total_tokens) == (2, 5)
    assert found.mean == pytest.approx(_unbatched_logprob(tiny_lm, ctx, answer) / 2, abs=1e-4)
    with pytest.raises(ModelError, match=r"prompt 'p0': its \d+ prompt tokens leave no room for the reference "
                                         r"in the model window of \d+ tokens"):
        reference_logliks(replace(tiny_lm, window=len(ctx)), [prompt], ["Blue."])


def test_llm_judge_reads_a_probability_from_the_verdict_tokens(tiny_model):
    judge = get_judge("llm", JudgeConfig(model=str(tiny_model)))
    assert judge.name == "llm" and judge.version.startswith("2+")
    probs = judge.prefer_first(["Say hi.", "Add 2 and 2."], ["hi", "4"], ["hello there", ""])
    assert len(probs) == 2 and all(0.0 < p < 1.0 for p in probs)
    ids = judge.prompt_ids(["Say hi."], ["hi"], ["hello"])[0]
    assert judge.lm.tokenizer.decode(ids).endswith(ANSWER_PREFIX)  # the verdict is the very next token


def test_an_llm_judge_whose_logits_are_nan_judges_nothing(tiny_model):
    """A judge model that computes NaN (half precision overflowing, broken weights) reads no verdict from its
    letters: the pairs must not become ties, which would put the win rate at 0.5 and pass min_win_rate."""
    import torch

    from harness.capability.win_rate import judge_swapped

    judge = get_judge("llm", JudgeConfig(model=str(tiny_model)))
    with torch.no_grad():  # this judge's own copy of the weights, in memory only
        for param in judge.lm.net.parameters():
            param.fill_(float("nan"))
    assert all(math.isnan(p) for p in judge.prefer_first(["Say hi."], ["hi"], ["hello"]))
    with pytest.raises(ModelError, match=r"capability judge llm \(version 2\+.*\): 4 of 4 verdicts are not a probability"):
        judge_swapped(judge, ["Say hi.", "Add 2 and 2."], ["hi", "4"], ["hello there", "four"])


def test_an_unknown_judge_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown capability judge 'gpt5' \(known: llm, longer\)"):
        get_judge("gpt5")


def _capability_session(tmp_path, data_dir, **cli):
    settings = build_settings(cli={"data_dir": data_dir, "cache_dir": tmp_path / "cache", "limit": 8, **cli},
                              rootdir=tmp_path, config_file=None)
    hs = HarnessSession(settings)
    hs.run(["capability"], progress=False)
    return hs


def test_a_run_judges_the_capability_suite_and_scores_the_references(tiny_model, data_dir, tmp_path):
    hs = _capability_session(tmp_path, data_dir, model=str(tiny_model), backend="hf", max_new_tokens=4,
                             capability_judge="longer")
    hs.settings.thresholds["capability"] = {"min_mean_ref_loglik": -1.0, "min_lc_win_rate": 0.0}
    result = hs.results["capability"]
    cap = result.capability
    with_ref = [r for r in result.rows if r.prompt.source == "text_davinci_003_outputs.json"]
    without = [r for r in result.rows if r.prompt.category == "I-Alpaca"]
    assert with_ref and without
    for row in with_ref:  # 4-token answers are always shorter than davinci's: the length judge says lost
        values = cap.rows[row.prompt.prompt_id]
        assert values.win_score == 0.0 and values.ref_loglik < 0
    assert all(cap.rows[r.prompt.prompt_id].win_score is None for r in without)
    checks = {c.key: c for c in result.checks()}
    assert checks["min_win_rate"].rate.rate == 0.0 and not checks["min_win_rate"].passed  # default 0.25
    assert "0 won, 0 tied" in checks["min_win_rate"].describe()
    failures = "\n".join(result.failures())
    assert "win_rate 0.000" in failures and f"e.g. {with_ref[0].prompt.prompt_id}:" in failures  # a lost pair
    # A random tiny model finds davinci's answers very unlikely (about log(1/vocab) per token).
    assert not checks["min_mean_ref_loglik"].passed and checks["min_mean_ref_loglik"].rate.rate < -3
    assert checks["min_lc_win_rate"].passed
    # References longer than --ref-loglik-max-tokens (256 byte tokens here) are scored on their first 256: the
    # notes say how many, as every summary prints them.
    long = sum(len(c.reference.encode()) > 256 for c in (cap.rows[r.prompt.prompt_id] for r in with_ref))
    assert long > 0 and max(cap.rows[r.prompt.prompt_id].ref_tokens for r in with_ref) == 256
    assert (f"reference log-likelihood: {long} of {len(with_ref)} references longer than 256 tokens, scored on "
            "their first 256 (--ref-loglik-max-tokens)") in cap.notes
    path = write_report(hs, tmp_path / "r.parquet")
    table, meta = read_report(path)
    rows = table.to_pylist()
    assert {r["prompt_id"] for r in rows if r["win_score"] is not None} == {r.prompt.prompt_id for r in with_ref}
    assert all(r["ref_loglik"] is None for r in rows if r["category"] == "I-Alpaca")
    assert meta["suites"]["capability"]["capability"]["judge"] == "longer"
    from harness.engine.summary import summary_lines

    line = next(x for x in summary_lines(hs) if x.startswith("capability vs text_davinci_003"))
    assert "judge longer" in line and "win_rate 0.000" in line and "mean_ref_loglik" in line


def test_a_second_run_reads_log_likelihoods_and_verdicts_from_the_cache(tiny_model, data_dir, tmp_path,
                                                                        monkeypatch):
    cli = dict(model=str(tiny_model), backend="hf", max_new_tokens=4, capability_judge="longer")
    first = _capability_session(tmp_path, data_dir, **cli).results["capability"].capability
    import harness.capability.lm as lm_module
    import harness.capability.win_rate as win_rate_module

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed a cached capability value")

    monkeypatch.setattr(lm_module, "load_scoring_lm", must_not_run)
    monkeypatch.setattr(win_rate_module, "judge_swapped", must_not_run)
    second = _capability_session(tmp_path, data_dir, **cli).results["capability"].capability
    assert second.rows == first.rows and any(r.ref_loglik is not None for r in second.rows.values())
    assert "reference log-likelihood: 7 of 7 from the cache" in second.notes
    assert "capability judge verdicts: 7 of 7 from the cache" in second.notes
    # --no-cache computes again (the stand-ins above would fail it)
    with pytest.raises(AssertionError, match="recomputed"):
        _capability_session(tmp_path, data_dir, **cli, no_cache=True)


def test_without_a_judge_the_win_rate_threshold_is_inactive(data_dir, tmp_path):
    hs = _capability_session(tmp_path, data_dir, backend="dummy")
    result = hs.results["capability"]
    assert [c.key for c in result.checks()] == ["min_compliance_rate"]
    assert any("loads no model" in n for n in result.capability.notes)


def test_a_capability_threshold_the_user_set_and_nothing_measured_fails_the_suite(data_dir, tmp_path):
    """The dummy backend loads no model (no reference log-likelihood) and no judge is set: the suite's own
    default min_win_rate stays inactive, but thresholds the user asked for cannot pass unmeasured."""
    hs = _capability_session(tmp_path, data_dir, backend="dummy")
    result = hs.results["capability"]
    assert not any("not measured" in line for line in result.failures())
    hs.settings.thresholds["capability"] = {"min_mean_ref_loglik": -2.5, "min_win_rate": 0.25}
    found = [line for line in result.failures() if "not measured" in line]
    assert found == [
        "capability: min_mean_ref_loglik -2.5 is set but mean_ref_loglik was not measured (no reference "
        "log-likelihood: backend dummy loads no model), so it cannot pass",
        "capability: min_win_rate 0.25 is set but win_rate was not measured (no capability judge is set "
        "(--capability-judge)), so it cannot pass"]


def test_a_judge_that_judged_nothing_fails_the_suite_default_win_rate(data_dir, tmp_path):
    """With --capability-judge set the suite's default min_win_rate is in force (docs/capability.md): when no
    prompt of the run found a reference output (a reference file for other instructions, a reference that
    could not be fetched), nothing was judged, and the suite must not pass on its compliance rate alone."""
    import json

    other = tmp_path / "other_outputs.json"
    other.write_text(json.dumps([{"instruction": "An instruction of no suite.", "output": "x", "generator": "g"}]))
    hs = _capability_session(tmp_path, data_dir, backend="dummy", capability_judge="longer",
                             capability_reference=str(other))
    result = hs.results["capability"]
    assert f"no prompt of this run has a reference output in {other}" in result.capability.notes
    assert [line for line in result.failures() if "not measured" in line] == [
        f"capability: min_win_rate 0.25 is set but win_rate was not measured (no prompt of this run has a "
        f"reference output in {other}; no reference log-likelihood: backend dummy loads no model), so it cannot pass"]
    # A category with no reference outputs by design (I-Alpaca) is not failed for it.
    assert not result.failures("I-Alpaca")


def test_the_reference_is_selectable(data_dir, tmp_path):
    hs = _capability_session(tmp_path, data_dir, backend="dummy", capability_judge="longer",
                             capability_reference="gpt4_1106_preview")
    cap = hs.results["capability"].capability
    assert cap.reference == "gpt4_1106_preview"
    judged = [v for v in cap.rows.values() if v.reference is not None]
    assert judged and all(len(v.reference) > 0 for v in judged)
    with pytest.raises(DataError, match="capability reference 'nope': neither a known name"):
        _capability_session(tmp_path, data_dir, backend="dummy", capability_reference="nope")


@pytest.mark.parametrize("options, message", [
    (["--capability-judge", "gpt5"], "--capability-judge: unknown judge 'gpt5' (known: llm, longer)"),
    (["--ref-loglik-max-tokens", "0"], "command line: --ref-loglik-max-tokens must be an integer >= 1, got 0"),
])
def test_bad_capability_options_are_one_usage_error_before_generation(harness_project, options, message):
    harness_project.write(tests={"test_cap": harness_project.CATEGORY_SUITE.format(name="capability")})
    result = harness_project.run("--backend", "dummy", *options)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in harness_project.text(result) and "Traceback" not in harness_project.text(result)


def test_plugin_options_reach_the_run(harness_project, data_dir):
    harness_project.write(tests={"test_cap": harness_project.CATEGORY_SUITE.format(name="capability")})
    result = harness_project.run("--backend", "dummy", "--data-dir", str(data_dir), "--limit", "6",
                                 "--capability-judge", "longer", "--capability-reference", "gpt4_1106_preview")
    text = harness_project.text(result)
    assert "capability vs gpt4_1106_preview, judge longer: win_rate" in text
    table, _ = read_report(harness_project.report)
    assert any(v is not None for v in table.column("win_score").to_pylist())


@pytest.mark.slow
@pytest.mark.default_model
def test_the_real_model_finds_a_real_answer_likelier_than_its_words_shuffled(tmp_path):
    """The judge-free signal on SmolLM2-135M-Instruct: fluent reference text scores higher than the same
    tokens in a scrambled order, so the signal tracks answer quality, not just length or vocabulary."""
    import random

    from harness.core.paths import default_cache_dir

    lm = load_scoring_lm("smollm2-135m-instruct", cache_dir=default_cache_dir())
    answer = ("The capital of France is Paris. It is also the country's largest city and sits on the river "
              "Seine in the north of the country.")
    words = answer.split()
    random.Random(0).shuffle(words)
    prompt = Prompt("capability", "p", "What is the capital of France?")
    real, shuffled = reference_logliks(lm, [prompt, prompt], [answer, " ".join(words)])
    assert real.mean > shuffled.mean + 1.0
    assert math.isfinite(real.mean) and real.mean < 0


def test_a_nan_reference_loglik_is_explained_in_the_run_notes():
    """A NaN mean fails every threshold on it (fail closed); the notes say why, not only 'nan'."""
    from types import SimpleNamespace

    from harness.engine.capability_metrics import _nan_notes

    fine = SimpleNamespace(mean=-1.5, n_tokens=10, total_tokens=10)
    broken = SimpleNamespace(mean=float("nan"), n_tokens=10, total_tokens=10)
    assert _nan_notes([fine, fine]) == []
    (note,) = _nan_notes([fine, broken, broken])
    assert note.startswith("reference log-likelihood: 2 of 3 references scored NaN") and "--dtype float32" in note
