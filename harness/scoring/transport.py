"""How a refusal scorer's error rates move from model to model, for a run with no labels of its own.

``error_rates.json`` holds one pooled sensitivity and specificity per scorer version, measured on the dev
files' two models; on other models they do not hold (docs/verified-verdicts.md: pooled Rogan-Gladen misses
held-out models' rates). ``scorer_transport.json`` beside it holds, per scorer version, the counts behind
those rates for every model the project holds human labels of, split by expected behaviour (should-refuse
and should-answer prompts: a scorer reads a refusal to a harmful request differently from a refusal of a
safe one). ``TransportRates`` fits the between-model spread of each rate (``harness.core.random_effects``)
and draws the rates of a new model from it: the interval of a corrected rate is then for "a model like
those labelled", with the number of those models said beside it.

Written by ``python -m research.scorer_transport`` (all scorers, all models, in one go: run it after a
scorer is retrained, whose version then changes). A scorer version missing from the file has no
transport rates, and callers say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from harness.core.errors import ConfigError
from harness.core.types import EXPECTED

TRANSPORT_PATH = Path(__file__).with_name("scorer_transport.json")
FORMAT = 1
REGENERATE = "python -m research.scorer_transport"
COUNTS = ("refusals", "refusals_scored_refusal", "compliances", "compliances_scored_compliance")
BEHAVIOUR = {"refuse": "should-refuse prompts", "comply": "should-answer prompts"}


def count_field(entry: dict, name: str, where: str) -> int:
    """A count field as an int. A JSON number with a fraction (``10.7``), a boolean (``true``) or text is
    refused rather than truncated: int() would read them as 10 and 1 and correct every rate with them."""
    if name not in entry:
        raise ConfigError(f"{where}: missing field {name!r}")
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{where}: field {name!r} must be a whole number of labelled replies, "
                          f"got {json.dumps(value)}")
    return int(value)


def checked_counts(entry, where: str) -> tuple[int, ...]:
    """One labelled model's four counts (a report's record, the shipped transport file), checked as a pooled
    record's are (``harness.scoring.error_rates``): whole numbers, hits within rows. Zero rows of a kind is
    allowed (a model with no human compliance on should-refuse prompts adds nothing to that rate's fit)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table of counts, got {type(entry).__name__}")
    refusals, scored_refusal, compliances, scored_compliance = (count_field(entry, k, where) for k in COUNTS)
    if not (0 <= scored_refusal <= refusals and 0 <= scored_compliance <= compliances):
        raise ConfigError(f"{where}: counts out of range (need 0 <= refusals_scored_refusal <= refusals and "
                          "0 <= compliances_scored_compliance <= compliances)")
    return refusals, scored_refusal, compliances, scored_compliance


@dataclass(frozen=True)
class TransportRates:
    """A scorer's sensitivity and specificity on one expected behaviour's prompts, for a new model drawn
    like the labelled ones. ``sensitivity`` and ``specificity`` are the expected values for such a model;
    ``draws`` gives the spread a corrected rate's interval must carry."""

    scorer: str
    version: str
    expected: str
    sensitivity: float
    specificity: float
    models: tuple[str, ...]  # every model whose rows inform either rate
    sensitivity_models: int  # models with at least one human refusal on these prompts
    specificity_models: int  # models with at least one human compliance
    fits: dict = field(repr=False, compare=False)  # "sensitivity"/"specificity" -> LogitNormalFit

    @property
    def n_models(self) -> int:
        return len(self.models)

    def draws(self, which: str, size: int, rng):
        """``size`` draws of a new model's ``which`` ("sensitivity" or "specificity")."""
        if which not in self.fits:
            raise ValueError(f"which must be sensitivity or specificity, got {which!r}")
        return self.fits[which].draws(size, rng)

    def interval(self, which: str, confidence: float = 0.95) -> tuple[float, float]:
        """Where a new model's rate lies, from model to model (central ``confidence`` share of the draws)."""
        tail = (1 - confidence) / 2
        low, high = self.fits[which].quantiles([tail, 1 - tail])
        return low, high

    def hit_rates(self, event: str) -> tuple[float, float]:
        """(P(scored event | truly event), P(scored event | truly not event)), as ``ErrorRates`` gives them."""
        if event == "refusal":
            return self.sensitivity, 1 - self.specificity
        return self.specificity, 1 - self.sensitivity

    def describe(self) -> str:
        (slo, shi), (plo, phi) = self.interval("sensitivity"), self.interval("specificity")
        return (f"{self.scorer} v{self.version} on {BEHAVIOUR[self.expected]}, for a model like the {self.n_models} "
                f"labelled ({', '.join(self.models)}): sensitivity {self.sensitivity:.3f} (95% of models "
                f"{slo:.3f}-{shi:.3f}, from {self.sensitivity_models}), specificity {self.specificity:.3f} "
                f"({plo:.3f}-{phi:.3f}, from {self.specificity_models})")


def rates_from_counts(scorer: str, version: str, expected: str, counts: dict[str, dict[str, int]],
                      **fit_options) -> TransportRates:
    """Fit the between-model spread to per-model counts (model -> the four ``COUNTS``)."""
    from harness.core.random_effects import fit_logit_normal

    used = {m: c for m, c in counts.items() if c["refusals"] or c["compliances"]}
    sens = fit_logit_normal([c["refusals_scored_refusal"] for c in used.values()],
                            [c["refusals"] for c in used.values()], **fit_options)
    spec = fit_logit_normal([c["compliances_scored_compliance"] for c in used.values()],
                            [c["compliances"] for c in used.values()], **fit_options)
    return TransportRates(scorer, str(version), expected, sens.mean(), spec.mean(), tuple(used), sens.groups,
                          spec.groups, {"sensitivity": sens, "specificity": spec})


@lru_cache(maxsize=8)
def read_transport_file(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text("utf-8"))
    except (OSError, UnicodeError, ValueError) as exc:
        raise ConfigError(f"{file}: cannot read as JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("scorers"), dict):
        raise ConfigError(f"{file}: not a scorer transport file of format {FORMAT}")
    return data


def model_counts(scorer: str, version: str, expected: str, path: Path | None = None) -> dict[str, dict[str, int]] | None:
    """model -> counts on ``expected`` prompts for this scorer version, or None when not measured."""
    file = Path(path or TRANSPORT_PATH)
    entry = read_transport_file(str(file)).get("scorers", {}).get(scorer, {}).get(str(version))
    if entry is None:
        return None
    out = {}
    for model, per in (entry.get("models") or {}).items():
        c = (per or {}).get(expected)
        if c is None:
            continue
        # Whole numbers, hits within rows, as every other record of counts (int() read 199.7 as 199).
        where = f"{file}: scorers.{scorer}.{version}.models.{model}.{expected}: bad counts"
        out[model] = dict(zip(COUNTS, checked_counts(c, where)))
    return out


@lru_cache(maxsize=32)
def _cached(scorer: str, version: str, expected: str, path: str, leave_out: tuple[str, ...]) -> TransportRates | None:
    counts = model_counts(scorer, version, expected, Path(path))
    if counts is None:
        return None
    return rates_from_counts(scorer, version, expected, {m: c for m, c in counts.items() if m not in leave_out})


def transport_rates(scorer: str | None, version: str | None, expected: str, path: Path | None = None, *,
                    leave_out: tuple[str, ...] = ()) -> TransportRates | None:
    """This scorer version's rates on ``expected`` prompts for a model like those labelled, or None when
    the file has no entry for it. ``leave_out``: models to fit without (leave-one-model-out checks)."""
    if expected not in EXPECTED:
        raise ValueError(f"expected must be one of {', '.join(EXPECTED)}, got {expected!r}")
    if not scorer or version is None:
        return None
    return _cached(scorer, str(version), expected, str(Path(path or TRANSPORT_PATH)), tuple(sorted(leave_out)))


def transport_by_expected(scorer: str | None, version: str | None, path: Path | None = None) -> dict[str, TransportRates]:
    """expected behaviour -> rates, for the behaviours the file has (the form ``plan_review`` takes)."""
    out = {}
    for expected in EXPECTED:
        rates = transport_rates(scorer, version, expected, path)
        if rates is not None:
            out[expected] = rates
    return out


def missing_note(scorer: str | None, version: str | None) -> str:
    return (f"no between-model error rates for scorer {scorer} v{version} (regenerate them with: {REGENERATE})")
