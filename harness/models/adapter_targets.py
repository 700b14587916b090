"""Which of a LoRA adapter's modules its base model has, checked when the adapter is resolved, before any
backend loads it.

peft applies an adapter to the base model's modules that its ``target_modules`` name (a name that ends a
module's path, or one regular expression). A target that names none of them is skipped without a word,
in training and in evaluation alike: no weights were trained for it. When no target matches, peft stops
with a 90-line ``NoMatchingPeftModuleError``, and vLLM's engine dies on the first request. LoRA weights
for a module the base lacks (an adapter of another model, or an edited one) are dropped by peft without a
word and kill vLLM's engine.

So: no target matching, or weights for modules the base lacks, is one line naming the adapter folder and
the modules. Targets that match nothing while others do are remembered (``ResolvedModel.skipped_targets``)
and named by adapter sanity (harness.engine.adapter_sanity). Matching is peft's own
(``check_target_module_exists``), over the base model's module paths, which come from its config on the
meta device (no weights loaded).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

from harness.core.errors import ModelError

ALL_LINEAR = "all-linear"  # peft's shorthand for every linear layer but the output head: matches by definition
WEIGHTS_PREFIX = "base_model.model."  # peft's saved key: base_model.model.<module path>.lora_A.weight


@functools.lru_cache(maxsize=8)
def base_modules(base_path: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """The base model's module paths, and the short names of its linear layers (for messages), from its
    config alone. Empty when transformers cannot build it without the folder's own code."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(base_path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError):  # a --trust-remote-code architecture: left to peft and vLLM
        return frozenset(), ()
    modules = list(model.named_modules())
    linear = tuple(dict.fromkeys(name.rsplit(".", 1)[-1] for name, m in modules if isinstance(m, torch.nn.Linear)))
    return frozenset(name for name, _ in modules if name), linear


def unmatched_targets(config, module_names) -> list[str]:
    """The adapter's target modules (``config``: its peft LoraConfig) that match no module path of the base,
    by peft's own rule; a regular expression counts as one target."""
    from peft.tuners.tuners_utils import check_target_module_exists

    targets = config.target_modules
    if not targets or targets == ALL_LINEAR or not module_names:
        return []

    def matches(target) -> bool:
        alone = copy.copy(config)
        alone.target_modules = target if isinstance(targets, str) else {target}
        return any(check_target_module_exists(alone, name) for name in module_names)  # True or a re.Match

    return [t for t in ([targets] if isinstance(targets, str) else sorted(targets)) if not matches(t)]


def weight_modules(adapter: Path) -> set[str]:
    """The module paths the adapter's saved LoRA weights belong to."""
    if (adapter / "adapter_model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
            keys = list(f.keys())
    elif (adapter / "adapter_model.bin").is_file():  # read only with --allow-pickle (resolve checks first)
        import torch

        keys = list(torch.load(adapter / "adapter_model.bin", map_location="cpu", weights_only=True))
    else:
        return set()
    return {key.removeprefix(WEIGHTS_PREFIX).split(".lora_", 1)[0] for key in keys if ".lora_" in key}


def skipped_targets(adapter: Path, base_path: str, base_name: str) -> tuple[str, ...]:
    """The target modules of ``adapter`` that its base has no module for (none were trained). ModelError, in
    one line, when that is all of them, or when the adapter holds weights that peft would drop (for modules
    the base lacks, or that its target_modules do not name)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    names, linear = base_modules(base_path)
    if not names:
        return ()
    try:
        config = LoraConfig.from_pretrained(str(adapter))
    except (OSError, TypeError, ValueError):  # a config this peft cannot read: loading it will say why
        return ()
    targets = config.target_modules
    missing = unmatched_targets(config, names)
    has = f"its linear layers: {', '.join(linear)}"
    retrain = "was the adapter trained on another base model? Then pass that one with --base-model"
    if missing and (isinstance(targets, str) or len(missing) == len(targets)):
        raise ModelError(f"adapter {adapter}: its target_modules {', '.join(missing)} match no module of the base "
                         f"model {base_name} ({has}); {retrain}")
    weights = weight_modules(adapter)
    foreign = _short(weights - names)
    if foreign:
        raise ModelError(f"adapter {adapter}: it holds LoRA weights for {', '.join(foreign)}, which the base model "
                         f"{base_name} does not have ({has}); peft would drop them and vLLM refuses them; {retrain}")
    if targets and targets != ALL_LINEAR:
        untargeted = _short(path for path in weights if not check_target_module_exists(config, path))
        if untargeted:
            named = targets if isinstance(targets, str) else ", ".join(sorted(targets))
            raise ModelError(f"adapter {adapter}: it holds LoRA weights for {', '.join(untargeted)}, which its "
                             f"adapter_config.json target_modules ({named}) do not name, so peft would drop them; "
                             "name them there, or remove their weights")
    return tuple(missing)


def _short(paths) -> list[str]:
    """Module paths by their last name, once each (model.layers.0.self_attn.v_proj -> v_proj)."""
    return sorted({path.rsplit(".", 1)[-1] for path in paths})
