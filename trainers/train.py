"""LoRA supervised fine-tuning with peft: a plain torch loop, so that every source of randomness is seeded
here and a checkpoint holds everything needed to continue bit for bit.

The schedule (which examples go into which step) is fixed up front from the seed, so a run resumed from a
checkpoint at step k performs exactly the steps k+1.. of the uninterrupted run.

A checkpoint is a folder whose ``state.json`` is written last: a folder holding one is complete. It is
written beside the previous one and swapped in by two renames; a kill between them leaves only
``checkpoint.old``, which the next run takes back (``_recover``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from harness.backends.base import torch_device_and_dtype
from harness.core.errors import ConfigError, ModelError
from harness.models.fingerprint import weights_digest
from harness.models.resolve import ADAPTER_META, ALIASES, load_tokenizer, resolve_model
from harness.models.templates import resolve_template
from harness.trainers.config import TrainConfig
from harness.trainers.data import IGNORE_INDEX, Tokenized, build_mix, tokenize_mix

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrainResult:
    out: Path
    steps: int
    losses: list[float]  # mean loss of each optimizer step, the resumed ones included
    resumed_from: int  # 0 when the run started fresh
    n_examples: int
    seconds: float
    finished: bool
    model: object | None = field(default=None, repr=False)  # the trained peft model, with keep_model=True


def _schedule(n: int, config: TrainConfig) -> list[list[int]]:
    """Example indices of every optimizer step: one seeded permutation per epoch, cut to epochs * n."""
    total = max(1, round(n * config.epochs))
    order: list[int] = []
    epoch = 0
    while len(order) < total:
        perm = list(range(n))
        random.Random(config.seed * 1000 + epoch).shuffle(perm)
        order += perm
        epoch += 1
    order = order[:total]
    return [order[i:i + config.batch_size] for i in range(0, total, config.batch_size)]


def _collate(batch: list[Tokenized], pad_id: int, torch):
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, t in enumerate(batch):  # right padding: training needs no generation-time alignment
        ids[row, :len(t.input_ids)] = torch.tensor(t.input_ids)
        labels[row, :len(t.labels)] = torch.tensor(t.labels)
        mask[row, :len(t.input_ids)] = 1
    return ids, labels, mask


def _lr_lambda(total: int, warmup_ratio: float):
    warmup = max(1, math.ceil(total * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:  # Alpaca-LoRA's schedule: linear warm-up, then linear decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _base_name(config: TrainConfig) -> str:
    """What adapter_config.json records as the base: the alias itself, else the folder's absolute path, so
    evaluation resolves it from any working directory."""
    return config.base if config.base in ALIASES else str(Path(config.base).expanduser().resolve())


def default_threads() -> int:
    """Half the cores: on a shared machine, OpenMP threads that outnumber the idle cores spin-wait on each
    other (measured here under load: one LoRA step 5 s with 1 thread, 25-30 s with 2 on 2 cores)."""
    return max(1, (os.cpu_count() or 2) // 2)


def device_tag() -> str:
    """Where training would run and in what precision (e.g. "cpu-float32"): part of every key that names a
    trained adapter or a checkpoint, since bf16 on a GPU and float32 on a CPU give different weights."""
    import torch

    device, dtype = torch_device_and_dtype(torch)
    return f"{device}-{str(dtype).replace('torch.', '')}"


def train(config: TrainConfig, out: str | Path, *, cache_dir: Path | None = None, data_dir: Path | None = None,
          progress: bool = True, stop_after: int | None = None, threads: int | None = None,
          keep_model: bool = False, on_checkpoint: Callable[[int, int, Path], None] | None = None) -> TrainResult:
    """Train a LoRA adapter for ``config`` into ``out`` (resuming from ``out/checkpoint`` when one of the same
    config is there). ``stop_after``: leave after that many optimizer steps of this call and save nothing
    more, as a run killed between two steps would; in-process tests use it where a real kill
    (tests/paused_run.py) would cost a process. ``threads``: torch CPU threads (default: half the cores).
    ``on_checkpoint(step, total_steps, folder)`` is called after each checkpoint is in place."""
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    from harness.core.paths import default_cache_dir

    started = time.perf_counter()
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    base = resolve_model(config.base, cache_dir=cache_dir)
    if base.kind == "adapter":
        raise ModelError(f"--base {config.base} is an adapter; train from an alias or a full model folder")
    tokenizer = load_tokenizer(base)
    template = resolve_template(config.template, tokenizer=tokenizer)
    mix = build_mix(config, data_dir)
    examples = tokenize_mix(mix, tokenizer, template, config.cutoff, train_on_inputs=config.train_on_inputs)
    steps = _schedule(len(examples), config)
    # The examples as trained on enter the checkpoint's key: the same config over an edited data file (a path of
    # the user's, or another template or tokenizer) is another training, and its checkpoint is not resumed.
    mix_hash = hashlib.sha256(json.dumps([[t.input_ids, t.labels] for t in examples]).encode()).hexdigest()
    key = config.config_hash(extra=f"{base.fingerprint}|{device_tag()}|{mix_hash}")

    ckpt = out / CHECKPOINT_DIR
    _recover(ckpt)
    state = _read_state(ckpt, key)
    device, dtype = torch_device_and_dtype(torch)
    if device == "cpu":
        torch.set_num_threads(threads or default_threads())
    torch.manual_seed(config.seed)  # LoRA A's initialisation
    model = _load_base(AutoModelForCausalLM, base.path, dtype, quiet=not progress)
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    _check_target_modules(model, config.target_modules)
    try:
        model = get_peft_model(model, lora).to(device)
    except ValueError as exc:  # peft's own refusals (a module type LoRA cannot adapt): the user's choice
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"--target-modules {' '.join(config.target_modules)}: {first}") from None
    model.peft_config["default"].base_model_name_or_path = _base_name(config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(len(steps), config.warmup_ratio))
    losses: list[float] = []
    start = 0
    if state is not None:
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(ckpt / "adapter.safetensors"))
        # Tensors, numbers and lists only (optimizer, scheduler, RNG states): a planted pickle in --out cannot run.
        try:
            extra = torch.load(ckpt / "trainer.pt", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError for anything but plain state, RuntimeError if torn
            raise ModelError(f"{ckpt / 'trainer.pt'}: refused as resume state ({str(exc).splitlines()[0][:200]}); "
                             f"delete {ckpt} to start over") from None
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["torch_rng"])
        if extra.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["cuda_rng"])
        start, losses = state["step"], list(state["losses"])
    else:
        torch.manual_seed(config.seed + 7)  # dropout stream, independent of how init consumed the RNG

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.train()
    bar = tqdm(total=len(steps), initial=start, desc="safety-harness: training", unit="step", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    done_here = 0
    try:
        for step in range(start, len(steps)):
            batch = [examples[i] for i in steps[step]]
            n_label = sum(sum(1 for x in t.labels[1:] if x != IGNORE_INDEX) for t in batch)
            step_loss = 0.0
            for m in range(0, len(batch), config.micro_batch_size):  # gradient accumulation
                micro = batch[m:m + config.micro_batch_size]
                ids, labels, mask = (t.to(device) for t in _collate(micro, pad_id, torch))
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                # Sum over the step's response tokens / their count: each token weighs the same whatever
                # micro-batch it falls in.
                loss = torch.nn.functional.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                    ignore_index=IGNORE_INDEX, reduction="sum") / max(1, n_label)
                loss.backward()
                step_loss += loss.item()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}")
            done_here += 1
            last = step + 1 == len(steps)
            if not last and config.save_every and (step + 1) % config.save_every == 0:
                _save_checkpoint(ckpt, key, step + 1, losses, model, optimizer, scheduler, torch,
                                 get_peft_model_state_dict)
                if on_checkpoint is not None:
                    on_checkpoint(step + 1, len(steps), ckpt)
            if stop_after is not None and done_here >= stop_after and not last:
                return TrainResult(out, step + 1, losses, start, len(examples), time.perf_counter() - started, False)
    finally:
        bar.close()

    _save_adapter(out, model, tokenizer, template, config, losses, examples, mix,
                  weights_digest(base.path, cache_dir=cache_dir))
    for folder in (ckpt, _sibling(ckpt, "old"), _sibling(ckpt, "tmp")):
        _discard(folder)
    return TrainResult(out, len(steps), losses, start, len(examples), time.perf_counter() - started, True,
                       model.eval() if keep_model else None)


def _read_state(ckpt: Path, key: str) -> dict | None:
    path = ckpt / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except ValueError:
        raise ModelError(f"{path}: unreadable checkpoint state; delete {ckpt} to start over") from None
    if state.get("config_hash") != key:
        raise ConfigError(f"{ckpt} holds a checkpoint of a different training config or data; use another --out "
                          "or delete it")
    return state


def _sibling(ckpt: Path, suffix: str) -> Path:
    return ckpt.with_name(f"{ckpt.name}.{suffix}")


def _discard(folder: Path) -> None:
    """Remove a checkpoint folder, its state file first: a kill midway leaves a folder that no longer counts
    as a checkpoint, never a state file beside missing weights."""
    (folder / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def _recover(ckpt: Path) -> None:
    """Take ``checkpoint.old`` back when a kill fell between the two renames of ``_save_checkpoint`` (the
    previous checkpoint moved aside, the new one not yet in place); otherwise the run would start over."""
    old = _sibling(ckpt, "old")
    if not (ckpt / STATE_FILE).is_file() and (old / STATE_FILE).is_file():
        _discard(ckpt)
        os.replace(old, ckpt)


def _check_target_modules(model, targets) -> None:
    """Every --target-modules name must name modules of the base, as peft matches a list (the full name or
    its last dotted parts). peft itself refuses only when no name matches: with q_proj and a typo, the typo
    was dropped without a word and the adapter trained on fewer layers than asked."""
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise ConfigError(f"--target-modules: no module named {', '.join(missing)} in the base "
                          f"{type(model).__name__} (its linear layers: {', '.join(leaves) or 'none'})")


def _load_base(auto_class, path, dtype, *, quiet: bool):
    """The base model; ``quiet`` (--quiet) also silences transformers' weight-loading bar, then puts it back."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        return auto_class.from_pretrained(path, dtype=dtype)
    finally:
        if quiet and was_on:
            hf_logging.enable_progress_bar()


