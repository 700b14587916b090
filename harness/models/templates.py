"""Prompt templates: the tokenizer's chat template, the paper's Alpaca template, or raw text.

Every backend receives the same token ids, built here, so vLLM and transformers see identical input and
their outputs can be compared prompt by prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.config.options import TEMPLATES  # noqa: F401  (the names are settings data; built here)
from harness.core.errors import ConfigError
from harness.core.types import Prompt


# The Alpaca-LoRA template the paper trained and evaluated with
# (vinid/safety-tuned-llamas, configs/alpaca.json, MIT).
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True)
class FormattedPrompt:
    text: str
    token_ids: tuple[int, ...]


def resolve_template(requested: str, *, tokenizer, saved: str | None = None) -> str:
    """Turn ``auto`` into a concrete template: the one saved with an adapter, else chat when the
    tokenizer has a chat template, else the paper's Alpaca template."""
    if requested not in TEMPLATES:
        raise ConfigError(f"unknown template {requested!r} (choose one of: {', '.join(TEMPLATES)})")
    if requested != "auto":
        if requested == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ConfigError("template 'chat': the model's tokenizer has no chat template; use --template alpaca or raw")
        return requested
    if saved:
        return resolve_template(saved, tokenizer=tokenizer)
    return "chat" if getattr(tokenizer, "chat_template", None) else "alpaca"


def user_message(prompt: Prompt) -> str:
    return f"{prompt.prompt}\n\n{prompt.input}" if prompt.input else prompt.prompt


def format_text(prompt: Prompt, template: str, tokenizer=None) -> str:
    if template == "alpaca":
        if prompt.input:
            return ALPACA_PROMPT_INPUT.format(instruction=prompt.prompt, input=prompt.input)
        return ALPACA_PROMPT_NO_INPUT.format(instruction=prompt.prompt)
    if template == "raw":
        return user_message(prompt)
    if template == "chat":
        messages = [{"role": "user", "content": user_message(prompt)}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    raise ConfigError(f"unknown template {template!r} (choose one of: {', '.join(TEMPLATES[1:])})")


def format_prompts(prompts: list[Prompt], template: str, tokenizer) -> list[FormattedPrompt]:
    """Apply ``template`` and tokenize in one batch call.

    Chat templates already write their special tokens (BOS included where the model wants one), so they
    are tokenized without adding more; Alpaca and raw text get the tokenizer's usual BOS.
    """
    texts = [format_text(p, template, tokenizer) for p in prompts]
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=(template != "chat"))["input_ids"]
    return [FormattedPrompt(text, tuple(ids)) for text, ids in zip(texts, encoded)]
