"""LoRA safety tuning: mix general instruction data with N safety demonstrations and fine-tune a base model
with peft (``safety-harness train``). The adapter is saved with its prompt template, so
``pytest suites/ --model ADAPTER_DIR`` evaluates it the way it was trained."""

from harness.trainers.config import TrainConfig, safety_count_for_share
from harness.trainers.train import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "safety_count_for_share", "train"]
