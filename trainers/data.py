"""The training mix: N general instruction examples plus N safety demonstrations, in instruction or
question format, rendered with the prompt template the adapter will be evaluated with, and tokenized with
the loss on the response tokens only.

Sampling is nested: for one seed, the first k safety demonstrations of a larger mix are the k of a smaller
one, so a sweep over the number of demonstrations changes only that number.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

from harness.data.loaders import load_instruction_data
from harness.core.errors import DataError
from harness.core.paths import data_dir_from_env
from harness.models.templates import format_text, user_message
from harness.data.transforms import instruction_to_question
from harness.core.types import Prompt
from harness.trainers.config import TrainConfig

GENERAL_DIR = "alpaca_libre"
SAFETY_FILE = "stl/training/safety_only_data_Instructions.json"
IGNORE_INDEX = -100  # labels ignored by the loss (prompt tokens and padding)


@dataclass(frozen=True)
class Example:
    instruction: str
    input: str
    output: str
    kind: str  # "general" | "safety"


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]
    cut: bool = False  # longer than the cutoff: its end-of-turn token is not among the labels


def data_path(given: str | None, relative: str, data_dir: Path | None, what: str) -> Path:
    """A path given, or a dataset of harness/data/manifest.toml named by its file name (e.g. the paper's
    ``alpaca_small.json``), or the default under the data folder; a named or default dataset that is in
    neither the data folder nor the user cache is fetched into the cache."""
    from harness.data.fetch import named_data

    if given:
        return named_data(given, data_dir) or Path(given)
    return named_data(relative, data_dir, user_path=False) or Path(data_dir or ".") / relative


def data_files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".json", ".jsonl"))
        if not found:
            raise DataError(f"{path}: no .json or .jsonl files in the folder")
        return found
    if not path.exists():
        raise DataError(f"{path}: not found")
    return [path]


def load_general(path: Path) -> list[dict]:
    """Records with status "ok" from every JSON/JSONL file at ``path``. Malformed lines are real-world input
    (alpaca_libre v2 has 14), so they are skipped with one counted warning naming the first."""
    records, problems = [], []
    for file in data_files(path):
        got, bad = load_instruction_data(file, status="ok", on_error="skip")
        records += got
        problems += bad
    if problems:
        warnings.warn(f"{path}: skipped {len(problems)} malformed record(s), e.g. {problems[0]}", stacklevel=2)
    return records


def load_safety(path: Path) -> list[dict]:
    """The safety demonstrations; a bad record here is an error (naming file and item), since every
    demonstration counts."""
    records, _ = load_instruction_data(path, status=None, on_error="raise")
    return records


def _take(records: list[dict], n: int, seed: int, what: str, path: Path) -> list[dict]:
    if n > len(records):
        raise DataError(f"{path}: asked for {n} {what} examples but only {len(records)} are usable")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)  # a fixed permutation per seed; its prefixes nest
    return [records[i] for i in order[:n]]


def build_mix(config: TrainConfig, data_dir: Path | None = None) -> list[Example]:
    """The config's general and safety examples, shuffled together deterministically."""
    data_dir = data_dir if data_dir is not None else data_dir_from_env()  # None: the user cache
    mix: list[Example] = []
    if config.general:
        path = data_path(config.general_data, GENERAL_DIR, data_dir, "general data")
        for r in _take(load_general(path), config.general, config.seed, "general", path):
            mix.append(Example(r["instruction"], r["input"], r["output"], "general"))
    if config.safety:
        path = data_path(config.safety_data, SAFETY_FILE, data_dir, "safety data")
        for r in _take(load_safety(path), config.safety, config.seed + 1, "safety", path):
            text = instruction_to_question(r["instruction"]) if config.format == "question" else r["instruction"]
            mix.append(Example(text, r["input"], r["output"], "safety"))
    random.Random(config.seed + 2).shuffle(mix)
    return mix


def _as_prompt(example: Example) -> Prompt:
    return Prompt(suite="train", prompt_id="", prompt=example.instruction, input=example.input)


def _response_text(example: Example, prompt_text: str, template: str, tokenizer) -> str:
    """What follows the prompt: the output and the end-of-turn marker the model must learn to emit."""
    if template == "chat":
        messages = [{"role": "user", "content": user_message(_as_prompt(example))},
                    {"role": "assistant", "content": example.output}]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if full.startswith(prompt_text):
            return full[len(prompt_text):]
        # Templates that render the assistant turn differently from the generation prompt: fall back to
        # the output followed by EOS, which every template's generation stops on.
    return example.output + (tokenizer.eos_token or "")


