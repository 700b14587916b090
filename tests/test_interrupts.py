"""Ctrl-C at every phase of a run (data fetch, model preparation, engine start, generation, scoring,
report) ends it with pytest's one KeyboardInterrupt line and exit status 2, leaves no process of the run
behind, holds no lock (a second run right after goes through), and loses nothing already cached.

Each run is a real ``pytest suites/...`` in its own session, interrupted when it enters the phase: the
run notes each phase on a pipe (tests/interrupt_phases.py) or the test's data mirror says a download is
under way. A SIGINT goes to the run's whole process group (a Ctrl-C at a terminal) or to its main process
only. The hang guard is a guard, not a timing assertion; the seconds each run took to exit after the
signal are printed (``-s``) for docs/errors.md."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from harness.reports.parquet import read_report

from tests.data_mirror import Mirror
from tests.interrupt_phases import PHASE_FD_ENV

REPO = Path(__file__).resolve().parents[1]
# Guards only stop a hung run from hanging the test session; they are never a measure of speed, so they are
# set for a loaded machine (a CI run with two xdist workers beside other vLLM engines: a whole smoke run,
# model preparation included, took more than 120 s under a load average of 20-40).
HANG_GUARD_S = 600
ENGINE_GUARD_S = 900  # a vLLM engine starts in 1-3 minutes on 2 shared CPU cores
RUN_TOKEN_ENV = "SAFETY_HARNESS_TEST_RUN"  # marks every process of one run, children included
INTERRUPTED = 2  # pytest.ExitCode.INTERRUPTED


class Run:
    """One ``python -m pytest ...`` of the harness in its own session, with its phases on a pipe."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.token = uuid.uuid4().hex
        read_end, write_end = os.pipe()
        env = {**env, PHASE_FD_ENV: str(write_end), RUN_TOKEN_ENV: self.token}
        self.proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                      "-p", "tests.interrupt_phases", *args],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True, pass_fds=(write_end,))
        os.close(write_end)
        self._phases = os.fdopen(read_end, "r")
        self.lines: list[str] = []
        self.line_times: list[float] = []
        self.lines_at_signal = 0
        self.signalled_at: float | None = None
        self.exit_seconds: float | None = None
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()

    def _read_output(self) -> None:
        for line in self.proc.stdout:
            self.line_times.append(time.monotonic())
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, phase: str, guard: float = HANG_GUARD_S) -> None:
        """Block until the run notes ``phase`` (earlier phases are passed over)."""
        deadline = time.monotonic() + guard
        while True:
            ready, _, _ = select.select([self._phases], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.kill()
                pytest.fail(f"the run did not reach {phase!r} within the {guard} s guard:\n{self.output[-3000:]}")
            line = self._phases.readline()
            if not line:
                self.finish()
                pytest.fail(f"the run ended (exit status {self.proc.returncode}) before {phase!r}:\n"
                            f"{self.output[-3000:]}")
            if line.strip() == phase:
                return

    def interrupt(self, target: str, sig: int = signal.SIGINT) -> None:
        """SIGINT to the run's process group (``group``: a terminal's Ctrl-C) or its main process (``main``);
        ``sig`` another signal (SIGTERM: a cancelled CI job)."""
        self.lines_at_signal = len(self.lines)
        self.signalled_at = time.monotonic()
        if target == "group":
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def finish(self, guard: float = HANG_GUARD_S) -> int:
        try:
            self.proc.wait(guard)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the run was still running {guard} s after the signal (hang):\n{self.output[-3000:]}")
        if self.signalled_at is not None:
            self.exit_seconds = time.monotonic() - self.signalled_at
        self._reader.join(10)
        self._phases.close()
        return self.proc.returncode

    def kill(self) -> None:
        with_token = leftover_processes(self.token)
        for pid in [self.proc.pid, *with_token]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)

    def after_signal(self) -> str:
        return "\n".join(self.lines[self.lines_at_signal:])

    def leftovers(self) -> dict[int, str]:
        return leftover_processes(self.token)


