"""Generation across N vLLM engines, each a Ray actor (``--replicas N``).

Why plain Ray actors (see docs/parallel.md): vLLM's own data parallelism needs one launcher process per
rank for the offline ``LLM`` and gives the harness no say over which prompts failed when a rank dies; Ray
Data's vLLM stage is a dataset pipeline that wants GPUs and hands results back when the dataset is
written, not shard by shard into the generation cache. An actor per engine plus a work queue of small
shards is what lets each finished shard be committed at once and an unfinished one be generated again.

Each replica runs its engine in the actor's own process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and the
``uni`` executor): a ``kill -9`` of the actor leaves no orphaned engine process behind, and on CPU the
process is pinned to its own cores, so N replicas do not all bind to the same core (vLLM's automatic
binding would give every engine the same one).

Nothing here imports Ray or vLLM at import time: Ray is the optional extra ``safety-harness[ray]``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace

from harness.config.options import ParallelOptions
from harness.core.errors import BackendError, ConfigError
from harness.core.types import GenerationRequest, GenerationResult
from harness.backends.engine_replica import EngineReplica

RAY_EXTRA = "pip install 'safety-harness[ray]'"
SHARDS_PER_REPLICA = 8  # small shards: a lost or straggling shard costs little
MAX_SHARD = 64  # prompts per shard at most: the most work one lost shard costs
MAX_SHARD_ATTEMPTS = 3  # a shard that has killed this many engines is a fault of its own
RESTARTS_PER_REPLICA = 1  # Ray restarts a killed replica's actor (reloading its engine) this often
# Shards travel as token ids and come back as text: kilobytes. Ray's default store would claim 30% of memory.
LOCAL_OBJECT_STORE = 256 * 1024**2
# Shards each replica's engine batches together (up to 4 x 64 = vLLM's 256 sequences on CPU); a killed
# replica costs at most these.
IN_FLIGHT_PER_REPLICA = 4


def validate_replicas(parallel: ParallelOptions, backend: str) -> None:
    """One-line ConfigError for a bad ``replicas``, a non-vLLM ``backend`` (``auto`` allowed), or Ray missing
    (before any model loads)."""
    n = parallel.replicas
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"replicas must be a whole number of at least 1, got {n!r}")
    if n == 1:
        return
    from harness.backends.base import resolve_backend_name

    backend = resolve_backend_name(backend)
    if backend != "vllm":
        raise ConfigError(f"replicas applies to the vllm backend only (backend is {backend})")
    if parallel.data_parallel_size > 1 or parallel.tensor_parallel_size > 1 or parallel.pipeline_parallel_size > 1:
        raise ConfigError("replicas > 1 runs one single-device engine per replica; drop tensor/pipeline/data_parallel_size")
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError(f"--replicas {n} needs Ray, an optional extra: {RAY_EXTRA}")
    if parallel.ray_address:  # an unreachable cluster fails here, before any model is resolved or loaded
        try:
            check_reachable(parallel.ray_address)
        except BackendError as exc:
            raise ConfigError(str(exc)) from None


# -- the pool --------------------------------------------------------------------------------------
@dataclass
class Shard:
    number: int
    requests: list[GenerationRequest]
    attempts: int = 0


@dataclass
class ReplicaStats:
    """What the run's summary and report say about the replicas."""

    replicas: int = 0
    shards: int = 0
    shards_rerun: int = 0
    replica_failures: int = 0
    events: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"replicas": self.replicas, "shards": self.shards, "shards_rerun": self.shards_rerun,
                "replica_failures": self.replica_failures, "events": list(self.events)}


def _engine_options(options):
    """Each replica is a one-device engine; the Ray address is the pool's, not the engine's executor."""
    extra = dict(options.extra)
    if extra.pop("ray_address", None) and extra.get("distributed_executor_backend") == "ray":
        del extra["distributed_executor_backend"]
    extra["distributed_executor_backend"] = "uni"
    return replace(options, extra=extra)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, in seconds, when a Ray cluster's address does not answer (Ray's own connect
    retries for minutes before it gives up)."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise BackendError(f"ray_address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BackendError(f"Ray cluster at {address} cannot be reached ({exc.strerror or exc}); "
                           "check --ray-address, or leave it out to run on a local Ray instance") from None


