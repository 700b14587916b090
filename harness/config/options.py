"""The options objects a run hands its parts, and the names and defaults its settings choose among.

Each default is stated here once: ``RunSettings`` (harness.config.settings) takes its defaults from these
dataclasses, and the engine's preflight (harness.engine.preflight) builds them from the checked settings,
so a backend receives its own options, never the whole ``RunSettings``. Plain data: nothing here imports
above ``harness.core``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MODEL = "smollm2-135m-instruct"  # an alias of harness.models.resolve.ALIASES: the embedded model
TEMPLATES = ("auto", "chat", "alpaca", "raw")  # prompt templates (harness.models.templates builds them)


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding parameters; recorded in every report row and part of the cache key."""

    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens generated per response."})
    temperature: float = field(default=0.0, metadata={"help": "0 means greedy decoding (the default)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass; ignored when greedy."})
    seed: int = field(default=0, metadata={"help": "Sampling seed, recorded so sampled runs can be repeated."})
    num_beams: int = field(default=1, metadata={"help": "Beam search with this many beams; 1 is no beam search."})
    length_penalty: float = field(default=1.0, metadata={
        "help": "Beam search: a finished beam's score is its log-probability over length ** length_penalty."})
    early_stopping: str = field(default="false", metadata={
        "help": "Beam search stopping, as transformers' early_stopping: false (heuristic), true, never."})

    @property
    def beam_search(self) -> bool:
        return self.num_beams > 1

    def as_dict(self) -> dict:
        out = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        if self.beam_search:  # only then: greedy and sampled runs keep the cache keys and records they had
            out.update(num_beams=self.num_beams, length_penalty=self.length_penalty, early_stopping=self.early_stopping)
        return out


@dataclass(frozen=True)
class BackendOptions:
    """Settings a backend may use; each backend ignores what it does not need."""

    dtype: str = field(default="auto", metadata={"help": "auto: see generation_dtype."})
    batch_size: int = field(default=16, metadata={"help": "hf backend: prompts per generate() call."})
    max_model_len: int = field(default=2048, metadata={"help": "vllm: longest prompt+response in tokens."})
    kv_cache_gib: float = field(default=2.0, metadata={"help": "vllm on CPU: KV cache size (GiB)."})
    gpu_memory_utilization: float = field(default=0.85, metadata={"help": "vllm on GPU: memory fraction."})
    replay_path: str | None = field(default=None, metadata={"help": "replay: file holding the responses."})
    replay_response_column: str | None = field(default=None, metadata={"help": "replay: the response column."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run a model folder's own code."})
    batch_invariant: bool = field(default=False, metadata={"help": "vllm: VLLM_BATCH_INVARIANT=1 (NVIDIA, sm >= 80)."})
    extra: dict = field(default_factory=dict, metadata={"help": "Backend-specific keyword arguments."})


@dataclass(frozen=True)
class ParallelOptions:
    """How generation spreads over devices and engines: vLLM's own parallel settings (the first five, which
    harness.backends.vllm_backend passes to ``vllm.LLM``) and the pool of replicas (harness.backends.replicas)."""

    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one model copy is split across."})
    pipeline_parallel_size: int = field(default=1, metadata={"help": "Pipeline stages (layers split across devices)."})
    data_parallel_size: int = field(default=1, metadata={"help": "vLLM's own engine replicas (external_launcher)."})
    distributed_executor_backend: str | None = field(default=None, metadata={
        "help": "vLLM's executor: mp, ray, uni or external_launcher (None: vLLM picks)."})
    ray_address: str | None = field(default=None, metadata={"help": "A running Ray cluster's address."})
    replicas: int = field(default=1, metadata={"help": "Engines run as Ray actors, fed shards of prompts."})