def leftover_processes(token: str) -> dict[int, str]:
    """Live processes whose environment carries the run's token (every child inherits it): pid -> command."""
    marker = f"{RUN_TOKEN_ENV}={token}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def assert_interrupted(run: Run, phase: str, target: str, guard: float = HANG_GUARD_S) -> None:
    """Exit status 2 with pytest's KeyboardInterrupt line, no traceback, no process of the run left."""
    status = run.finish(guard)
    after = run.after_signal()
    said = [t for t, line in zip(run.line_times, run.lines) if "KeyboardInterrupt" in line]
    banner = f"; said KeyboardInterrupt after {said[0] - run.signalled_at:.1f} s" if said else ""
    print(f"\ninterrupt timing: {phase}, SIGINT to the {target}: exited {run.exit_seconds:.1f} s after the signal "
          f"(exit status {status}){banner}")
    assert status == INTERRUPTED, run.output[-4000:]
    assert "KeyboardInterrupt" in after, run.output[-4000:]
    for noise in ("Traceback", "INTERNALERROR", "Timed out", "EngineCore"):
        assert noise not in run.output, f"{noise!r} in the output:\n{run.output[-4000:]}"
    assert run.leftovers() == {}, f"processes of the interrupted run left behind: {run.leftovers()}"


@pytest.fixture
def run_env(tmp_path) -> dict[str, str]:
    """An empty user cache; datasets come from the shared folder, nothing from the network."""
    env = {k: v for k, v in os.environ.items() if k not in (PHASE_FD_ENV, "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    env.update(SAFETY_HARNESS_CACHE=str(tmp_path / "user-cache"), HF_HUB_OFFLINE="1", SAFETY_HARNESS_OFFLINE="1")
    return env


def smoke_args(tmp_path: Path, *extra: str, report: str = "report.parquet") -> list[str]:
    return ["suites/test_smoke.py", "--limit", "4", "--max-new-tokens", "8", "--cache-dir", str(tmp_path / "cache"),
            "--report", str(tmp_path / report), *extra]


def assert_completes(args: list[str], env: dict[str, str], guard: float = HANG_GUARD_S) -> Run:
    """A second run right after: it neither waits on a lock nor fails (1: the model crosses thresholds)."""
    run = Run(args, env)
    status = run.finish(guard)
    assert status in (0, 1), run.output[-4000:]
    assert "safety-harness summary" in run.output and "Traceback" not in run.output, run.output[-4000:]
    assert run.leftovers() == {}
    return run


# -- pytest's own report of an interrupt ------------------------------------------------------------------

UNNUMBERED_INTERRUPT = """
import sys, types

def test_interrupted_where_no_line_is():
    def here():
        return sys._getframe()
    # What CPython 3.11+ makes when a SIGINT lands on an instruction without a line number: an entry whose
    # tb_lineno is None (an instruction offset past the code's line table gives the same).
    unnumbered = types.TracebackType(None, here(), 10**6, -1)
    assert unnumbered.tb_lineno is None
    raise KeyboardInterrupt().with_traceback(unnumbered)
"""


def test_an_interrupt_whose_traceback_has_an_entry_without_a_line_still_ends_in_one_line(pytester):
    """Seen in CI while the embedded model was prepared: pytest's KeyboardInterrupt report computed
    tb_lineno - 1 on such an entry, failed with a TypeError, and the run ended with exit status 1 and pytest's
    own traceback. The plugin unlinks those entries first (harness/pytest_plugin/interrupts.py)."""
    pytester.makepyfile(test_unnumbered=UNNUMBERED_INTERRUPT)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    text = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.INTERRUPTED, text
    assert "KeyboardInterrupt" in text and "TypeError" not in text and "Traceback" not in text, text
    raised_at = 1 + UNNUMBERED_INTERRUPT.strip().splitlines().index(
        "    raise KeyboardInterrupt().with_traceback(unnumbered)")
    assert f"test_unnumbered.py:{raised_at}: KeyboardInterrupt" in text  # the entry with a line is kept


# -- phases without an engine ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["group", "main"])
def test_interrupt_during_data_fetch(tmp_path, run_env, data_dir, target):
    """The first file fetched stays (verified); the half-fetched one leaves no file; the next run fetches only it."""
    from harness.data.fetch import verify
    from harness.data.manifest import manifest

    physical, xstest = "stl/evaluation/I-PhysicalSafetySafe.json", "xstest/xstest_prompts.csv"
    env = {k: v for k, v in run_env.items() if k not in ("SAFETY_HARNESS_DATA", "SAFETY_HARNESS_OFFLINE")}
    data = tmp_path / "user-cache" / "data"
    with Mirror(data_dir) as mirror:
        mirror.stall = xstest  # sends half the file, then waits: the run is inside the fetch
        args = ["suites/test_physical_safety_safe.py", "suites/test_xstest.py", "--backend", "dummy", "--limit", "4",
                "--source", mirror.url, "--cache-dir", str(tmp_path / "cache"), "--report", str(tmp_path / "r.parquet")]
        run = Run(args, env)
        assert mirror.stalled.wait(HANG_GUARD_S), run.output
        run.interrupt(target)
        assert_interrupted(run, "data fetch", target)
        mirror.release.set()
        assert verify(manifest()[physical], data / physical) == "verified"  # fetched before the signal: kept
        assert not (data / xstest).exists() and not list(data.rglob("tmp*"))
        mirror.stall = None
        assert_completes(args, env)
        assert mirror.hits_for(physical) == 1 and verify(manifest()[xstest], data / xstest) == "verified"


@pytest.mark.parametrize("target", ["group", "main"])
def test_interrupt_during_scoring(tmp_path, run_env, target):
    args = smoke_args(tmp_path, "--backend", "dummy")
    run = Run(args, run_env)
    run.wait_for("scoring")
    run.interrupt(target)
    assert_interrupted(run, "scoring", target)
    assert not (tmp_path / "report.parquet").exists()
    assert_completes(args, run_env)


@pytest.mark.parametrize("target", ["group", "main"])
def test_a_sigterm_ends_a_run_as_a_ctrl_c_does(tmp_path, run_env, target):
    """A cancelled CI job or a stopped container sends SIGTERM: Python's default exits at once, with no
    cleanup (a vLLM engine on a GPU outlives it) and no word. The run takes the Ctrl-C path instead."""
    args = smoke_args(tmp_path, "--backend", "dummy")
    run = Run(args, run_env)
    run.wait_for("scoring")
    run.interrupt(target, signal.SIGTERM)
    assert_interrupted(run, "scoring", target)
    assert_completes(args, run_env)


@pytest.mark.parametrize("target", ["group", "main"])
def test_interrupt_while_the_report_is_written(tmp_path, run_env, target):
    """No report, not even a partial or temporary file: a report on disk is always a whole one."""
    args = smoke_args(tmp_path, "--backend", "dummy")
    run = Run(args, run_env)
    run.wait_for("report")
    run.interrupt(target)
    assert_interrupted(run, "report", target)
    assert not list(tmp_path.glob("*report.parquet*")), list(tmp_path.iterdir())
    assert_completes(args, run_env)
    read_report(tmp_path / "report.parquet")


@pytest.mark.slow
@pytest.mark.default_model
def test_interrupt_during_model_preparation_then_generation_keeps_finished_chunks(tmp_path, run_env):
    """The hf backend, one sequence so that the model is prepared and loaded twice rather than three times:
    (1) Ctrl-C (process group) while the embedded model is prepared from its GGUF: no half-built model
    folder, and the lock is free; (2) the next run prepares it whole, and a SIGINT to its main process once the
    first chunk of responses is in the cache keeps that chunk; (3) a last run serves that chunk from the cache."""
    args = smoke_args(tmp_path, "--backend", "hf", "--scorer", "refusal_patterns", "--chunk-size", "2")
    run = Run(args, run_env)
    run.wait_for("model preparation")
    run.interrupt("group")
    assert_interrupted(run, "model preparation", "group")
    models = tmp_path / "cache" / "models"
    assert not [p for p in models.iterdir() if p.is_dir()], list(models.iterdir())  # neither temporary nor partial

    second = Run(args, run_env)
    second.wait_for("generation")
    second.interrupt("main")
    assert_interrupted(second, "generation", "main")
    assert len([p for p in models.iterdir() if p.is_dir()]) == 1
    committed = cached_responses(tmp_path / "cache")
    assert committed >= 2
    last = assert_completes(args, run_env)
    _, meta = read_report(tmp_path / "report.parquet")
    assert meta["stats"]["n_cached"] >= committed, last.output[-3000:]


def cached_responses(cache_dir: Path) -> int:
    with sqlite3.connect(cache_dir / "generations.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]


# -- the engine-start guard on its own (harness.backends.vllm_interrupt), without vLLM ----------------------

# What vLLM's start does, in small: an engine process is spawned; the handshake wait swallows a
# KeyboardInterrupt (vllm.utils.network_utils.zmq_socket_ctx), then the client polls a socket for 600 s.
FAKE_START = """
import multiprocessing, signal, sys, time
import zmq
from harness.backends.vllm_interrupt import interruptible_start

def engine():
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    print("engine up, SIGINT blocked:", blocked, flush=True)
    time.sleep(600)

if __name__ == "__main__":
    child = None
    socket = zmq.Context().socket(zmq.PULL)
    socket.bind("inproc://ready")
    try:
        with interruptible_start():
            child = multiprocessing.get_context("spawn").Process(target=engine, name="EngineCore_DP0")
            child.start()
            try:
                print("handshake", flush=True)
                while True:
                    socket.poll(100)
            except KeyboardInterrupt:
                pass  # what vLLM's zmq_socket_ctx does
            socket.poll(600_000)
        print("started", flush=True)
    except KeyboardInterrupt:
        child.join(10)
        print("interrupted; engine exit code", child.exitcode, flush=True)
        sys.exit(2)
"""


@pytest.mark.parametrize("target", ["group", "main"])
def test_a_swallowed_interrupt_during_an_engine_start_still_ends_it(tmp_path, target):
    pytest.importorskip("zmq")  # pyzmq comes with vLLM
    script = tmp_path / "fake_start.py"
    script.write_text(FAKE_START)
    token = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, RUN_TOKEN_ENV: token})
    lines = []
    for line in proc.stdout:  # the engine process is up and the main process is in the handshake wait
        lines.append(line)
        if len([x for x in lines if x.startswith(("engine up", "handshake"))]) == 2:
            break
    if target == "group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the start waited on after the interrupt: " + "".join(lines))
    out = "".join(lines) + out
    assert proc.returncode == 2, out
    assert "engine up, SIGINT blocked: True" in out  # a terminal's Ctrl-C is the main process's alone
    assert "interrupted; engine exit code -9" in out and "Traceback" not in out, out
    assert leftover_processes(token) == {}


