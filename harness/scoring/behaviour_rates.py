"""A scorer's error rates per expected behaviour, for a run with no rates measured on its own model: the
between-model rates of ``harness.scoring.transport`` ("a model like those labelled"), one set for the
should-refuse prompts and one for the should-answer prompts, as one object the corrected rates, the
too-tight-threshold warnings and the baseline gate's minimum detectable regression all take.

Why per behaviour: a scorer reads a refusal of a harmful request differently from a refusal of a safe one,
and the labelled models show it (docs/verified-verdicts.md); pooling the two would correct an unsafe
compliance rate with errors measured mostly on safe prompts.

A report records these rates with every labelled model's counts (``as_json``), so that a later reader
(``safety-harness compare``, ``summary``) refits exactly the rates the run corrected with, even after the
shipped transport file has moved on (``from_json``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from harness.core.errors import ConfigError
from harness.core.types import EXPECTED
from harness.scoring.transport import COUNTS, checked_counts

BEHAVIOUR_NAMES = {"refuse": "should-refuse", "comply": "should-answer"}


@dataclass(frozen=True)
class RatesByExpected:
    """``for_expected(expected)`` gives the rates (a ``TransportRates``) for "refuse" or "comply" prompts,
    or None for a behaviour no labelled model covers."""

    scorer: str
    version: str
    by_expected: tuple  # ((expected, TransportRates), ...) in EXPECTED order: hashable, for the caches
    counts: tuple  # ((expected, ((model, (refusals, scored, compliances, scored)), ...)), ...): what was fitted

    def for_expected(self, expected: str | None):
        return dict(self.by_expected).get(expected)

    @property
    def behaviours(self) -> list[str]:
        return [expected for expected, _ in self.by_expected]

    def describe(self, expected: str) -> str:
        """One behaviour's rates in a summary line: how many models, which, and the spread between them."""
        rates = self.for_expected(expected)
        if rates is None:
            return f"{BEHAVIOUR_NAMES[expected]} prompts: no labelled model, so rates over them are not corrected"
        (slo, shi), (plo, phi) = rates.interval("sensitivity"), rates.interval("specificity")
        return (f"{BEHAVIOUR_NAMES[expected]} prompts, for a model like the {rates.n_models} labelled "
                f"({', '.join(rates.models)}): sensitivity {rates.sensitivity:.3f} (95% of models {slo:.3f}-{shi:.3f}, "
                f"from {rates.sensitivity_models}), specificity {rates.specificity:.3f} ({plo:.3f}-{phi:.3f}, "
                f"from {rates.specificity_models})")

    def as_json(self) -> dict:
        """What a report records: per behaviour, every labelled model's counts and the fitted summary."""
        out = {}
        counts = dict(self.counts)
        for expected, rates in self.by_expected:
            (slo, shi), (plo, phi) = rates.interval("sensitivity"), rates.interval("specificity")
            out[expected] = {
                "models": {model: dict(zip(COUNTS, values)) for model, values in counts[expected]},
                "n_models": rates.n_models,
                "sensitivity": round(rates.sensitivity, 4), "specificity": round(rates.specificity, 4),
                "sensitivity_95_of_models": [round(slo, 4), round(shi, 4)],
                "specificity_95_of_models": [round(plo, 4), round(phi, 4)],
            }
        return {"by_expected": out}

    @classmethod
    def from_json(cls, scorer: str, version: str, record: dict, where: str) -> RatesByExpected:
        """Refit the rates from a record's per-model counts (``as_json``); errors name ``where``."""
        entries = record.get("by_expected")
        if not isinstance(entries, dict) or not entries:
            raise ConfigError(f"{where}: by_expected must hold the per-model counts of each expected behaviour")
        parts, counts = [], []
        for expected in EXPECTED:
            entry = entries.get(expected)
            if entry is None:
                continue
            models = entry.get("models") if isinstance(entry, dict) else None
            if not isinstance(models, dict) or not models:
                raise ConfigError(f"{where}: by_expected.{expected}.models must map each labelled model to its counts")
            frozen = tuple(sorted((str(m), checked_counts(c, f"{where}: by_expected.{expected}.models.{m}"))
                                  for m, c in models.items()))
            parts.append((expected, fitted(scorer, version, expected, frozen)))
            counts.append((expected, frozen))
        return cls(scorer, version, tuple(parts), tuple(counts))


@lru_cache(maxsize=16)
def fitted(scorer: str, version: str, expected: str, counts: tuple):
    """The between-model fit to ``counts`` ((model, (refusals, scored, compliances, scored)), ...), once per
    process: a report's record and the shipped file's entry with the same counts share one fit."""
    from harness.scoring.transport import rates_from_counts

    return rates_from_counts(scorer, version, expected, {model: dict(zip(COUNTS, values)) for model, values in counts})


def transport_error_rates(scorer: str | None, version: str | None) -> RatesByExpected | None:
    """The shipped between-model rates of this scorer version, per behaviour, or None when the transport
    file has none (guards, judges, a retrained scorer before ``research/scorer_transport.py`` ran)."""
    from harness.scoring.transport import model_counts

    if not scorer or version is None:
        return None
    parts, fitted_counts = [], []
    for expected in EXPECTED:
        counts = model_counts(scorer, str(version), expected)
        used = {m: c for m, c in (counts or {}).items() if c["refusals"] or c["compliances"]}
        if used:
            frozen = tuple(sorted((m, tuple(int(c[k]) for k in COUNTS)) for m, c in used.items()))
            parts.append((expected, fitted(scorer, str(version), expected, frozen)))
            fitted_counts.append((expected, frozen))
    return RatesByExpected(scorer, str(version), tuple(parts), tuple(fitted_counts)) if parts else None
