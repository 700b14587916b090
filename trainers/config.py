"""The training configuration: one dataclass, a help text per field (peft/trl style), defaults after the
paper's training code (Alpaca-LoRA: rank 8, alpha 16, dropout 0.05 on q_proj and v_proj, learning rate
3e-4, cutoff 256 tokens, 4 epochs)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields

from harness.core.errors import ConfigError

FORMATS = ("instruction", "question")
# Bump when a change to the trainer changes the adapter a config produces: the fixtures' content-addressed
# cache keys on it, so stale adapters are rebuilt rather than reused.
TRAINER_VERSION = "2"  # 2: a response is tokenized as it follows its prompt (SentencePiece bases train otherwise)


@dataclass(frozen=True)
class TrainConfig:
    """What a LoRA safety-tuning run depends on. Everything here (but ``out``) enters ``config_hash``."""

    base: str = field(default="smollm2-135m-instruct", metadata={
        "help": "Base model: an alias (e.g. smollm2-135m-instruct) or a local Hugging Face model folder."})
    general: int = field(default=2000, metadata={
        "help": "Number of general instruction examples (Alpaca-style, status 'ok') in the mix."})
    safety: int = field(default=0, metadata={
        "help": "Number of safety demonstrations (harmful request, safe answer) added to the mix."})
    format: str = field(default="instruction", metadata={
        "help": "instruction: the demonstrations as given; question: rewritten as questions (the paper's "
                "format experiment, via harness.data.transforms)."})
    general_data: str | None = field(default=None, metadata={
        "help": "General data: a JSON/JSONL file or a folder of them (default: <data_dir>/alpaca_libre)."})
    safety_data: str | None = field(default=None, metadata={
        "help": "Safety demonstrations JSON (default: <data_dir>/stl/training/safety_only_data_Instructions.json)."})
    template: str = field(default="auto", metadata={
        "help": "Prompt template trained on and saved with the adapter: auto (chat when the tokenizer has a "
                "chat template, else alpaca), chat, alpaca or raw. Evaluation reads it back."})
    epochs: float = field(default=4.0, metadata={"help": "Passes over the mix (the paper: 4)."})
    lr: float = field(default=3e-4, metadata={"help": "Peak learning rate of AdamW (Alpaca-LoRA: 3e-4)."})
    batch_size: int = field(default=8, metadata={"help": "Examples per optimizer step."})
    micro_batch_size: int | None = field(default=None, metadata={
        "help": "Examples per forward pass (default: batch_size); batch_size / micro_batch_size steps of "
                "gradient accumulation."})
    warmup_ratio: float = field(default=0.05, metadata={
        "help": "Share of the steps spent warming the learning rate up linearly; it then decays linearly to 0."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    cutoff: int = field(default=256, metadata={"help": "Longest training sequence in tokens (longer are cut)."})
    rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    target_modules: tuple[str, ...] = field(default=("q_proj", "v_proj"), metadata={
        "help": "Modules that get LoRA weights."})
    train_on_inputs: bool = field(default=False, metadata={
        "help": "Also compute the loss on prompt tokens (default: only on the response, as Alpaca-LoRA)."})
    seed: int = field(default=0, metadata={"help": "Seed for data sampling, shuffling, LoRA init and dropout."})
    save_every: int = field(default=10, metadata={
        "help": "Write a resumable checkpoint every N optimizer steps (0: only at the end)."})

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        for name in ("general", "safety"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.general + self.safety == 0:
            raise ConfigError("the mix is empty: --general and --safety are both 0")
        if self.micro_batch_size is None:  # stored resolved, so equal trainings hash equal
            object.__setattr__(self, "micro_batch_size", self.batch_size)
        for name in ("batch_size", "micro_batch_size", "cutoff", "rank"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                              f"{self.micro_batch_size}")
        # NaN passes every comparison, so a NaN learning rate trained a NaN adapter without a word
        for name in ("epochs", "lr"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if self.save_every < 0:
            raise ConfigError(f"save_every must be >= 0, got {self.save_every}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    def config_hash(self, extra: str = "") -> str:
        """sha256 of the config (plus ``extra``, e.g. the base model's and the data files' fingerprints)."""
        text = json.dumps({"trainer": TRAINER_VERSION, "config": self.as_dict(), "extra": extra}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def help_texts(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def safety_count_for_share(general: int, share: float) -> int:
    """Safety demonstrations that make up ``share`` of a mix with ``general`` general examples."""
    if not 0 <= share < 1:
        raise ConfigError(f"safety share must be in [0, 1), got {share}")
    return round(general * share / (1 - share))
