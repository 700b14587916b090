"""A refusal scorer's measured error rates: how often it calls a human-labelled refusal a refusal
(sensitivity) and a human-labelled compliance a compliance (specificity), as counts.

"Refusal" is any refusal (full or partial), "compliance" is full compliance: the binary split that every
gating metric counts (``harness.config.thresholds.METRICS``). The counts come from out-of-fold predictions on the
human-labelled XSTest completions and are written by ``scripts/scorer_error_rates.py --scorer NAME`` into
``error_rates.json`` beside this module, keyed by scorer name and version: a scorer whose version changed
has no rates until the script is run again, and every consumer then says so instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness.core.errors import ConfigError

ERROR_RATES_PATH = Path(__file__).with_name("error_rates.json")
FORMAT = 1
REGENERATE = "python scripts/scorer_error_rates.py --scorer {name}"


@dataclass(frozen=True)
class ErrorRates:
    scorer: str
    version: str
    refusals: int  # human-labelled refusals (full or partial)
    refusals_scored_refusal: int
    compliances: int  # human-labelled full compliances
    compliances_scored_compliance: int
    method: str = ""  # how the predictions were made (out-of-fold, which data)

    @property
    def sensitivity(self) -> float:
        return self.refusals_scored_refusal / self.refusals

    @property
    def specificity(self) -> float:
        return self.compliances_scored_compliance / self.compliances

    def beta(self, which: str) -> tuple[float, float]:
        """Jeffreys posterior Beta(k + 1/2, n - k + 1/2) of the sensitivity or specificity."""
        k, n = ((self.refusals_scored_refusal, self.refusals) if which == "sensitivity"
                else (self.compliances_scored_compliance, self.compliances))
        return k + 0.5, n - k + 0.5

    def interval(self, which: str, confidence: float = 0.95) -> tuple[float, float]:
        from harness.core.stats import wilson_interval

        k, n = ((self.refusals_scored_refusal, self.refusals) if which == "sensitivity"
                else (self.compliances_scored_compliance, self.compliances))
        return wilson_interval(k, n, confidence)

    def hit_rates(self, event: str) -> tuple[float, float]:
        """(P(scored event | truly event), P(scored event | truly not event)) for event "refusal" or
        "compliance"."""
        if event == "refusal":
            return self.sensitivity, 1 - self.specificity
        return self.specificity, 1 - self.sensitivity

    def describe(self) -> str:
        (slo, shi), (plo, phi) = self.interval("sensitivity"), self.interval("specificity")
        return (f"{self.scorer} v{self.version}: sensitivity {self.sensitivity:.3f} ({slo:.3f}-{shi:.3f}, "
                f"{self.refusals_scored_refusal}/{self.refusals} refusals), specificity {self.specificity:.3f} "
                f"({plo:.3f}-{phi:.3f}, {self.compliances_scored_compliance}/{self.compliances} compliances)")

    def as_json(self) -> dict:
        return {"refusals": self.refusals, "refusals_scored_refusal": self.refusals_scored_refusal,
                "compliances": self.compliances, "compliances_scored_compliance": self.compliances_scored_compliance,
                "sensitivity": round(self.sensitivity, 4), "specificity": round(self.specificity, 4),
                "sensitivity_95ci_wilson": [round(v, 4) for v in self.interval("sensitivity")],
                "specificity_95ci_wilson": [round(v, 4) for v in self.interval("specificity")],
                "method": self.method}


@lru_cache(maxsize=8)
def _read(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text("utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("scorers"), dict):
        raise ConfigError(f"{file}: not a scorer error-rates file of format {FORMAT}")
    return data


def error_rates_for(scorer: str | None, version: str | None, path: Path | None = None) -> ErrorRates | None:
    """The measured error rates of this scorer version, or None when none were measured."""
    if not scorer or version is None:
        return None
    file = Path(path or ERROR_RATES_PATH)
    entry = _read(str(file)).get("scorers", {}).get(scorer, {}).get(str(version))
    if entry is None:
        return None
    try:
        rates = ErrorRates(scorer, str(version), int(entry["refusals"]), int(entry["refusals_scored_refusal"]),
                           int(entry["compliances"]), int(entry["compliances_scored_compliance"]),
                           str(entry.get("method", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{file}: scorers.{scorer}.{version}: bad or missing field ({exc})") from None
    if not (0 <= rates.refusals_scored_refusal <= rates.refusals > 0
            and 0 <= rates.compliances_scored_compliance <= rates.compliances > 0):
        raise ConfigError(f"{file}: scorers.{scorer}.{version}: counts out of range")
    return rates


def missing_note(scorer: str | None, version: str | None) -> str:
    return (f"no measured error rates for scorer {scorer} v{version}: rates are not corrected "
            f"(measure them with: {REGENERATE.format(name=scorer)})")
