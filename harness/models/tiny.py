"""Tiny randomly initialised Llama models and LoRA adapters, built offline in well under a second, so tests
elsewhere can exercise loading, templating, generation and adapters without the 135M model.

Their generations are noise; only the plumbing is real.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Byte-level BPE with no merges: every UTF-8 byte is one token, so any text round-trips and the vocabulary
# (and hence the model) stays tiny. Built from fixed tables, not trained, so it is identical on every run.
SPECIAL_TOKENS = ("<|pad|>", "<|begin|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# Files that make up a tokenizer saved by transformers (4.x or 5.x).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "chat_template.jinja", "vocab.json", "merges.txt", "added_tokens.json")


def _byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 printable stand-ins for raw bytes
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(list(SPECIAL_TOKENS))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin|>", eos_token="<|end|>",
                                  pad_token="<|pad|>")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_llama(path: str | Path, *, seed: int = 0, vocab_from: str | Path | None = None) -> Path:
    """Save a tiny random ``LlamaForCausalLM`` (hidden 32, 2 layers, 4 heads, 2 kv heads) with a tokenizer
    and chat template into ``path``. ``vocab_from``: a prepared model folder (e.g. the SmolLM2 alias) whose
    tokenizer files are copied instead, for tests that need the real vocabulary and template (~6 MB model)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if vocab_from is not None:
        for name in _TOKENIZER_FILES:
            if (Path(vocab_from) / name).is_file():
                shutil.copyfile(Path(vocab_from) / name, path / name)
        tok = AutoTokenizer.from_pretrained(path)
    else:
        tok = _byte_tokenizer()
        tok.save_pretrained(path)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=pad,
    )
    torch.manual_seed(seed)  # same seed, same weights: fingerprints and outputs reproducible within a torch
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=pad)
    model.save_pretrained(path)
    return path


def make_tiny_adapter(base_path: str | Path, out_path: str | Path, *, seed: int = 0, r: int = 4,
                      noise: float = 0.5) -> Path:
    """Save a LoRA adapter (q_proj, v_proj) for the tiny model at ``base_path`` into ``out_path``. LoRA B
    starts at zero (a no-op adapter), so it is filled with noise to make the adapter change outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base_path, out_path = Path(base_path).resolve(), Path(out_path)
    model = LlamaForCausalLM.from_pretrained(base_path)
    lora = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                      task_type="CAUSAL_LM")
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, noise)
    # peft records whatever string from_pretrained got; store the absolute path so resolution finds it
    # from any working directory.
    peft_model.peft_config["default"].base_model_name_or_path = str(base_path)
    peft_model.save_pretrained(out_path)
    return out_path


def retarget_adapter(adapter: str | Path, out_path: str | Path, target_modules: list[str], *,
                     drop_weights: tuple[str, ...] = (), rename_weights: dict[str, str] | None = None) -> Path:
    """Copy an adapter into ``out_path`` with its adapter_config.json naming ``target_modules``, without the
    weights of the modules in ``drop_weights`` and with those in ``rename_weights`` moved to another module
    name. For tests of adapters that do not fit their base: peft, training on targets ["q_proj", "x_proj"]
    where the base has no x_proj, saves that config and weights for q_proj alone."""
    import json

    from safetensors.torch import load_file, save_file

    out_path = Path(shutil.copytree(adapter, out_path))
    config = json.loads((out_path / "adapter_config.json").read_text())
    config["target_modules"] = list(target_modules)
    (out_path / "adapter_config.json").write_text(json.dumps(config))
    weights = load_file(out_path / "adapter_model.safetensors")
    kept = {}
    for key, tensor in weights.items():
        module = key.split(".lora_", 1)[0].rsplit(".", 1)[-1]
        if module in drop_weights:
            continue
        new = (rename_weights or {}).get(module)
        kept[key.replace(f".{module}.lora_", f".{new}.lora_") if new else key] = tensor
    save_file(kept, out_path / "adapter_model.safetensors")
    return out_path
