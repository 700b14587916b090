"""Fingerprints of model and adapter folders: a sha256 over every file that affects generations (config,
tokenizer, weights, a remote-code model's ``*.py``), each by relative name and content hash, with the
per-file hashes cached by (path, size, mtime) so multi-GB weights are read once. Also the weight-file
checks that go with it: no weights, or pickled weights without ``allow_pickle``, is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

from filelock import FileLock

from harness.core.errors import ModelError
from harness.core.files import atomic_write_text, sha256_file

CONFIG_FILES = ("config.json", "generation_config.json")
# chat_template.jinja: transformers 5 saves the chat template there instead of tokenizer_config.json. The
# slow tokenizers' own files (BPE vocab and merges, WordPiece vocab, SentencePiece models) are what a folder
# without tokenizer.json is tokenized from: edited, they change every prompt's tokens.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "added_tokens.json",
                   "vocab.txt", "spiece.model", "sentencepiece.bpe.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Trainer checkpoints keep these pickles beside the weights; they are not weights, so they neither trigger
# the pickle refusal nor enter the fingerprint (optimizer.pt alone can be twice the model size).
NON_WEIGHT_PICKLES = re.compile(r"^(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$")
ADAPTER_META = "safety_harness.json"  # written by our trainer: {"template": "<name>", ...}
# A file changed within this long after it was hashed may keep the same mtime (coarse kernel clocks, 2 s
# on FAT/SMB), so a cached hash is only trusted when it was taken this much after the file's mtime.
RACY_MARGIN_NS = 2_000_000_000


# ---------------------------------------------------------------- file hashing with a cache


def _hash_file(path: Path) -> str:
    """Content sha256 of one file; a module-level name so tests can count calls."""
    return sha256_file(path)


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _read_store(store: Path) -> dict:
    try:
        data = json.loads(store.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or corrupt: it is only a cache


def file_hashes(paths: list[Path], cache_dir: Path | None) -> dict[Path, str]:
    """Content hashes of ``paths``, reusing ``cache_dir/fingerprints.json`` entries keyed by
    (absolute path, size, mtime_ns) so multi-GB weights are read once, not on every run."""
    store_path = Path(cache_dir) / "fingerprints.json" if cache_dir is not None else None
    store = _read_store(store_path) if store_path else {}
    out: dict[Path, str] = {}
    new: dict[str, dict] = {}
    for p in paths:
        key = str(p.resolve())
        size, mtime = _stat_key(p)
        e = store.get(key)
        if (isinstance(e, dict) and e.get("size") == size and e.get("mtime_ns") == mtime
                and e.get("hashed_at_ns", 0) - mtime > RACY_MARGIN_NS):
            out[p] = e["sha256"]
            continue
        hashed_at = time.time_ns()
        digest = _hash_file(p)
        out[p] = digest
        if _stat_key(p) == (size, mtime):  # not rewritten while we read it
            new[key] = {"size": size, "mtime_ns": mtime, "sha256": digest, "hashed_at_ns": hashed_at}
    if store_path and new:
        try:
            store_path.parent.mkdir(parents=True, exist_ok=True)
            # Re-read under the lock: another process may have added entries since our first read.
            with FileLock(str(store_path) + ".lock"):
                merged = _read_store(store_path)
                merged.update(new)
                merged = {k: v for k, v in merged.items() if os.path.exists(k)}  # drop deleted files
                atomic_write_text(store_path, json.dumps(merged, indent=0, sort_keys=True))
        except OSError:
            pass  # a read-only cache folder: the hashes are right, only not remembered for the next run
    return out


def _digest(tag: str, folder: Path, files: list[Path], cache_dir: Path | None, extra: str = "") -> str:
    hashes = file_hashes(files, cache_dir)
    h = hashlib.sha256(f"{tag}\n{extra}\n".encode())
    for p in sorted(files, key=lambda p: p.name):
        h.update(f"{p.relative_to(folder).as_posix()}\0{hashes[p]}\n".encode())
    return h.hexdigest()


# ---------------------------------------------------------------- folder inspection


def _weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files and their index, pickled weight files), top level only as transformers loads."""
    safe = [p for p in folder.iterdir() if p.is_file() and
            (p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json")]
    pickled = [p for p in folder.iterdir() if p.is_file() and
               (p.suffix in PICKLE_SUFFIXES or p.name == "pytorch_model.bin.index.json")
               and not NON_WEIGHT_PICKLES.match(p.name)]
    return sorted(safe), sorted(pickled)


def _check_weights(folder: Path, *, allow_pickle: bool) -> list[Path]:
    safe, pickled = _weight_files(folder)
    if not safe and not pickled:
        raise ModelError(f"{folder}: no weight files (*.safetensors) in the model folder")
    if not any(p.name.endswith(".safetensors") for p in safe):
        # transformers only falls back to pickles when no safetensors exist; unpickling can run code.
        if not allow_pickle:
            names = ", ".join(p.name for p in pickled)
            raise ModelError(f"{folder}: pickled weights ({names}) refused; convert to safetensors or pass "
                             "--allow-pickle")
    return safe + pickled


def present_files(folder: Path, names: tuple[str, ...]) -> list[Path]:
    return [folder / n for n in names if (folder / n).is_file()]


def fingerprint_model_folder(path: str | os.PathLike, *, cache_dir: Path | None = None,
                             allow_pickle: bool = True) -> str:
    """sha256 over config, generation config, tokenizer, weight and ``*.py`` files of an HF model folder, each by
    relative name and content hash. With ``cache_dir`` the per-file hashes are cached (see file_hashes)."""
    folder = Path(path).resolve()
    files = present_files(folder, CONFIG_FILES + TOKENIZER_FILES) + _check_weights(folder, allow_pickle=allow_pickle)
    # A --trust-remote-code model's own code (modeling_*.py, tokenization_*.py) decides its outputs too.
    files += sorted(p for p in folder.glob("*.py") if p.is_file())
    return _digest("hf-model-v1", folder, files, cache_dir)


def weights_digest(path: str | os.PathLike, *, cache_dir: Path | None = None) -> str:
    """sha256 over a model folder's weight files alone, each by name and content hash. The trainer saves it
    with an adapter and evaluation compares it with the base it resolves: unlike the fingerprint, it does
    not move when the harness learns to fingerprint more files, or a base's config or tokenizer is re-saved."""
    folder = Path(path).resolve()
    return _digest("weights-v1", folder, _check_weights(folder, allow_pickle=True), cache_dir)


def fingerprint_adapter_folder(path: str | os.PathLike, base_fingerprint: str, *, cache_dir: Path | None = None,
                               allow_pickle: bool = True) -> str:
    """Base fingerprint combined with the adapter's config, weights, safety_harness.json and any tokenizer
    saved with it (load_tokenizer prefers that one)."""
    folder = Path(path).resolve()
    files = (present_files(folder, ("adapter_config.json", ADAPTER_META) + TOKENIZER_FILES)
             + adapter_weight_files(folder, allow_pickle=allow_pickle))
    return _digest("lora-adapter-v1", folder, files, cache_dir, extra=base_fingerprint)


def adapter_weight_files(folder: Path, *, allow_pickle: bool) -> list[Path]:
    safe = folder / "adapter_model.safetensors"
    if safe.is_file():
        return [safe]
    pickled = folder / "adapter_model.bin"
    if pickled.is_file():
        if not allow_pickle:
            raise ModelError(f"{folder}: pickled weights (adapter_model.bin) refused; convert to safetensors or "
                             "pass --allow-pickle")
        return [pickled]
    raise ModelError(f"{folder}: adapter folder has no adapter_model.safetensors")
