"""LoRA training on the tiny random Llama: the data mix, loss falls, save and reload give the same outputs,
a `safety-harness train` SIGKILLed in a subprocess resumes from its last checkpoint to the adapter an
uninterrupted run makes, and the ``train`` command line."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from harness.core.errors import ConfigError, DataError
from harness.core.types import Prompt
from harness.models.resolve import resolve_model
from harness.trainers.config import TrainConfig, safety_count_for_share
from harness.trainers.data import Example, build_mix, tokenize_mix
from tests.paused_run import killed_at
from tests.support import GENERAL, SAFETY, sentencepiece_style_tokenizer
from tests.support import run_training as run
from tests.support import train_config as config

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A small Alpaca-style JSONL (with a malformed line and a record of another status, as alpaca_libre
    has) and a safety JSON list."""
    folder = tmp_path_factory.mktemp("train-data")
    lines = [json.dumps(r) for r in GENERAL]
    lines.insert(3, '{"instruction": "broken", "output": ')  # malformed: skipped with a counted warning
    lines.insert(5, json.dumps({"instruction": "x", "input": "", "output": "y", "status": "too similar"}))
    (folder / "general.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "safety.json").write_text(json.dumps(SAFETY))
    return {"general": folder / "general.jsonl", "safety": folder / "safety.json"}


@pytest.fixture(scope="module")
def trainable_tiny(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with embeddings 8x larger. Its tied embeddings (std 0.02) cap every logit near 0.1, so
    no adapter can lower the loss much below log(vocab); at std 0.16 LoRA on q_proj/v_proj visibly learns."""
    import shutil

    import torch
    from transformers import LlamaForCausalLM

    path = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("trainable") / "base"))
    model = LlamaForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(8.0)
    model.save_pretrained(path)
    return path


# -- data ------------------------------------------------------------------------------------------


def test_mix_counts_nesting_and_malformed_lines_are_counted(tiny_model, data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mix = build_mix(config(tiny_model, data, safety=4))
    assert [str(w.message) for w in caught if "skipped 1 malformed record" in str(w.message)]
    assert "general.jsonl:4" in str(caught[0].message)  # names the first bad line
    assert sum(e.kind == "general" for e in mix) == 12 and sum(e.kind == "safety" for e in mix) == 4
    assert all(e.instruction != "x" for e in mix)  # status other than "ok" left out
    smaller = build_mix(config(tiny_model, data, safety=2))
    big = {e.instruction for e in mix if e.kind == "safety"}
    assert {e.instruction for e in smaller if e.kind == "safety"} <= big  # the 2 are among the 4
    assert build_mix(config(tiny_model, data, safety=4)) == mix  # deterministic for a seed


def test_question_format_rewrites_the_demonstrations(tiny_model, data):
    mix = build_mix(config(tiny_model, data, format="question", safety=6))
    questions = [e.instruction for e in mix if e.kind == "safety"]
    assert len(questions) == 6 and all(q.endswith("?") for q in questions)
    assert all(e.output == "I cannot help with that." for e in mix if e.kind == "safety")


def test_too_few_examples_and_missing_files_are_one_line_errors(tiny_model, data, tmp_path):
    with pytest.raises(DataError, match=r"asked for 50 general examples but only 16 are usable"):
        build_mix(config(tiny_model, data, general=50))
    with pytest.raises(DataError, match="nope.json: not found"):
        build_mix(config(tiny_model, data, safety_data=str(tmp_path / "nope.json")))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"output": "no instruction"}]))
    with pytest.raises(DataError, match=r"bad.json: item 1: missing key 'instruction'"):
        build_mix(config(tiny_model, data, safety_data=str(bad)))
    with pytest.raises(ConfigError):
        config(tiny_model, data, format="essay")


@pytest.mark.parametrize("field, value, message", [
    ("lr", float("nan"), "lr must be a positive number, got nan"),  # passed `lr <= 0` and trained NaNs
    ("epochs", float("inf"), "epochs must be a positive number, got inf"),
    ("dropout", 1.0, "dropout must be in [0, 1), got 1.0"),
    ("warmup_ratio", -0.1, "warmup_ratio must be in [0, 1], got -0.1"),
    ("weight_decay", float("nan"), "weight_decay must be >= 0, got nan"),
    ("alpha", 0, "alpha must be > 0, got 0"),
    ("save_every", -1, "save_every must be >= 0, got -1"),
])
def test_out_of_range_hyperparameters_are_one_line(tiny_model, data, field, value, message):
    with pytest.raises(ConfigError) as err:
        config(tiny_model, data, **{field: value})
    assert str(err.value) == message


def test_loss_is_only_on_the_response(tiny_model, data):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    mix = build_mix(config(tiny_model, data))
    example = tokenize_mix(mix[:1], tok, "chat", cutoff=256)[0]
    learned = tok.decode([t for t, label in zip(example.input_ids, example.labels) if label != -100])
    assert learned == mix[0].output + "<|end|>\n"  # the response and the template's end of turn, no prompt
    assert len(example.input_ids) == len(example.labels)


# What each template puts between the prompt and the response: Alpaca "### Response:\n", raw text nothing,
# LLaMA-2's chat template a space after "[/INST]".
@pytest.mark.parametrize("template, response", [("alpaca", "Sure apple</s>"), ("raw", "Sure apple</s>"),
                                                ("chat", " Sure apple </s>")])
def test_a_sentencepiece_response_is_the_tokens_that_follow_the_evaluated_prompt(template, response):
    """LLaMA's legacy tokenizer puts "▁" before any text it tokenizes: the response tokenized on its own
    began "▁Sure", a token that never follows "### Response:\n" when the model continues the prompt."""
    from harness.models.templates import format_prompts

    tok = sentencepiece_style_tokenizer()
    example = Example("Repeat the word apple.", "", "Sure apple", "general")
    [trained] = tokenize_mix([example], tok, template, cutoff=256)
    [evaluated] = format_prompts([Prompt(suite="s", prompt_id="", prompt=example.instruction)], template, tok)
    n = len(evaluated.token_ids)
    joined = tok(evaluated.text + response, add_special_tokens=(template != "chat"))["input_ids"]
    assert trained.input_ids[:n] == list(evaluated.token_ids)  # the prompt exactly as evaluation feeds it
    assert trained.input_ids == joined  # the response as it tokenizes after that prompt
    assert tok.convert_ids_to_tokens(trained.input_ids[n]) == ("▁Sure" if template == "chat" else "Sure")
    assert trained.labels == [-100] * n + joined[n:]


def test_a_response_that_merges_with_the_end_of_the_prompt_is_split_at_the_prompt():
    """"\n\n" is one token of the joined text, half prompt, half response: neither half is dropped from the
    loss or learned twice; the prompt keeps evaluation's ids and the response is tokenized from its first
    character."""
    from harness.models.templates import format_prompts

    tok = sentencepiece_style_tokenizer()
    merging = Example("Repeat the word apple.", "", "\nSure apple", "general")
    [trained] = tokenize_mix([merging], tok, "alpaca", cutoff=256)
    [evaluated] = format_prompts([Prompt(suite="s", prompt_id="", prompt=merging.instruction)], "alpaca", tok)
    n = len(evaluated.token_ids)
    assert trained.input_ids[:n] == list(evaluated.token_ids) and trained.labels[:n] == [-100] * n
    assert tok.decode(trained.labels[n:]) == "\nSure apple</s>"


def test_byte_level_bpe_keeps_the_ids_of_prompt_and_response_tokenized_apart():
    """SmolLM2's kind of tokenizer (byte-level BPE, GPT-2's pre-tokenizer): adapters trained before the response
    was tokenized after its prompt keep their ids, in every template, with merges that span the boundary
    ("\n" + "\n") and raw text's prompt and response with nothing between them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from harness.models.templates import format_text
    from harness.models.tiny import CHAT_TEMPLATE

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("Ċ", "Ċ"), (".", "Ġ"), ("S", "u"), ("Su", "re"), ("r", "e"), (".", "S"), ("e", ".")]
    vocab = {ch: i for i, ch in enumerate(alphabet + [a + b for a, b in merges])}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(["<|end|>", "<|user|>", "<|assistant|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|end|>")
    tok.chat_template = CHAT_TEMPLATE
    mix = [Example("Say sure.", "", out, "general") for out in ("Sure.", "\nSure.", "\n\nSure", " Sure.", ".Sure")]
    for template in ("alpaca", "raw", "chat"):
        for ex, trained in zip(mix, tokenize_mix(mix, tok, template, cutoff=256)):
            prompt = format_text(Prompt(suite="s", prompt_id="", prompt=ex.instruction), template, tok)
            full = tok.apply_chat_template([{"role": "user", "content": ex.instruction},
                                            {"role": "assistant", "content": ex.output}], tokenize=False)
            response = full[len(prompt):] if template == "chat" else ex.output + "<|end|>"
            apart = tok(prompt)["input_ids"], tok(response)["input_ids"]
            assert trained.input_ids == apart[0] + apart[1], (template, ex.output)
            assert trained.labels == [-100] * len(apart[0]) + apart[1]


def test_examples_whose_prompt_fills_the_cutoff_are_dropped_with_one_counted_warning(tiny_model):
    """Only n_tokenized in the adapter's metadata showed them (19 of 2,000 general examples at cutoff 112 with
    SmolLM2's chat template): the mix trained on was not the mix asked for, without a word."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    mix = [Example("Short.", "", "ok", "general"), Example("A long general instruction " * 3, "", "ok", "general"),
           Example("A long safety request " * 3, "", "no", "safety"), Example("Short too.", "", "no", "safety"),
           Example("Another long safety request " * 3, "", "no", "safety")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = tokenize_mix(mix, tok, "chat", cutoff=40)
    assert len(kept) == 2
    [warning] = caught
    assert str(warning.message) == (
        "cutoff 40: dropped 3 of 5 examples whose prompt fills the cutoff, leaving no response token "
        "(general: 1 of 2, safety: 2 of 3), e.g. the general example 'A long general instruction A long general "
        "instruction A long'; raise --cutoff to train on them")
    assert "trainers" in Path(warning.filename).parts  # so `safety-harness train` shows it as one note line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(tokenize_mix(mix, tok, "chat", cutoff=256)) == 5  # nothing dropped, nothing said
    with pytest.warns(UserWarning, match="cutoff 40: 3 of 5 examples are longer and were cut"):
        assert len(tokenize_mix(mix, tok, "chat", cutoff=40, train_on_inputs=True)) == 5  # cut, not dropped


def test_examples_cut_at_the_cutoff_are_counted_in_one_warning(tiny_model):
    """A response longer than the cutoff loses its end-of-turn token: the adapter never learns to stop after
    such replies. Alpaca-LoRA cuts them the same way, silently; here one warning counts them by kind."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    mix = [Example("Short.", "", "ok", "general"), Example("Tell me.", "", "a long answer " * 20, "general"),
           Example("Refuse.", "", "no", "safety"), Example("Explain.", "", "a long refusal " * 20, "safety"),
           Example("Go on.", "", "more words " * 20, "safety")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = tokenize_mix(mix, tok, "chat", cutoff=40)
    assert len(kept) == 5 and [t.cut for t in kept] == [False, True, False, True, True]
    assert all(len(t.input_ids) == 40 for t in kept if t.cut)
    [warning] = caught
    assert str(warning.message) == (
        "cutoff 40: 3 of 5 examples are longer and were cut, so the model does not learn to end those replies "
        "(general: 1 of 2, safety: 2 of 3); raise --cutoff to keep them whole")
    assert "trainers" in Path(warning.filename).parts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not any(t.cut for t in tokenize_mix(mix, tok, "chat", cutoff=4096))


def test_safety_share_to_count():
    assert safety_count_for_share(128, 0.03) == 4 and safety_count_for_share(128, 0) == 0
    assert safety_count_for_share(2000, 0.12) == 273


# -- training --------------------------------------------------------------------------------------


def test_loss_falls_and_the_adapter_reloads_to_the_same_outputs(trainable_tiny, data, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = config(trainable_tiny, data, epochs=6, lr=0.05)
    result = run(cfg, tmp_path / "adapter", tmp_path / "cache", keep_model=True)
    assert result.finished and result.steps == 24
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-3:]) / 3
    assert last < 0.85 * first, result.losses

    # Reload where and how training ran (cuda and bf16 on a GPU, cpu and float32 otherwise).
    weight = next(result.model.parameters())
    probe = torch.tensor([[5, 40, 41, 42, 43, 44, 45]], device=weight.device)
    with torch.no_grad():
        trained = result.model(input_ids=probe).logits.float()
        plain = AutoModelForCausalLM.from_pretrained(trainable_tiny, dtype=weight.dtype)
        reloaded = PeftModel.from_pretrained(plain, tmp_path / "adapter").to(weight.device).eval()
        again = reloaded(input_ids=probe).logits.float()
        base = AutoModelForCausalLM.from_pretrained(trainable_tiny, dtype=weight.dtype).to(weight.device).eval()
        base = base(input_ids=probe).logits.float()
    assert torch.allclose(trained, again, atol=1e-5)
    assert not torch.allclose(trained, base, atol=1e-3)  # and the adapter does change the model

    resolved = resolve_model(str(tmp_path / "adapter"), cache_dir=tmp_path / "cache")
    assert resolved.kind == "adapter" and resolved.template == "chat"  # evaluation picks the template up
    assert Path(resolved.path) == Path(trainable_tiny).resolve()
    meta = json.loads((tmp_path / "adapter" / "safety_harness.json").read_text())
    assert meta["examples"] == {"general": 12, "safety": 4}
    assert meta["n_tokenized"] == 16 and meta["n_cut_at_cutoff"] == 0  # the test rows are short
    assert not (tmp_path / "adapter" / "checkpoint").exists()


