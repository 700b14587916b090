"""Run a training in this process and pause it at a chosen point, so that a test can SIGKILL it exactly
there. The pause prints one line, ``paused: ...``, then waits on stdin, which the test never writes: the
test kills on that line, never on a timer, and the point of the kill is the same on every machine.

    python -m tests.paused_run step N train ARGS...        # `safety-harness train ARGS`, paused inside
                                                           # optimizer step N: after its backward passes,
                                                           # before the weights change
    python -m tests.paused_run swap N train ARGS...        # paused between the two renames of the N-th
                                                           # checkpoint that replaces an earlier one
    python -m tests.paused_run step N build CONFIG_JSON CACHE_DIR   # harness.fixtures.build.build_adapter

Nothing else is changed: the command, the trainer and the fixture build run as they do for a user.
``killed_at`` is the test's side: it starts such a run and kills it on its pause line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

PAUSED = "paused:"
REPO = Path(__file__).resolve().parents[1]


def killed_at(point: str, n: int, args: list[str], log: Path) -> str:
    """Run ``python -m tests.paused_run POINT N ARGS`` in a subprocess, SIGKILL it on its pause line, and
    return its stderr (kept in ``log``). Fails when the run ends without reaching the pause."""
    with open(log, "w") as stderr, subprocess.Popen(
            [sys.executable, "-m", "tests.paused_run", point, str(n), *args], cwd=REPO, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr) as proc:
        printed = []
        for line in proc.stdout:  # blocks until the pause line, or the end of a run that never reaches it
            printed.append(line)
            if line.startswith(PAUSED):
                proc.send_signal(signal.SIGKILL)
                break
        status = proc.wait()
    assert status == -signal.SIGKILL, f"not paused at {point} {n}: {printed} {log.read_text()[-2000:]}"
    return log.read_text()


def _pause(where: str) -> None:
    print(f"{PAUSED} {where}", flush=True)
    sys.stdin.readline()  # the test kills this process while it waits here
    raise SystemExit(f"tests.paused_run: stdin closed while paused {where}; the test was to kill this process")


def pause_in_step(n: int) -> None:
    """Pause in the n-th optimizer step: the trainer clips the gradients once a step, between the backward
    passes and the optimizer update."""
    import torch

    clip = torch.nn.utils.clip_grad_norm_
    calls = 0

    def clip_then_pause(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == n:
            _pause(f"in step {n}")
        return clip(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = clip_then_pause


def pause_in_swap(n: int) -> None:
    """Pause after the n-th rename of ``checkpoint`` to ``checkpoint.old``, before the new checkpoint takes
    its place."""
    rename = os.replace
    calls = 0

    def rename_then_pause(src, dst, *args, **kwargs):
        nonlocal calls
        rename(src, dst, *args, **kwargs)
        if Path(dst).name == "checkpoint.old":
            calls += 1
            if calls == n:
                _pause(f"in the swap of checkpoint {n}")

    os.replace = rename_then_pause


def main(argv: list[str]) -> int:
    point, n, what, *rest = argv
    {"step": pause_in_step, "swap": pause_in_swap}[point](int(n))
    if what == "train":
        from harness.cli.main import main as cli

        return cli(["train", *rest])
    if what == "build":
        from harness.fixtures.build import build_adapter
        from harness.trainers.config import TrainConfig

        config_json, cache_dir = rest
        print(build_adapter(TrainConfig(**json.loads(config_json)), cache_dir=Path(cache_dir)), flush=True)
        return 0
    raise SystemExit(f"tests.paused_run: unknown run {what!r} (train or build)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
