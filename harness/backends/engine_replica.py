"""One vLLM engine in one process, as a Ray actor: the worker side of ``--replicas N``
(harness/backends/replicas.py is the pool that feeds it shards).

The engine runs in the actor's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): a ``kill -9`` of the
actor leaves no orphaned engine process behind. On CPU the process is pinned to its own slice of cores.
Nothing here imports Ray or vLLM at import time.
"""

from __future__ import annotations

import itertools
import os
import queue
import socket
import threading


def replica_cores(index: int, replicas: int, available: list[int]) -> list[int]:
    """The CPU cores replica ``index`` computes on: an equal, disjoint slice of this host's cores (shared
    round-robin when there are more replicas than cores)."""
    per = max(1, len(available) // replicas)
    start = (index * per) % len(available)
    return [available[(start + i) % len(available)] for i in range(per)]


class _Job:
    """One shard inside a replica: filled in by the engine loop, waited on by the Ray call."""

    def __init__(self, n: int, logprobs: bool = False):
        self.results: list = [None] * n
        self.left = n
        self.logprobs = logprobs  # the first token's top log-probabilities (adapter sanity), not the text
        self.error: BaseException | None = None
        self.done = threading.Event()


class EngineReplica:
    """One vLLM engine in one process (a Ray actor). Module level, so Ray ships it by reference.

    Shards arrive as concurrent calls (a threaded actor) and join the engine's running batch as they come,
    through one loop that steps the engine: vLLM batches continuously across shards, so a shard's last,
    longest responses do not leave the engine decoding a batch of one while the next shard waits."""

    def __init__(self, index: int, replicas: int, model, sampling, options, on_gpu: bool):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine in this process: killed with it
        self.cores = None
        if not on_gpu:
            self.cores = replica_cores(index, replicas, sorted(os.sched_getaffinity(0)))
            # Set before torch starts its OpenMP pool in this process, which the import below does.
            os.sched_setaffinity(0, self.cores)
            os.environ["OMP_NUM_THREADS"] = str(len(self.cores))
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"  # the affinity above already binds
        from harness.backends.vllm_backend import VLLMBackend

        self.backend = VLLMBackend(model=model, sampling=sampling, options=options)
        self._inbox: queue.Queue = queue.Queue()
        self._request_ids = itertools.count()
        threading.Thread(target=self._engine_loop, name="engine-loop", daemon=True).start()

    def describe(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "cores": self.cores}

    def generate(self, token_ids: list[list[int]], sampling, use_adapter: bool) -> list[tuple[str, int, str]]:
        """One shard. Sampling and adapter use come with each call, so the pool's adapter sanity check (base
        model on the canaries, a few greedy tokens) reaches every engine as it would one."""
        if not token_ids:
            return []
        self.backend.sampling = sampling
        return self._run(_Job(len(token_ids)), token_ids, self.backend._sampling_params(), use_adapter)

    def next_token_logprobs(self, token_ids: list[list[int]], top_k: int, use_adapter: bool) -> list[dict]:
        """The top ``top_k`` next-token log-probabilities of each prompt, through the same engine loop as the
        shards (adapter sanity: harness.engine.adapter_sanity compares them with and without the adapter)."""
        from vllm import SamplingParams

        if not token_ids:
            return []
        params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=top_k, seed=self.backend.sampling.seed)
        return self._run(_Job(len(token_ids), logprobs=True), token_ids, params, use_adapter)

    def _run(self, job: _Job, token_ids: list[list[int]], params, use_adapter: bool) -> list:
        """Hand one shard to the engine loop and wait for it; an engine error is raised here, in the call."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params.output_kind = RequestOutputKind.FINAL_ONLY  # as vllm.LLM.generate asks: the finished outputs only
        lora = self.backend.lora_request if use_adapter else None
        self._inbox.put((job, [TokensPrompt(prompt_token_ids=list(ids)) for ids in token_ids], params, lora))
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.results

    def _engine_loop(self) -> None:
        engine = self.backend.engine.llm_engine
        owners: dict[str, tuple[_Job, int]] = {}
        while True:
            try:
                while True:  # take every waiting shard; block only when the engine has nothing to do
                    job, prompts, params, lora = self._inbox.get(block=not owners)
                    for i, prompt in enumerate(prompts):
                        request_id = str(next(self._request_ids))
                        engine.add_request(request_id, prompt, params, lora_request=lora)
                        owners[request_id] = (job, i)
            except queue.Empty:
                pass
            try:
                outputs = engine.step()
            except BaseException as exc:  # noqa: BLE001  (the waiting calls raise it, in the driver)
                for job in {id(j): j for j, _ in owners.values()}.values():
                    job.error = exc
                    job.done.set()
                owners.clear()
                continue
            for out in outputs:
                if not out.finished or out.request_id not in owners:
                    continue
                job, i = owners.pop(out.request_id)
                completion = out.outputs[0]
                if job.logprobs:
                    job.results[i] = {int(t): float(lp.logprob) for t, lp in completion.logprobs[0].items()}
                else:
                    job.results[i] = (completion.text, len(completion.token_ids), completion.finish_reason or "")
                job.left -= 1
                if job.left == 0:
                    job.done.set()
