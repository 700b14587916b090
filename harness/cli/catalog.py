"""`prepare` and `suites`: what the harness can run, before any run."""

from __future__ import annotations

from pathlib import Path

from harness.cli.registry import command


@command("prepare", help="prepare a model alias (e.g. the embedded default) and print its folder and fingerprint")
def _prepare_args(p):
    p.add_argument("model", nargs="?", default=None, help="alias, model folder or adapter folder")
    p.add_argument("--base-model", default=None, help="base model of an adapter (default: its adapter_config.json)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where prepared models go (default: $SAFETY_HARNESS_CACHE or ~/.cache/safety-harness)")


@_prepare_args.run
def _prepare(args) -> int:
    from harness.config.options import DEFAULT_MODEL
    from harness.models.resolve import resolve_model
    from harness.core.paths import default_cache_dir

    model = resolve_model(args.model or DEFAULT_MODEL, base_model=args.base_model,
                          cache_dir=args.cache_dir or default_cache_dir())
    print(f"{model.name}: {model.path}" + (f" + adapter {model.adapter_path}" if model.adapter_path else ""))
    print(f"fingerprint {model.fingerprint}")
    return 0


@command("suites", help="list the built-in suites, their sizes and default thresholds")
def _suites_args(p):
    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder holding the datasets (default: $SAFETY_HARNESS_DATA, then the user cache)")


@_suites_args.run
def _suites(args) -> int:
    from harness.config.settings import RunSettings
    from harness.core.paths import data_dir_from_env
    from harness.data.suites import SuiteDataMissing, all_suites
    from harness.scoring.unseen import unseen_agreement_note

    data_dir = args.data_dir or data_dir_from_env()
    for name, spec in sorted(all_suites().items()):
        try:
            size = f"{len(spec.load(data_dir))} prompts"
        except SuiteDataMissing as exc:
            size = f"data missing ({exc})"
        thresholds = ", ".join(f"{k}={v:g}" for k, v in sorted(spec.thresholds.items()))
        print(f"{name:24} {size:14} {thresholds}\n    {spec.description}")
    scorer = RunSettings().scorer
    print(f"refusal scorer by default: {scorer} (--scorer){unseen_agreement_note(_unseen(scorer))}; "
          "protocol: docs/experiments/refusal-scorer-protocol.md")
    return 0


def _unseen(scorer_name: str) -> dict | None:
    from harness.scoring.base import REFUSAL_SCORERS

    factory = REFUSAL_SCORERS.factory(scorer_name)
    if hasattr(factory, "published_unseen_agreement"):  # a learned scorer: its figure is in its weights file
        return factory.published_unseen_agreement()
    return getattr(factory, "unseen_agreement", None)
