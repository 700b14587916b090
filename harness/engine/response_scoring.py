"""Scoring responses: refusal labels, then harm scores (which may read the labels), by the scorers the settings
name. The pytest session and ``safety-harness score`` both score through this, so model-backed scorers
(``costly = True``: judges, reward models) go through the cache's scores table in both: a re-run, or a second
xdist worker, loads no judge for what is already scored."""

from __future__ import annotations

from dataclasses import astuple

from harness.core.types import RefusalScore
from harness.scoring.harm import HarmScore


class ResponseScoring:
    def __init__(self, plan, *, refusal=None, harm="from settings"):
        """The scorers are built from the run plan's scorer options (harness.engine.preflight) unless given
        (``harm=None``: no harm scores)."""
        from harness.scoring.factory import build_harm_scorer, build_refusal_scorer, check_one_judge_model

        self.settings = plan.settings
        if harm == "from settings":  # one --judge-model read in one format, before either scorer loads a model
            check_one_judge_model(plan.scorer_options)
        self.refusal = refusal if refusal is not None else build_refusal_scorer(plan.scorer_options)
        self.harm = build_harm_scorer(plan.scorer_options) if harm == "from settings" else harm

    def score_refusals(self, questions: list[str], texts: list[str]) -> list[RefusalScore]:
        scorer = self.refusal
        return self._through_cache(scorer, [("refusal", q, t) for q, t in zip(questions, texts)],
                                   lambda idx: scorer.score([questions[i] for i in idx], [texts[i] for i in idx]),
                                   RefusalScore)

    def score_harm(self, questions: list[str], texts: list[str], expected: list | None,
                   labels: list[str]) -> list[HarmScore | None]:
        scorer = self.harm
        if scorer is None:
            return [None] * len(texts)
        exp = expected if expected is not None else [None] * len(texts)
        return self._through_cache(
            scorer, [("harm", q, t, e, lab) for q, t, e, lab in zip(questions, texts, exp, labels)],
            lambda idx: scorer.score([questions[i] for i in idx], [texts[i] for i in idx],
                                     expected=None if expected is None else [expected[i] for i in idx],
                                     refusal_labels=[labels[i] for i in idx]),
            HarmScore)

    def score(self, questions: list[str], texts: list[str],
              expected: list | None) -> tuple[list[RefusalScore], list[HarmScore | None]]:
        scores = self.score_refusals(questions, texts)
        return scores, self.score_harm(questions, texts, expected, [s.label for s in scores])

    def _through_cache(self, scorer, inputs: list[tuple], call, build) -> list:
        """Rule-based scorers cost less than the cache lookup and are called directly."""
        if not getattr(scorer, "costly", False):
            return call(list(range(len(inputs))))
        from harness.engine.cache import GenerationCache, cached_values, stable_hash

        cache = None if self.settings.no_cache else GenerationCache(self.settings.cache_dir)
        keys = [stable_hash(scorer.name, scorer.version, *parts) for parts in inputs]
        values, _ = cached_values(cache, keys, lambda idx: [list(astuple(s)) for s in call(idx)],
                                  what=f"scores {scorer.name}")
        return [build(*v) for v in values]
