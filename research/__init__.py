"""The scorer research: how the files the package ships under ``harness/scoring/`` were made, and the
measurements the docs quote about the shipped scorers, judges and verdict statistics.

The contract (import-linter, pyproject.toml; ``tests/test_layout.py``):

* ``harness`` never imports ``research``, and the ``safety-harness`` wheel does not install it: a run needs
  none of it. ``research`` imports ``harness`` like any user would, and never ``benchmarks``.
* Run from the repository root as ``python -m research.NAME`` (the root is then on ``sys.path``); modules
  import each other as ``research.X``, never through ``sys.path``.
* One data-folder resolver: :func:`research.data.data_dir_arg` (``--data-dir``, else SAFETY_HARNESS_DATA,
  through :func:`harness.core.paths.data_dir_or_fail`); the human labels this project made live in
  ``research/labels/`` (:data:`research.data.LABELS`).

Entry points that write a shipped file:

* ``python -m research.train_refusal_classifier --out harness/scoring/refusal_head.json``
* ``python -m research.scorer_error_rates --scorer NAME`` (``harness/scoring/error_rates.json``)
* ``python -m research.scorer_transport`` (``harness/scoring/scorer_transport.json``)

Their libraries: ``xstest_dev`` (XSTest's labelled rows), ``refusal_training_data``, ``refusal_synthetic`` and
``refusal_synthetic_premise`` (the head's training rows), ``refusal_head_fit``, ``refusal_protocol`` (the
held-out-styles protocol, also an entry point), ``labelled_models`` (every model labelled by people).

Measurements whose figures the docs quote: ``eval_refusal_scorer``, ``eval_refusal_judge``,
``eval_capability_judge``, ``refusal_unseen_check``, ``refusal_style_check``, ``verify_simulation``,
``corrected_rate_coverage``, ``label_from_sample`` (docs/review.md's labels).

``research/experiments/``: runs whose results were not shipped, only written up in ``docs/experiments/`` and
``docs/adapter-sanity.md`` (the cross-encoder scorer, the safety-data sweep, the adapter-sanity noise).
"""
