"""People's labels in a run: the label store's labels on the run's replies, and the verified rates they give.

A label is stored under the hash of what the person read (``harness.core.records.label_key``: prompt, input,
response), not of the model, so a run of any model that meets a reply somebody labelled (for this model, an
earlier checkpoint, another model that answered alike) uses that label: its row carries ``human_label``, and
the verified rates (``harness.engine.verification``) count it as known in its stratum. The scorer's label
stays what every other rate counts.

A run reads the store it is pointed at (``labels`` in the settings, ``--labels``) or the one beside the
generation cache; it never creates one. A damaged store stops the run with one line before any generation
(``harness.labels.store``): labels cannot be rebuilt, so they are never silently ignored.
"""

from __future__ import annotations

from dataclasses import replace

from harness.core.types import EXPECTED


def open_label_store(session):
    """The session's label store, or None when there is none yet; remembers its path for the report."""
    from harness.labels import LabelStore, store_path

    path = store_path(session.settings.labels, session.settings.cache_dir)
    if not path.is_file():
        return None
    session.label_store_path = path
    return LabelStore(path)


def labels_for(session, keys) -> dict[str, str]:
    """label key -> the label in force in the session's store, for ``keys`` (e.g. a baseline's replies)."""
    store = open_label_store(session)
    return {} if store is None else store.labels(keys)


def with_human_labels(rows: list, store) -> list:
    """``rows`` (``ScoredRow``) with the label a person gave each reply, where ``store`` holds one. Only rows
    with an expected behaviour carry one: the gated rates are counted over them."""
    keys = {r.label_key for r in rows if r.prompt.expected in EXPECTED}
    if store is None or not keys:
        return rows
    found = store.labels(keys)
    return [replace(r, human_label=found[r.label_key]) if r.prompt.expected in EXPECTED and r.label_key in found
            else r for r in rows]


def verified_rates(result, category: str | None, thresholds: dict[str, float]) -> dict | None:
    """Threshold key -> ``VerifiedRate`` for a ``SuiteResult`` (or one of its categories), its default
    thresholds filled in as its checks fill them; None when no row of the suite is labelled and no
    threshold is held against a verified rate (nothing to show, nothing to compute). The suite's rates and
    those of the categories the run holds checks of (``result.held_categories``) are computed together, over
    the same strata, split by those categories, as ``review`` plans them and ``summary`` recomputes them
    (harness.engine.verify_rows). Computed once per result: the summary, the report and the test items all ask."""
    if category in result._verified:
        return result._verified[category]
    labels = result.labels
    if not labels and not result.settings.threshold_on.startswith("verified"):
        return None
    held = tuple(result.held_categories)
    if category is None or category in held:
        wanted = {None: thresholds if category is None else result.thresholds(None)}
        wanted.update({c: thresholds if c == category else result.thresholds(c) for c in held})
    else:  # a category no test item of the run holds (the suite API called directly): on its own strata
        wanted = {category: thresholds}
    result._verified.update(_verified_group(result, labels, wanted))
    return result._verified[category]


def _verified_group(result, labels: dict, wanted: dict) -> dict:
    """category (None: the suite) -> {key: VerifiedRate}, for the thresholds ``wanted`` of each, in one
    computation (one set of strata)."""
    from harness.config.thresholds import VerifiedRate, with_default_thresholds
    from harness.engine.verification import rows_from_results, verified_checks

    gated = {}
    for category, thresholds in wanted.items():
        filled, _ = with_default_thresholds(thresholds, {r.prompt.expected for r in result.select(category)})
        gated[result.name if category is None else f"{result.name}:{category}"] = filled
    out = {category: {} for category in wanted}
    for c in verified_checks(rows_from_results({result.name: result}), labels, gated):
        out[c.category].setdefault(c.key, VerifiedRate(c.estimate, c.low, c.high, c.n_labelled, c.N, c.decided))
    return out