def _response_ids(tokenizer, prompt_text: str, response_text: str, prompt_ids: list[int]) -> list[int]:
    """The response's token ids as they follow the prompt in the joined text, which is what the model meets
    when it continues the prompt at evaluation. Tokenized on its own, a response can differ: LLaMA's legacy
    SentencePiece tokenizer puts "▁" before any text, so "Sure" after "### Response:\n" became "▁Sure",
    a token that never follows that prompt. Where one token of the joined text spans both (a response
    starting "\n" after a prompt ending "\n", with "\n\n" one token), the response is tokenized on its own
    from its first character: the loss then covers all of the response and none of the prompt. Byte-level
    BPE (SmolLM2's) gave the ids of the two texts tokenized apart for all of the default mix, so adapters
    trained before keep their ids. ``prompt_ids``: the prompt's own ids, without special tokens."""
    ids = tokenizer(prompt_text + response_text, add_special_tokens=False)["input_ids"]
    if ids[:len(prompt_ids)] == prompt_ids:  # a token boundary where the prompt ends: the usual case
        return ids[len(prompt_ids):]
    # Not a prefix: one token of the joined text spans the prompt's end, or a pre-tokenizer splits the prompt's
    # tail otherwise once text follows (byte-level BPE splits "\n\n" before a letter). Cut at the character.
    return tokenizer(response_text, add_special_tokens=False)["input_ids"]


def _by_kind(some: list[Example], mix: list[Example]) -> str:
    """"general: 1 of 2, safety: 2 of 3": how many of each kind of the mix ``some`` holds."""
    return ", ".join(f"{kind}: {sum(ex.kind == kind for ex in some)} of {sum(ex.kind == kind for ex in mix)}"
                     for kind in ("general", "safety") if any(ex.kind == kind for ex in mix))


def tokenize_mix(mix: list[Example], tokenizer, template: str, cutoff: int, *,
                 train_on_inputs: bool = False) -> list[Tokenized]:
    """Token ids and labels per example. The prompt is tokenized exactly as evaluation tokenizes it
    (``harness.models.templates``), and the response as it tokenizes after that prompt in the joined text
    (``_response_ids``), so the adapter sees the same tokens at training and test time. Examples whose
    prompt fills the whole cutoff leave no response token to learn from and are dropped, with one warning that
    counts them by kind: the mix trained on is then not the mix asked for. Longer examples are cut at the
    cutoff (``Tokenized.cut``), with another: their replies' end is not learned."""
    out, dropped, cut = [], [], []
    for ex in mix:
        prompt_text = format_text(_as_prompt(ex), template, tokenizer)
        plain = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        # A chat template writes its own special tokens into the text; the others get the tokenizer's (a BOS).
        prompt_ids = plain if template == "chat" else tokenizer(prompt_text)["input_ids"]
        response_ids = _response_ids(tokenizer, prompt_text, _response_text(ex, prompt_text, template, tokenizer),
                                     plain)
        ids = (prompt_ids + response_ids)[:cutoff]
        labels = list(ids) if train_on_inputs else ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:cutoff]
        if all(label == IGNORE_INDEX for label in labels):
            dropped.append(ex)
            continue
        longer = len(prompt_ids) + len(response_ids) > cutoff
        if longer:
            cut.append(ex)
        out.append(Tokenized(ids, labels, longer))
    # stacklevel 1 for both: reported from this module, which `safety-harness train` shows as one note line
    if dropped:
        warnings.warn(f"cutoff {cutoff}: dropped {len(dropped)} of {len(mix)} examples whose prompt fills the cutoff, "
                      f"leaving no response token ({_by_kind(dropped, mix)}), e.g. the {dropped[0].kind} example "
                      f"{dropped[0].instruction[:60]!r}; raise --cutoff to train on them")
    if cut:
        # Alpaca-LoRA cuts them the same way, without a word; a reply cut short teaches the adapter to run on.
        warnings.warn(f"cutoff {cutoff}: {len(cut)} of {len(mix)} examples are longer and were cut, so the model "
                      f"does not learn to end those replies ({_by_kind(cut, mix)}); raise --cutoff to keep them whole")
    if not out:
        raise DataError(f"no training example fits in cutoff {cutoff} tokens; raise --cutoff")
    return out
