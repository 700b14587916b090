"""``safety-harness train``: one option per TrainConfig field (its help text included), plus --out."""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import MISSING, fields
from pathlib import Path

from harness.cli.registry import command
from harness.trainers.config import FORMATS, TrainConfig
from harness.trainers.out_folder import check_out


def add_config_options(p) -> None:
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = f.metadata.get("help", "") + (f" (default: {default})" if default is not None else "")
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=help_text)
        elif isinstance(default, tuple):
            p.add_argument(flag, dest=f.name, nargs="+", default=None, help=help_text)
        elif f.name == "format":
            p.add_argument(flag, dest=f.name, choices=FORMATS, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)  # "int | None" -> int
            p.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)


def config_from_args(args) -> TrainConfig:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig(**given)


@command("train", help="LoRA-tune a base model on general data plus N safety demonstrations; resumes a "
                       "killed run from its last checkpoint in --out")
def _train_args(p):
    add_config_options(p)
    p.add_argument("--out", type=Path, required=True, help="folder for the adapter (and its checkpoint)")
    p.add_argument("--data-dir", type=Path, default=None, help="datasets folder (default: $SAFETY_HARNESS_DATA, then the user cache)")
    p.add_argument("--cache-dir", type=Path, default=None, help="prepared models (default: the harness cache)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: half the cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an adapter in --out that was trained with another config")


def _checkpoint_line(step: int, total: int, folder: Path) -> None:
    """One line per checkpoint, so a user who stops a long run knows where the same command picks it up."""
    from tqdm import tqdm

    tqdm.write(f"checkpoint: step {step} of {total} saved in {folder}; the same command resumes from it",
               file=sys.stderr)


@_train_args.run
def _train(args) -> int:
    from harness.trainers.train import train

    config = config_from_args(args)
    check_out(args.out, config, overwrite=args.overwrite)  # before training, not after it
    with warnings.catch_warnings():
        # The trainer's own warnings (skipped malformed records) as one line each, not Python's two-line
        # warning with a source line from the trainer; other libraries' warnings are left as they are.
        shown = warnings.showwarning

        def note(message, category, filename, lineno, file=None, line=None):
            if "trainers" in Path(filename).parts:
                print(f"safety-harness: note: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = note
        result = train(config, args.out, cache_dir=args.cache_dir, data_dir=args.data_dir, progress=not args.quiet,
                       threads=args.threads, on_checkpoint=_checkpoint_line)
    first, last = result.losses[0], result.losses[-1]
    print(f"adapter {result.out}: {result.steps} steps on {result.n_examples} examples"
          + (f" (resumed at step {result.resumed_from})" if result.resumed_from else "")
          + f", loss {first:.3f} -> {last:.3f}, {result.seconds:.0f} s")
    print(json.dumps({"config": config.as_dict()}, sort_keys=True))
    return 0
