"""A refusal scorer's measured error rates: how often it calls a human-labelled refusal a refusal
(sensitivity) and a human-labelled compliance a compliance (specificity), as counts.

"Refusal" is any refusal (full or partial), "compliance" is full compliance: the binary split that every
gating metric counts (``harness.config.thresholds.METRICS``). The counts come from out-of-fold predictions on the
human-labelled XSTest completions and are written by ``research/scorer_error_rates.py --scorer NAME`` into
``error_rates.json`` beside this module, keyed by scorer name and version: a scorer whose version changed
has no rates until the script is run again, and every consumer then says so instead of guessing.

Those rates were measured on two models' styles and transfer imperfectly to a third. A user can measure
them on their own model instead: ``safety-harness calibrate sample`` draws replies to label, ``calibrate
fit`` writes a file of the same format, and ``--error-rates FILE`` makes a run use it.

Which rates a run corrects with is decided here, in ``resolve_error_rates``, first match wins:

1. the user's ``--error-rates`` file (measured on this model's own replies);
2. the shipped rates measured on this very model (``error_rates.json``'s ``models.<fingerprint>``);
3. the scorer version's between-model rates, one set per expected behaviour (should-refuse, should-answer
   prompts): the rates of "a model like those labelled", whose spread from model to model the corrected
   intervals carry (``harness.scoring.behaviour_rates``);
4. the shipped pooled dev-file rates;
5. none (guards, judges): rates are not corrected, and the summary says so.

A run records the rates it used in its report (``error_rates_record``; for the between-model rates, every
labelled model's counts per behaviour), so a later ``compare`` of that report sizes its gate with the same
ones (``rates_from_record``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness.config.thresholds import rates_for_expected  # noqa: F401  (re-exported: one rule for both layers)
from harness.core.errors import ConfigError
from harness.scoring.behaviour_rates import BEHAVIOUR_NAMES, RatesByExpected, transport_error_rates  # noqa: F401
from harness.scoring.transport import COUNTS as COUNT_FIELDS, count_field as _count

ERROR_RATES_PATH = Path(__file__).with_name("error_rates.json")
FORMAT = 1
REGENERATE = "python -m research.scorer_error_rates --scorer {name}"
SHIPPED = "shipped"  # the source of rates read from ERROR_RATES_PATH's scorer entries (the dev files)
SHIPPED_FOR_MODEL = "shipped for this model"  # ERROR_RATES_PATH's entries for one model's fingerprint
TRANSPORT = "transport"  # the between-model rates per expected behaviour (harness.scoring.behaviour_rates)


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

    def draws(self, which: str, size: int, rng):
        """``size`` draws of the sensitivity or specificity from what is known of it (a numpy array), for the
        corrected rates (``harness.core.misclassification``): here the Jeffreys Beta of this scorer's own
        counts. Another model of the rates (e.g. a prior pooled across models) overrides this one method."""
        return rng.beta(*self.beta(which), size=size)

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

    @classmethod
    def from_labels(cls, scorer: str, version: str, gold: list[str], predicted: list[str], method: str = "") -> ErrorRates:
        """Counts from paired human and scorer labels (REFUSAL_LABELS): human full or partial refusals scored
        any refusal, human full compliances scored compliance."""
        refusals = [p for g, p in zip(gold, predicted) if g != "full_compliance"]
        compliances = [p for g, p in zip(gold, predicted) if g == "full_compliance"]
        return cls(scorer, str(version), len(refusals), sum(p != "full_compliance" for p in refusals),
                   len(compliances), sum(p == "full_compliance" for p in compliances), method)

    @classmethod
    def from_json(cls, scorer: str, version: str, entry: dict, where: str) -> ErrorRates:
        """An entry of an error-rates file (or of a report's metadata); counts checked, errors name ``where``."""
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table of counts, got {type(entry).__name__}")
        counts = [_count(entry, name, where) for name in COUNT_FIELDS]
        rates = cls(scorer, str(version), *counts, str(entry.get("method", "")))
        if not (0 <= rates.refusals_scored_refusal <= rates.refusals > 0
                and 0 <= rates.compliances_scored_compliance <= rates.compliances > 0):
            raise ConfigError(f"{where}: counts out of range (need 0 <= refusals_scored_refusal <= refusals > 0 "
                              "and 0 <= compliances_scored_compliance <= compliances > 0)")
        return rates

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
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{file}: cannot read ({exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("scorers"), dict):
        raise ConfigError(f"{file}: not a scorer error-rates file of format {FORMAT}")
    _check_entries(file, data)
    return data


def _check_entries(file: Path, data: dict) -> None:
    """Every entry's counts, on the first read: a bad count anywhere in the file stops the run before any
    generation (``check_user_file``), naming the file and the field, instead of when its scorer is looked up."""
    sections = [("scorers", data["scorers"])]
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{file}: models must be a table keyed by model fingerprint")
    for fingerprint, model in models.items():
        if not isinstance(model, dict) or not isinstance(model.get("scorers", {}), dict):
            raise ConfigError(f"{file}: models.{fingerprint[:12]} must hold a scorers table")
        sections.append((f"models.{fingerprint[:12]}.scorers", model.get("scorers", {})))
    for prefix, scorers in sections:
        for scorer, versions in scorers.items():
            if not isinstance(versions, dict):
                raise ConfigError(f"{file}: {prefix}.{scorer} must be a table keyed by scorer version")
            for version, entry in versions.items():
                ErrorRates.from_json(scorer, version, entry, f"{file}: {prefix}.{scorer}.{version}")


def error_rates_for(scorer: str | None, version: str | None, path: Path | None = None) -> ErrorRates | None:
    """The measured error rates of this scorer version, or None when none were measured."""
    if not scorer or version is None:
        return None
    file = Path(path or ERROR_RATES_PATH)
    entry = _read(str(file)).get("scorers", {}).get(scorer, {}).get(str(version))
    if entry is None:
        return None
    return ErrorRates.from_json(scorer, str(version), entry, f"{file}: scorers.{scorer}.{version}")


def model_error_rates(scorer: str | None, version: str | None, fingerprint: str | None,
                      path: Path | None = None) -> ErrorRates | None:
    """Rates measured on labelled replies of one model (the file's ``models.<fingerprint>`` entries, e.g. the
    embedded default model's), or None."""
    if not (scorer and version is not None and fingerprint):
        return None
    file = Path(path or ERROR_RATES_PATH)
    model = _read(str(file)).get("models", {}).get(fingerprint, {})
    entry = model.get("scorers", {}).get(scorer, {}).get(str(version))
    if entry is None:
        return None
    return ErrorRates.from_json(scorer, str(version), entry, f"{file}: models.{fingerprint[:12]}.{scorer}.{version}")


def check_user_file(path: Path, scorer: str) -> None:
    """Before a run: the file the user named exists, is an error-rates file and holds this scorer."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"error-rates file {file} not found (write one with: safety-harness calibrate fit)")
    if not _read(str(file))["scorers"].get(scorer):
        raise ConfigError(f"{file}: no error rates for scorer {scorer} (it holds: {_held(file)}); measure them "
                          f"with: safety-harness calibrate fit LABELLED --scorer {scorer} --out {file}")


def _held(file: Path) -> str:
    return ", ".join(f"{name} v{v}" for name, versions in _read(str(file))["scorers"].items() for v in versions) or "none"


def user_error_rates(path: Path, scorer: str | None, version: str | None) -> ErrorRates:
    """Rates from a file the user named (``--error-rates``): unlike the shipped file, a missing file or a
    missing entry for this scorer version is an error, since the user asked for these rates."""
    check_user_file(path, str(scorer))
    rates = error_rates_for(scorer, version, path)
    if rates is None:
        raise ConfigError(f"{path}: no error rates for scorer {scorer} v{version} (it holds: {_held(Path(path))}): "
                          "they were measured with another version of the scorer; measure again with: "
                          f"safety-harness calibrate fit LABELLED --scorer {scorer} --out {path}")
    return rates


def resolve_error_rates(scorer: str | None, version: str | None, path: Path | None = None,
                        model_fingerprint: str | None = None) -> tuple[ErrorRates | RatesByExpected | None, str]:
    """The rates a run corrects with, and their source, in the module's order: the user's file when one is
    named, else the shipped rates measured on this very model (by its fingerprint), else the between-model
    rates per expected behaviour, else the shipped dev-file rates (None when none were measured)."""
    if path is not None:
        return user_error_rates(path, scorer, version), str(path)
    own = model_error_rates(scorer, version, model_fingerprint)
    if own is not None:
        return own, SHIPPED_FOR_MODEL
    between = transport_error_rates(scorer, version)
    if between is not None:
        return between, TRANSPORT
    return error_rates_for(scorer, version), SHIPPED


def error_rates_record(scorer: str, version: str, path: Path | None = None,
                       model_fingerprint: str | None = None) -> dict | None:
    """The rates a run corrects with, as its report's metadata records them (``model.scorer_error_rates``)."""
    rates, source = resolve_error_rates(scorer, version, path, model_fingerprint)
    if rates is None:
        return None
    return {"scorer": rates.scorer, "version": rates.version, "source": source, **rates.as_json()}


def rates_from_record(record: dict | None, where: str = "report metadata") -> ErrorRates | RatesByExpected | None:
    """The rates of ``error_rates_record``'s dict (a report's metadata), or None."""
    if not record:
        return None
    scorer, version, where = str(record.get("scorer")), str(record.get("version")), f"{where}: scorer_error_rates"
    if record.get("source") == TRANSPORT or "by_expected" in record:
        return RatesByExpected.from_json(scorer, version, record, where)
    return ErrorRates.from_json(scorer, version, record, where)


def describe_source(source: str | None, rates: ErrorRates | None = None) -> str:
    """Where a run's error rates were measured, for the summary line."""
    if source == SHIPPED_FOR_MODEL:
        return (f"measured on {rates.refusals + rates.compliances if rates else 'some'} labelled replies of this "
                "very model (shipped with the harness)")
    if source and source != SHIPPED:
        return f"measured on this model's labelled replies ({source})"
    return ("measured on the dev files (2 models), optimistic for other models: label a sample of this model's "
            "replies to measure its own (safety-harness calibrate)")


def correction_lines(record: dict | None, scorer: str | None, version: str | None, report: str | None = None) -> list[str]:
    """The summary's lines on the rates behind the corrected column (a run's ``model.scorer_error_rates``);
    ``report``, where known, names the run's report in the command that asks for labels."""
    rates = rates_from_record(record)
    if rates is None:
        return [missing_note(scorer, version)]
    if isinstance(rates, RatesByExpected):
        return ([f"corrected: Rogan-Gladen with scorer {rates.scorer} v{rates.version}'s error rates for a model like "
                 "those labelled (none were measured on this model), per expected behaviour; the interval is for "
                 "a model like those labelled and carries how much the rates vary between them:"]
                + [f"  {rates.describe(expected)}" for expected in BEHAVIOUR_NAMES]
                + [f"  label this model's replies to verify its rates (safety-harness review {report or 'REPORT'})"])
    return [f"corrected: Rogan-Gladen with {rates.describe()}; interval also carries that uncertainty",
            f"  those rates were {describe_source(record.get('source'), rates)}"]


def write_error_rates(path: Path, rates: list[ErrorRates], about: str, model: tuple[str, str] | None = None) -> None:
    """Add (or replace) these scorer versions' entries in an error-rates file, keeping the others; with
    ``model`` (fingerprint, name), under that model's section instead of the scorer-wide one."""
    from harness.core.files import atomic_path

    file = Path(path)
    out = {"format": FORMAT, "about": about, "scorers": {}}
    if file.is_file():
        out = json.loads(json.dumps(_read(str(file))))  # a deep copy: the cached dict stays as read
        out["about"] = out.get("about") or about
    target = out["scorers"]
    if model is not None:
        fingerprint, name = model
        section = out.setdefault("models", {}).setdefault(fingerprint, {"model": name, "scorers": {}})
        section["model"], target = name, section["scorers"]
    for r in rates:
        target.setdefault(r.scorer, {})[r.version] = r.as_json()
    out["scorers"] = dict(sorted(out["scorers"].items()))
    with atomic_path(file) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=1) + "\n", "utf-8")
    _read.cache_clear()


def missing_note(scorer: str | None, version: str | None) -> str:
    return (f"no measured error rates for scorer {scorer} v{version}: rates are not corrected "
            f"(measure them with: {REGENERATE.format(name=scorer)})")
