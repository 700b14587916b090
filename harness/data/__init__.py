"""Dataset loaders, the built-in smoke suite and deterministic subsampling."""

from harness.data.loaders import (
    load_alpaca_eval,
    load_alpaca_eval_references,
    load_instruction_data,
    load_prompt_file,
    load_smoke,
    load_stl,
    load_xstest,
)
from harness.data.sampling import stratified_sample

__all__ = [
    "load_alpaca_eval",
    "load_alpaca_eval_references",
    "load_instruction_data",
    "load_prompt_file",
    "load_smoke",
    "load_stl",
    "load_xstest",
    "stratified_sample",
]
