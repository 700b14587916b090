"""A session's generation through a pool of replicas (``--replicas N``, ``harness.backends.replicas``): each
finished shard is committed to the cache at once, and the run's statistics and terminal summary learn what
the replicas did, faults included."""

from __future__ import annotations

import time

from harness.backends.replicas import ReplicaPool
from harness.core.types import GenerationRequest, GenerationResult
from harness.engine.progress import generation_bar


def generate_sharded(session, backend: ReplicaPool, todo: list[GenerationRequest], progress: bool, *, cache):
    """The session's generation loop for a replica pool: each finished shard goes into the cache at once
    (a killed run keeps every finished shard), and the run's statistics and summary learn what the
    replicas did."""
    out: dict[str, GenerationResult] = {}

    def commit(results: dict[str, GenerationResult]) -> None:
        if cache is not None:
            cache.put_many(results)
        out.update(results)
        session.generated_keys.update(results)
        session.stats.n_generated += len(results)
        session.stats.n_response_tokens_generated += sum(r.n_tokens for r in results.values())

    bar = generation_bar(len(todo), progress)
    t0 = time.perf_counter()
    try:
        backend.generate(todo, progress=bar.update, on_shard=commit)
    finally:
        session.stats.generation_seconds += time.perf_counter() - t0
        bar.close()
        session.extra_metadata["replicas"] = backend.stats.as_dict()
    return out


def summary_lines(session) -> list[str]:
    """The terminal summary's lines about replicas: how many, and every fault and what was done about it."""
    info = session.extra_metadata.get("replicas")
    if not info:
        return []
    lines = [f"replicas {info['replicas']}: {info['shards']} shards, {info['replica_failures']} replica failure(s), "
             f"{info['shards_rerun']} shard(s) generated again"]
    lines += [f"  {event}" for event in info["events"]]
    return lines
