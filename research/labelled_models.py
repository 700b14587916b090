"""Every model whose replies were labelled by people for this project, row by row, with the expected
behaviour of each prompt and each scorer's label: the oracle data of research/scorer_transport.py (the
scorer's error from model to model) and research/verify_simulation.py (the verified rates' coverage).

The models:
  * gpt4, llama2new: XSTest's dev files (human final_label), 250 should-answer and 200 should-refuse
    prompts each, joined to the xstest suite by XSTest id. refusal_classifier was trained on them, so its
    labels there are out of fold (scorer_error_rates.classifier_out_of_fold: each model's rows predicted
    by a head trained on the other model's rows plus the auxiliary rows);
  * claude, guanaco-65b, alpaca-farm-ppo-human: AlpacaEval replies labelled for this project (should-answer
    prompts only, the capability suite's AlpacaEval category), unseen by every scorer;
  * smollm2-135m-instruct: the embedded model's 120 replies to the main job (`pytest suites/ --limit 20`),
    every suite, joined to the suites' prompts by (suite, prompt_id), unseen by every scorer.
Llama-2-13b-chat's labelled AlpacaEval replies are left out: refusal_classifier trains on them (two
prompt folds of that very model, so even its out-of-fold labels have seen the house style), which would
make the scorer look steadier from model to model than it is.

Data is read from the folder named by SAFETY_HARNESS_DATA (``harness.core.paths``) or ``--data-dir``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import DataError
from harness.core.paths import data_dir_or_fail
from research.data import LABELS

DEV_MODELS = ("gpt4", "llama2new")
ALPACA_MODELS = {  # model -> (upstream file under the data dir, labels file)
    "claude": ("alpaca_eval/dev_annotations/claude.json", LABELS / "claude_alpaca_eval.csv"),
    "guanaco-65b": ("alpaca_eval/dev_annotations/guanaco-65b.json", LABELS / "guanaco_65b_alpaca_eval.csv"),
    "alpaca-farm-ppo-human": ("alpaca_eval/dev_annotations/alpaca-farm-ppo-human.json",
                              LABELS / "alpaca_farm_ppo_human_alpaca_eval.csv"),
}
EMBEDDED = "smollm2-135m-instruct"
EMBEDDED_LABELS = LABELS / "smollm2_135m_suites_sample.csv"
MODELS = (*DEV_MODELS, *ALPACA_MODELS, EMBEDDED)
LEFT_OUT = {"llama2-13b-chat": "refusal_classifier trains on its labelled replies (both prompt folds of the same "
                               "model), so its labels there are not those of a model the scorer never saw"}


@dataclass(frozen=True)
class LabelledReply:
    model: str
    suite: str
    category: str
    prompt_id: str
    expected: str  # "refuse" | "comply"
    prompt: str
    response: str
    human: str  # REFUSAL_LABELS


def _suite_prompts(suite: str, data_dir: Path) -> dict[str, object]:
    from harness.data.suites import get_suite

    return {p.prompt_id: p for p in get_suite(suite).load(data_dir)}


def load_dev(data_dir: Path) -> dict[str, list[LabelledReply]]:
    from research.xstest_dev import load_labeled

    prompts = _suite_prompts("xstest", data_dir)
    out = {}
    for model in DEV_MODELS:
        path = data_dir / "xstest" / "dev" / f"xstest_v2_completions_{model}_labeled.csv"
        d = load_labeled(path)
        with path.open(newline="", encoding="utf-8") as fh:
            types = {r["id"]: r["type"] for r in csv.DictReader(fh)}
        rows = []
        for xid, prompt, completion, gold in zip(d.ids, d.prompts, d.completions, d.gold):
            # By XSTest id and type: the dev files hold one earlier wording of a prompt (v2-195).
            p = prompts.get("xstest-" + xid.rsplit("-", 1)[-1])
            if p is None or p.category != types.get(xid):
                raise DataError(f"{path}: row {xid} ({types.get(xid)}) has no prompt of that type in the xstest suite")
            rows.append(LabelledReply(model, "xstest", p.category, p.prompt_id, p.expected, prompt, completion, gold))
        out[model] = rows
    return out


def load_alpaca(data_dir: Path) -> dict[str, list[LabelledReply]]:
    from research.refusal_training_data import load_chat_labelled

    from harness.core.types import REFUSAL_LABELS

    out = {}
    for model, (data_file, labels) in ALPACA_MODELS.items():
        d = load_chat_labelled(data_dir, labels, data_file)
        out[model] = [LabelledReply(model, "capability", "alpaca_eval", i.replace(":", "-"), "comply", p, t,
                                    REFUSAL_LABELS[y]) for i, p, t, y in zip(d["ids"], d["prompts"], d["texts"], d["y"])]
    return out


def load_embedded(data_dir: Path, path: Path = EMBEDDED_LABELS) -> dict[str, list[LabelledReply]]:
    with path.open(newline="", encoding="utf-8") as fh:
        lines = list(csv.DictReader(fh))
    suites = {s: _suite_prompts(s, data_dir) for s in sorted({r["suite"] for r in lines})}
    rows = []
    for n, r in enumerate(lines, start=2):
        p = suites[r["suite"]].get(r["prompt_id"])
        if p is None:
            raise DataError(f"{path}:{n}: suite {r['suite']} has no prompt {r['prompt_id']}")
        rows.append(LabelledReply(EMBEDDED, r["suite"], p.category, p.prompt_id, p.expected, p.prompt,
                                  r["response"], r["label"]))
    return {EMBEDDED: rows}


def load_models(data_dir: Path | None = None) -> dict[str, list[LabelledReply]]:
    """model -> its labelled replies, in MODELS order."""
    data_dir = data_dir_or_fail(data_dir)
    return {**load_dev(data_dir), **load_alpaca(data_dir), **load_embedded(data_dir)}


def scored_labels(models: dict[str, list[LabelledReply]], scorer_name: str, data_dir: Path | None = None,
                  cache: Path | None = None) -> tuple[dict[str, list[str]], dict[str, str], str]:
    """model -> scorer's label per reply, model -> how they were made, and the scorer's version. A scorer
    fitted to the dev files (scorer_error_rates.OUT_OF_FOLD) labels them out of fold."""
    from research.scorer_error_rates import OUT_OF_FOLD

    from harness.scoring import get_scorer

    scorer = get_scorer(scorer_name)
    labels, how = {}, {}
    oof = None
    if scorer_name in OUT_OF_FOLD and any(m in models for m in DEV_MODELS):
        data_dir = data_dir_or_fail(data_dir)
        files = [data_dir / "xstest" / "dev" / f"xstest_v2_completions_{m}_labeled.csv" for m in DEV_MODELS]
        flat, oof_how = OUT_OF_FOLD[scorer_name](data_dir, files, cache=cache)
        n = len(flat) // len(DEV_MODELS)
        oof = {m: flat[i * n:(i + 1) * n] for i, m in enumerate(DEV_MODELS)}
    for model, rows in models.items():
        if oof is not None and model in oof:
            labels[model], how[model] = oof[model], oof_how
            if len(oof[model]) != len(rows):
                raise DataError(f"{scorer_name}: out-of-fold labels for {model} do not match its rows")
        else:
            labels[model] = [s.label for s in scorer.score([r.prompt for r in rows], [r.response for r in rows])]
            how[model] = "scored as shipped (no scorer was fitted to this model's replies)"
            if model in DEV_MODELS:
                how[model] = ("scored as shipped; its rules were written with the dev files in view: in-sample, "
                              "optimistic")
    return labels, how, str(scorer.version)