def _save_checkpoint(ckpt: Path, key, step, losses, model, optimizer, scheduler, torch, state_dict_fn) -> None:
    """Write the checkpoint beside the old one, then swap: a kill mid-write leaves the previous one intact,
    and a kill between the two renames leaves it as ``checkpoint.old`` (see ``_recover``)."""
    from safetensors.torch import save_file

    tmp = _sibling(ckpt, "tmp")
    _discard(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous()
               for k, v in state_dict_fn(model, save_embedding_layers=False).items()}  # as _save_adapter
    save_file(weights, tmp / "adapter.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp / "trainer.pt")
    (tmp / STATE_FILE).write_text(json.dumps({"config_hash": key, "step": step, "losses": losses}))  # last
    old = _sibling(ckpt, "old")
    _discard(old)
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)
    _discard(old)


def _save_adapter(out: Path, model, tokenizer, template: str, config: TrainConfig, losses, examples, mix,
                  base_weights: str) -> None:
    # The vocabulary is never resized here, so the base's embedding layers are not the adapter's to save
    # (peft's "auto" looked for the base's config under the alias name and warned on every save).
    model.save_pretrained(out, save_embedding_layers=False)
    counts = {kind: sum(1 for ex in mix if ex.kind == kind) for kind in ("general", "safety")}
    meta = {
        "template": template,  # read back by harness.models.resolve: evaluation uses the template trained with
        "base_weights": base_weights,  # checked by harness.models.resolve: evaluation on another base is refused
        "train_config": config.as_dict(),
        "examples": counts,
        "n_tokenized": len(examples),
        "n_cut_at_cutoff": sum(t.cut for t in examples),  # their replies' end was not learned
        "losses": [round(x, 5) for x in losses],
    }
    (out / ADAPTER_META).write_text(json.dumps(meta, indent=1))