# -- a real kill: `safety-harness train` in a subprocess, SIGKILLed at a chosen point, then resumed ----------

KILL_CONFIG = dict(epochs=3, save_every=4)  # 16 examples, 4 a step: 12 steps, checkpoints after steps 4 and 8


def train_args(cfg: TrainConfig, out: Path, cache: Path) -> list[str]:
    """The `safety-harness train` command line of ``cfg`` (dropout 0.05 stays on: its RNG must resume too)."""
    args = ["train"]
    for name, value in cfg.as_dict().items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args += [flag] if value else []
        elif isinstance(value, list):
            args += [flag, *value]
        elif value is not None:
            args += [flag, str(value)]
    return args + ["--out", str(out), "--cache-dir", str(cache), "--quiet", "--threads", "1"]


def adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def assert_same_adapter(a: Path, b: Path) -> None:
    """Identical, not close: float32 on a CPU with one thread is deterministic, and a resume that restored
    every state (weights, AdamW moments, the schedule's step, the dropout RNG, the data order) repeats the
    uninterrupted run's arithmetic exactly."""
    import torch

    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    losses = [json.loads((f / "safety_harness.json").read_text())["losses"] for f in (a, b)]
    assert losses[0] == losses[1]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, data, tmp_path_factory) -> Path:
    from harness.cli.main import main

    out = tmp_path_factory.mktemp("uninterrupted") / "adapter"
    assert main(train_args(config(tiny_model, data, **KILL_CONFIG), out, out.parent / "cache")) == 0
    return out