def test_the_guard_restores_what_it_changed_and_stays_out_of_other_threads():
    import multiprocessing.process

    from harness.backends.vllm_interrupt import in_socket_poll, interruptible_start

    start = multiprocessing.process.BaseProcess.start
    with interruptible_start():
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert multiprocessing.process.BaseProcess.start is not start
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert multiprocessing.process.BaseProcess.start is start

    seen = []

    def in_a_thread():
        with interruptible_start():  # signals belong to the main thread: nothing is installed here
            seen.append(multiprocessing.process.BaseProcess.start is start)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [True]
    assert in_socket_poll("/venv/lib/python3.11/site-packages/zmq/sugar/poll.py")
    assert not in_socket_poll("/venv/lib/python3.11/site-packages/vllm/v1/engine/core_client.py")


# -- the vLLM engine: start and generation, sharing engine starts ------------------------------------------


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.default_model
def test_interrupt_vllm_engine_start_and_generation(tmp_path, run_env):
    """One sequence, so that only two engines load in full: (1) Ctrl-C (process group) while the engine
    starts: the run ends at once instead of waiting 600 s for the engine the Ctrl-C killed; (2) the run
    right after starts its engine and generates, and a Ctrl-C after its first chunk keeps that chunk;
    (3) the next run reaches its engine start (the generation lock is free) and a SIGINT to its main
    process alone ends it too; (4) a last run completes, serving the first chunk from the cache."""
    args = smoke_args(tmp_path, "--backend", "vllm", "--scorer", "refusal_patterns", "--chunk-size", "2")
    first = Run(args, run_env)
    first.wait_for("engine start")
    first.interrupt("group")
    assert_interrupted(first, "engine start", "group")

    second = Run(args, run_env)
    second.wait_for("generation", guard=ENGINE_GUARD_S)
    second.interrupt("group")
    assert_interrupted(second, "generation", "group")
    committed = cached_responses(tmp_path / "cache")
    assert committed >= 2

    third = Run(args, run_env)
    third.wait_for("engine start")
    third.interrupt("main")
    assert_interrupted(third, "engine start", "main")

    last = assert_completes(args, run_env, guard=ENGINE_GUARD_S)
    _, meta = read_report(tmp_path / "report.parquet")
    assert meta["stats"]["n_cached"] >= committed, last.output[-3000:]
