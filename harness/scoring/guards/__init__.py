"""The field's own judges: guard models read (prompt, reply) in their authors' published formats.

``wildguard`` and ``qwen3guard`` are refusal scorers (binary: full_refusal or full_compliance) and harm
scorers from the same pass; ``llamaguard`` (Llama Guard 3) is a harm scorer. Each runs the model named by
``--judge-model`` through the harness's backends (``harness.scoring.judge.JudgeModel``); the formats, their
sources and the published agreement figures are in docs/scoring.md.
"""

# Importing a guard's module registers its scorers.
from harness.scoring.guards import llamaguard, qwen3guard, wildguard  # noqa: F401
