"""Response text as every scorer takes it: one definition of "no response", of text a tokenizer can take,
and of the prompts/responses length check."""

from __future__ import annotations


def as_text(response) -> str:
    """None (no response) is the empty text; anything but a str is a caller's bug."""
    if response is None:
        return ""
    if not isinstance(response, str):
        raise TypeError(f"response must be str or None, got {type(response).__name__}")
    return response


def clean_text(response) -> str:
    """Text the tokenizer can take: None -> "", lone surrogates (undecodable bytes smuggled in via
    surrogateescape) -> "?", so that odd input gets a label instead of a tokenizer exception."""
    text = as_text(response)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def check_lengths(prompts: list, responses: list) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
