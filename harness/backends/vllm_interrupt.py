"""Ctrl-C while a vLLM engine starts: the run ends at once, and no engine process is left behind.

Left to itself, vLLM (0.32) turns a Ctrl-C during its start into a 10-minute hang. Its start-up
handshake runs inside ``vllm.utils.network_utils.zmq_socket_ctx``, which catches KeyboardInterrupt and
carries on, and the client then waits ``VLLM_ENGINE_READY_TIMEOUT_S`` (600 s) on a socket for a ready
message from an engine that died or will never finish its handshake. A Ctrl-C at a terminal also reaches
the engine process (it shares the terminal's process group); one still importing dies with a traceback of
its own on the user's terminal.

So, while ``vllm.LLM`` starts (``interruptible_start``):

- Engine processes are started with SIGINT blocked, as the standard library starts its resource tracker:
  a Ctrl-C is the main process's to handle. The engine keeps its SIGTERM handling, which is how vLLM
  stops it at shutdown (and how ``shutdown_engines`` stops it after a Ctrl-C during generation).
- A SIGINT in the main process kills the engine processes this start spawned (an interrupted start has
  nothing to keep) and raises KeyboardInterrupt. Where vLLM swallows it, the main thread is soon back in a
  socket poll; a helper thread sees that and delivers the signal again until the interrupt gets out.
- An error the killed engine causes on its way out ("Engine core initialization failed") is reported as
  the KeyboardInterrupt it is.

Only the main thread can handle signals: started from another thread (a Ray actor's), or where SIGINT does
not raise KeyboardInterrupt (ignored, or a handler of the user's own), the start is left as vLLM runs it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import threading
from multiprocessing.process import BaseProcess
from pathlib import Path

REDELIVER_EVERY_S = 0.2  # how often a swallowed interrupt is delivered again while the start still waits


class _Start:
    """One engine start's interrupt state: the processes that were already there, and whether a SIGINT came."""

    def __init__(self):
        self.interrupted = False
        self.children_before = set(multiprocessing.active_children())
        self.done = threading.Event()
        self._lock = threading.Lock()  # no redelivery once the start has returned
        self._redelivery: threading.Thread | None = None
        self._main = threading.main_thread().ident

    def on_sigint(self, signum, frame):
        self.interrupted = True
        for child in multiprocessing.active_children():
            if child not in self.children_before:
                child.kill()  # SIGKILL: a starting engine defers SIGTERM until its model is loaded
        if self._redelivery is None:
            self._redelivery = threading.Thread(target=self._redeliver, name="engine-start-interrupt", daemon=True)
            self._redelivery.start()
        raise KeyboardInterrupt

    def _redeliver(self) -> None:
        """Until the start has returned: whenever the main thread sits in a ZeroMQ poll (where vLLM waits
        after swallowing the interrupt), deliver SIGINT to it again."""
        while not self.done.wait(REDELIVER_EVERY_S):
            with self._lock:
                frame = sys._current_frames().get(self._main)
                if not self.done.is_set() and frame is not None and in_socket_poll(frame.f_code.co_filename):
                    signal.pthread_kill(self._main, signal.SIGINT)

    def finish(self) -> None:
        with self._lock:
            self.done.set()


def in_socket_poll(filename: str) -> bool:
    """Whether a frame of this file is pyzmq's own code (a socket poll or receive)."""
    return "zmq" in Path(filename).parts


@contextlib.contextmanager
def _children_without_sigint():
    """Processes started meanwhile (``multiprocessing``, spawn or fork) begin with SIGINT blocked: the
    signal mask survives fork and exec. The resource tracker is started first, because starting it
    unblocks SIGINT in the calling thread (multiprocessing.resource_tracker)."""
    from multiprocessing import resource_tracker

    original = BaseProcess.start

    def start(process):
        resource_tracker.ensure_running()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            original(process)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a SIGINT that came meanwhile fires now

    BaseProcess.start = start
    try:
        yield
    finally:
        BaseProcess.start = original


@contextlib.contextmanager
def interruptible_start():
    """Around ``vllm.LLM(...)``: a Ctrl-C ends the start at once with KeyboardInterrupt, engine processes
    killed (see the module's text)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    start = _Start()
    signal.signal(signal.SIGINT, start.on_sigint)
    try:
        with _children_without_sigint():
            yield
    except BaseException as exc:
        if start.interrupted and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # the engine the interrupt killed made vLLM fail: say what happened
        raise
    finally:
        start.finish()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if start.interrupted:  # swallowed for good: the engine processes are killed, so the engine is unusable
        raise KeyboardInterrupt