@contextlib.contextmanager
def _sigint_deferred():
    """Ray's own start (``ray.init``, creating the actors) is not to be interrupted halfway: a Ctrl-C there
    ended the process with SIGSEGV at exit, or left it hanging with Ray's processes alive (docs/errors.md,
    Ctrl-C). So a SIGINT meanwhile is held (``.pending``) until that start is over. Only the main thread
    can hold it; elsewhere, or where SIGINT does not raise KeyboardInterrupt, nothing changes."""
    held = SimpleNamespace(pending=False)
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield held
        return
    signal.signal(signal.SIGINT, lambda signum, frame: setattr(held, "pending", True))
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class ReplicaPool:
    """``--replicas N``: N engines as Ray actors fed from a work queue of small shards. A backend like any
    other to the session (harness.backends.base.Backend): each finished shard goes to ``on_results``, and
    ``run_facts`` gives the run's metadata the replicas' record (shards, faults, what was done about them)."""

    name = "vllm"

    def __init__(self, *, model, sampling, options, replicas: int, ray_address: str | None,
                 replica_class=None):  # another class only in tests of the scheduling itself
        import ray  # noqa: F401  (the extra; validate_replicas said so already when missing)

        from harness.backends.vllm_settings import on_gpu_platform

        self.stats = ReplicaStats(replicas=replicas)
        self.sampling = sampling
        # Like VLLMBackend's: harness.engine.adapter_sanity clears it to ask the engines for the base model's answers.
        self.lora_request = "adapter" if model.adapter_path else None
        self._ray = ray
        self._started_ray = False
        if ray_address:
            check_reachable(ray_address)
        on_gpu = on_gpu_platform()
        self.replicas = []
        with _sigint_deferred() as ctrl_c:
            self._start_ray(ray_address, replicas)
            if not ctrl_c.pending:  # no actor (no engine) to start and stop again for a run that is over
                actor = ray.remote(replica_class or EngineReplica).options(
                    num_cpus=1, num_gpus=1 if on_gpu else 0, max_restarts=RESTARTS_PER_REPLICA, max_task_retries=0,
                    max_concurrency=IN_FLIGHT_PER_REPLICA + 1)  # threaded: shards wait in the engine, not Ray's queue
                engine_options = _engine_options(options)
                self.replicas = [actor.remote(i, replicas, model, sampling, engine_options, on_gpu)
                                 for i in range(replicas)]
        if ctrl_c.pending:  # Ray has started in full: stop it, and end the run as the Ctrl-C asked
            self.close()
            raise KeyboardInterrupt
        self.failures = [0] * replicas
        self.states = ["ready"] * replicas  # ready | restarting | dead
        self._probes: dict = {}  # describe() call on a restarting replica -> its index
        self._probe_later: dict = {}  # restarting replica -> when to ask again whether it is back
        # Each replica on its own: one whose engine cannot start (twice: Ray restarts it once) is dropped, and
        # the run goes on with the others; none at all is one line.
        described, errors = {}, []
        with self._closed_on_interrupt():
            for i, r in enumerate(self.replicas):
                try:
                    described[i] = ray.get(r.describe.remote())
                except ray.exceptions.RayError as exc:
                    self.states[i] = "dead"
                    self.stats.replica_failures += 1
                    errors.append(f"replica {i} failed to start ({_first_line(exc)[:160]}); dropped")
        if not described:
            self.close()
            raise BackendError(f"no replica's engine could start: {errors[0]}")
        started = "started " + ", ".join(
            f"replica {i} (pid {d['pid']} on {d['host']}" + (f", cores {d['cores']})" if d["cores"] else ")")
            for i, d in described.items())
        self.stats.events += [started, *errors]
        print(f"safety-harness: replicas {started}", file=sys.stderr, flush=True)  # which process to watch

    def next_token_logprobs(self, requests: list[GenerationRequest], top_k: int = 20) -> list[dict[int, float]]:
        """Like VLLMBackend's, spread over the live replicas (request i on replica i mod n), so the adapter
        sanity check sees every engine's adapter, with the adapter unless ``lora_request`` was cleared."""
        ray = self._ray
        live = [r for r, state in zip(self.replicas, self.states) if state == "ready"]
        calls = [(live[k % len(live)], [list(r.token_ids)]) for k, r in enumerate(requests)]
        refs = [replica.next_token_logprobs.remote(ids, top_k, self.lora_request is not None) for replica, ids in calls]
        return [ray.get(ref)[0] for ref in refs]

    def shard_size(self, n: int) -> int:
        return max(1, min(MAX_SHARD, math.ceil(n / (len(self.replicas) * SHARDS_PER_REPLICA))))

    def _start_ray(self, ray_address: str | None, replicas: int) -> None:
        """Join the cluster at ``ray_address``, or start a private local instance (unless Ray is running)."""
        ray = self._ray
        if ray.is_initialized():
            return
        from harness.backends.vllm_quiet import ray_logging_level

        quiet = ray_logging_level()  # Ray's start-up lines, like vLLM's, only with -v or --engine-logs
        try:
            if ray_address:
                ray.init(address=ray_address, log_to_driver=False, logging_level=quiet)
            else:  # a private local instance sized so that every replica's actor is placed
                # Ray's own memory monitor kills workers when the *host* passes 95% memory, whoever uses it:
                # on a shared machine it killed engines that had their memory already. The kernel's OOM
                # killer stays the last word, and a replica it kills is handled like any other death.
                os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
                ray.init(num_cpus=max(replicas, os.cpu_count() or 1), include_dashboard=False,
                         log_to_driver=False, object_store_memory=LOCAL_OBJECT_STORE, logging_level=quiet)
        except (ConnectionError, RuntimeError) as exc:
            raise BackendError(f"Ray cluster at {ray_address or 'local'} cannot be started or joined: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        self._started_ray = True

    @contextlib.contextmanager
    def _closed_on_interrupt(self):
        """A Ctrl-C ends the run: the replicas (and a private Ray instance) are stopped at once, not at the
        interpreter's exit. Finished shards are in the cache already."""
        try:
            yield
        except KeyboardInterrupt:
            self.close()
            raise

    def generate(self, requests: list[GenerationRequest], *, progress=None, on_results=None,
                 chunk_size: int | None = None) -> list[GenerationResult]:
        """Results in the order of ``requests``. Longest prompts first, so the last shards are the short
        ones and no replica is left with a long tail; ``on_results({key: result})`` as each shard finishes.
        The whole batch goes into one work queue, whatever ``chunk_size``: shards hold at most MAX_SHARD
        prompts, and a chunk's end would leave replicas idle while its last shards finish."""
        if not requests:
            return []
        with self._closed_on_interrupt():
            return self._generate(requests, progress, on_results)

    def run_facts(self) -> dict:
        return {"replicas": self.stats.as_dict()}

    def _generate(self, requests: list[GenerationRequest], progress, on_results) -> list[GenerationResult]:
        ray = self._ray
        ordered = sorted(requests, key=lambda r: -len(r.token_ids or ()))
        size = self.shard_size(len(ordered))
        waiting = [Shard(i, ordered[s : s + size]) for i, s in enumerate(range(0, len(ordered), size))]
        self.stats.shards += len(waiting)
        done: dict[str, GenerationResult] = {}
        in_flight: dict = {}  # ObjectRef -> (replica index, shard, replica incarnation)
        while waiting or in_flight:
            for index, at in list(self._probe_later.items()):  # restarts still under way: ask again
                if time.monotonic() >= at:
                    del self._probe_later[index]
                    self._probes[self.replicas[index].describe.remote()] = index
            for index, state in enumerate(self.states):
                while (state == "ready" and waiting
                       and sum(1 for i, _, _ in in_flight.values() if i == index) < IN_FLIGHT_PER_REPLICA):
                    shard = waiting.pop(0)
                    shard.attempts += 1
                    ref = self.replicas[index].generate.remote([list(r.token_ids) for r in shard.requests],
                                                               self.sampling, self.lora_request is not None)
                    # The replica's incarnation goes with the shard: a shard of a death already counted
                    # can come back after Ray restarted the replica, and must not count as a second death.
                    in_flight[ref] = (index, shard, self.failures[index])
            if not in_flight and not self._probes and not self._probe_later:
                raise BackendError(f"every replica has failed; {sum(len(s.requests) for s in waiting)} prompts "
                                   "not generated (finished shards are in the cache: run again to resume)")
            ready, _ = ray.wait(list(in_flight) + list(self._probes), num_returns=1,
                                timeout=1.0 if self._probe_later else None)
            if not ready:
                continue
            if ready[0] in self._probes:
                self._restart_finished(ready[0])
                continue
            index, shard, incarnation = in_flight.pop(ready[0])
            try:
                outputs = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                    ray.exceptions.TaskCancelledError) as exc:
                self._shard_lost(index, shard, exc, waiting, in_flight, incarnation)
                continue
            results = {r.key: GenerationResult(*o) for r, o in zip(shard.requests, outputs)}
            if on_results is not None:
                on_results(results)
            done.update(results)
            if progress:
                progress(len(results))
        return [done[r.key] for r in requests]

    def _shard_lost(self, index: int, shard: Shard, exc, waiting: list, in_flight: dict, incarnation: int) -> None:
        """A shard's replica died before answering: the shard goes back to the front of the queue, for a
        survivor or for the replica once Ray has restarted it. Each shard is awaited on its own, so one that
        finished before its replica died is kept, never generated twice."""
        if self.states[index] == "ready" and incarnation == self.failures[index]:  # the replica's fate, decided once per death
            self.failures[index] += 1
            self.stats.replica_failures += 1
            if self.failures[index] > RESTARTS_PER_REPLICA:
                self.states[index] = "dead"
                fate = "dropped (it has died before)"
            else:
                self.states[index] = "restarting"
                self._probes[self.replicas[index].describe.remote()] = index  # answers once restarted
                fate = "Ray restarts it; survivors take its shards meanwhile"
            # Shards Ray had not yet handed to the dead process would wait for the restart (an engine load):
            # cancel them so that they come back here and go to a survivor now. One already finished keeps
            # its result (cancelling a finished task changes nothing).
            for ref, (i, _, _) in list(in_flight.items()):
                if i == index:
                    self._ray.cancel(ref)
            self.stats.events.append(f"replica {index} died ({type(exc).__name__}: {_first_line(exc)[:80]}); {fate}")
        if shard.attempts >= MAX_SHARD_ATTEMPTS:
            raise BackendError(f"shard {shard.number} ({len(shard.requests)} prompts) was lost with {shard.attempts} "
                               f"replicas in a row; last: {_first_line(exc)}")
        self.stats.shards_rerun += 1
        waiting.insert(0, shard)
        self.stats.events.append(f"shard {shard.number} ({len(shard.requests)} prompts) unfinished on replica "
                                 f"{index}: generated again")

    def _restart_finished(self, probe) -> None:
        index = self._probes.pop(probe)
        try:
            info = self._ray.get(probe)
        except self._ray.exceptions.ActorUnavailableError:  # "temporarily unavailable": still restarting
            self._probe_later[index] = time.monotonic() + 2.0
            return
        except self._ray.exceptions.RayError as exc:
            self.states[index] = "dead"
            self.stats.events.append(f"replica {index} could not be restarted ({_first_line(exc)[:80]}); dropped")
            return
        self.states[index] = "ready"
        self.stats.events.append(f"replica {index} restarted (pid {info['pid']})")

    def close(self) -> None:
        ray = self._ray
        for r in getattr(self, "replicas", []):
            try:
                ray.kill(r)
            except Exception:  # already dead: nothing to release
                pass
        self.replicas = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def start_replicas(parallel: ParallelOptions, *, model, sampling, options) -> ReplicaPool:
    return ReplicaPool(model=model, sampling=sampling, options=options, replicas=parallel.replicas,
                       ray_address=parallel.ray_address)