def test_a_run_killed_mid_step_resumes_from_its_last_checkpoint_to_the_same_adapter(
        tiny_model, data, uninterrupted, tmp_path, capsys):
    from harness.cli.main import main

    args = train_args(config(tiny_model, data, **KILL_CONFIG), tmp_path / "adapter", tmp_path / "cache")
    log = killed_at("step", 7, args, tmp_path / "killed.log")  # steps 5 and 6 done since the checkpoint
    assert "checkpoint: step 4 of 12 saved in" in log and "step 8 of 12" not in log
    state = json.loads((tmp_path / "adapter" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4 and len(state["losses"]) == 4  # the kill saved nothing of steps 5-7
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()

    capsys.readouterr()
    assert main(args) == 0  # the same command again
    out, err = capsys.readouterr()
    assert "12 steps on 16 examples (resumed at step 4)" in out  # steps 5-7 are trained again
    assert "checkpoint: step 8 of 12" in err
    assert_same_adapter(uninterrupted, tmp_path / "adapter")
    assert not [p.name for p in (tmp_path / "adapter").iterdir() if p.name.startswith("checkpoint")]


def test_a_run_killed_between_the_renames_of_a_checkpoint_resumes_from_the_previous_one(
        tiny_model, data, uninterrupted, tmp_path, capsys):
    from harness.cli.main import main

    args = train_args(config(tiny_model, data, **KILL_CONFIG), tmp_path / "adapter", tmp_path / "cache")
    killed_at("swap", 1, args, tmp_path / "killed.log")  # step 4's checkpoint moved aside, step 8's not in place
    folders = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"checkpoint.old", "checkpoint.tmp"} <= folders and "checkpoint" not in folders

    capsys.readouterr()
    assert main(args) == 0
    assert "(resumed at step 4)" in capsys.readouterr().out  # not trained over from step 0
    assert_same_adapter(uninterrupted, tmp_path / "adapter")
    assert not [p.name for p in (tmp_path / "adapter").iterdir() if p.name.startswith("checkpoint")]


def test_another_config_is_refused_in_a_folder_holding_a_checkpoint(tiny_model, data, tmp_path):
    cfg = config(tiny_model, data, **KILL_CONFIG)
    assert not run(cfg, tmp_path / "other", tmp_path / "cache", stop_after=5).finished
    with pytest.raises(ConfigError, match="checkpoint of a different training config or data"):
        run(config(tiny_model, data, **KILL_CONFIG, lr=5e-3), tmp_path / "other", tmp_path / "cache")


def test_a_checkpoint_is_not_resumed_on_other_data(tiny_model, data, tmp_path):
    """The same config on an edited data file is another training: resuming its checkpoint would give an adapter
    whose first steps saw the old examples and whose record names only the new file."""
    import shutil

    general = Path(shutil.copy(data["general"], tmp_path / "general.jsonl"))
    cfg = config(tiny_model, {**data, "general": general}, **KILL_CONFIG)
    assert not run(cfg, tmp_path / "adapter", tmp_path / "cache", stop_after=5).finished
    lines = general.read_text().splitlines()
    general.write_text("\n".join(line.replace("Repeat the word", "Say the word") for line in lines) + "\n")
    with pytest.raises(ConfigError, match="checkpoint of a different training config or data"):
        run(cfg, tmp_path / "adapter", tmp_path / "cache")


def test_stop_after_leaves_what_a_kill_between_steps_leaves(tiny_model, data, uninterrupted, tmp_path):
    """stop_after (the in-process stand-in for a kill, for tests where a process costs too much) saves
    nothing beyond the save_every checkpoints, so its resume repeats steps as a killed run's does."""
    cfg = config(tiny_model, data, **KILL_CONFIG)
    stopped = run(cfg, tmp_path / "adapter", tmp_path / "cache", stop_after=6)
    assert not stopped.finished and stopped.steps == 6
    assert json.loads((tmp_path / "adapter" / "checkpoint" / "state.json").read_text())["step"] == 4
    resumed = run(cfg, tmp_path / "adapter", tmp_path / "cache")
    assert resumed.finished and resumed.resumed_from == 4 and resumed.losses[:6] == stopped.losses
    assert_same_adapter(uninterrupted, tmp_path / "adapter")


def test_same_seed_same_adapter_other_seed_another(tiny_model, data, tmp_path):
    from safetensors.torch import load_file

    cfg = config(tiny_model, data, epochs=1)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run(TrainConfig(**{**cfg.as_dict(), "seed": seed}), tmp_path / name, tmp_path / "cache")
    a, b, c = (load_file(tmp_path / n / "adapter_model.safetensors") for n in "abc")
    assert all((a[k] == b[k]).all() for k in a)
    assert any(not (a[k] == c[k]).all() for k in a)


def test_an_adapter_is_refused_on_a_base_with_other_weights(tiny_model, data, tmp_path):
    """safety_harness.json records the base's weights: evaluating the adapter on another base of the same
    architecture (--base-model, or the trained-on folder replaced by another model) is one ModelError line,
    not an adapter applied to weights it was never trained with (its sanity check passes there: it changes
    the logits)."""
    import shutil

    from harness.core.errors import ModelError
    from harness.models.tiny import make_tiny_llama

    base = Path(shutil.copytree(tiny_model, tmp_path / "base"))
    run(config(base, data, epochs=1), tmp_path / "adapter", tmp_path / "cache")
    other = make_tiny_llama(tmp_path / "other", seed=1)
    same = Path(shutil.copytree(base, tmp_path / "moved"))  # the same weights elsewhere: accepted

    assert resolve_model(str(tmp_path / "adapter"), cache_dir=tmp_path / "cache").path == str(base.resolve())
    assert resolve_model(str(tmp_path / "adapter"), base_model=str(same), cache_dir=tmp_path / "cache").path \
        == str(same.resolve())
    with pytest.raises(ModelError, match=r"adapter .*adapter was trained on a base with other weights: "
                                         r"safety_harness.json records base weights [0-9a-f]{12}, but the base '.*other' has "
                                         r"[0-9a-f]{12}; pass --base-model with the base it was trained on"):
        resolve_model(str(tmp_path / "adapter"), base_model=str(other), cache_dir=tmp_path / "cache")
    shutil.rmtree(base)
    shutil.copytree(other, base)  # the folder adapter_config.json names now holds another model
    with pytest.raises(ModelError, match="trained on a base with other weights"):
        resolve_model(str(tmp_path / "adapter"), cache_dir=tmp_path / "cache")


def test_train_command_line(tiny_model, data, tmp_path, capsys):
    from harness.cli.main import main

    args = ["train", "--base", str(tiny_model), "--general", "8", "--safety", "2", "--format", "question",
            "--general-data", str(data["general"]), "--safety-data", str(data["safety"]), "--epochs", "1",
            "--lr", "0.01", "--rank", "4", "--seed", "3", "--batch-size", "4", "--cutoff", "64",
            "--out", str(tmp_path / "cli"), "--cache-dir", str(tmp_path / "cache"), "--quiet", "--threads", "1"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert f"adapter {tmp_path / 'cli'}: 3 steps on 10 examples" in out
    # --quiet: the skipped malformed line is one note, and nothing else (no weight-loading bar, no peft warning)
    assert err.splitlines() == [f"safety-harness: note: {data['general']}: skipped 1 malformed record(s), "
                                f"e.g. {data['general']}:4: malformed JSON (Expecting value, column 37)"]
    saved = json.loads((tmp_path / "cli" / "safety_harness.json").read_text())["train_config"]
    assert saved["format"] == "question" and saved["rank"] == 4 and saved["seed"] == 3
    cfg = json.loads((tmp_path / "cli" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 16 and sorted(cfg["target_modules"]) == ["q_proj", "v_proj"]

    # Another --out: the one above holds an adapter of this config, and another config is refused there first.
    bad = [str(tmp_path / "missing.json") if a == str(data["safety"]) else a for a in args]
    bad[bad.index("--out") + 1] = str(tmp_path / "cli-bad")
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "skipped 1 malformed" in err[0] and "missing.json: not found" in err[1]


def test_target_modules_the_base_lacks_are_one_line(tiny_model, data, tmp_path, capsys):
    from harness.cli.main import main

    args = ["train", "--base", str(tiny_model), "--general", "4", "--general-data", str(data["general"]),
            "--target-modules", "q_proj", "no_such_proj", "--out", str(tmp_path / "a"), "--quiet", "--threads", "1",
            "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # peft alone would train q_proj and drop the typo without a word
    assert err[-1].startswith("safety-harness: error: --target-modules: no module named no_such_proj in the base "
                              "LlamaForCausalLM (its linear layers: ")
    assert "q_proj" in err[-1] and not (tmp_path / "a" / "adapter_model.safetensors").exists()
