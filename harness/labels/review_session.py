"""One person's review: the queue of replies to label (the planned rows, a flip's two replies one after the
other), what is done, skipped and undoable, and the gate's verified checks after every label.

Done is read from the store at every step, not kept here: a label is done when the store holds it, so a
reloaded page, a restarted server or a second tab all resume at the first reply still to label. Skips and
the undo history are this session's own (a restart offers skipped replies again).

Blind by design: the scorer's verdict of a row is never sent to the page, nor any verified rate or
pass/fail, which a person might steer towards; the page learns only whether each check is decided.

The verification design's functions come from the caller (``verified_checks``, ``gate_decided``), so this
package stays below the engine in the import layers.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable

from harness.core.errors import HarnessError
from harness.core.types import REFUSAL_LABELS
from harness.labels.rubric import RUBRIC, RUBRIC_VERSION
from harness.labels.store import LabelStore


class StaleTask(HarnessError):
    """The page acted on a reply that is no longer the current one (a second tab, a double keypress)."""


@dataclass(frozen=True)
class Task:
    """One reply to label: a planned row's reply, or the baseline's reply of a flip."""

    id: int  # position in the queue
    item: int  # the planned row it belongs to
    side: str  # "A" or "B" on the page; a flip's baseline reply is either, by a hash of the pair
    key: str
    response: str
    baseline: bool


def _replies(row) -> list[tuple[str, str, str, bool]]:
    """(side, key, response, is the baseline's) of a planned row: one reply, or a flip's two."""
    replies = [(row.key, row.response, False)]
    if getattr(row, "baseline_key", None) and getattr(row, "baseline_response", None) is not None:
        replies.append((row.baseline_key, row.baseline_response, True))
        # Which side shows the baseline is a hash of the pair, so left and right tell the person nothing.
        if int(hashlib.sha256((row.key + row.baseline_key).encode()).hexdigest(), 16) % 2:
            replies.reverse()
    return [(side, *reply) for side, reply in zip("AB", replies)]


def review_queue(plan: list) -> list[Task]:
    """The planned rows' replies in order, a flip's two replies together; a reply met twice is asked once."""
    tasks: list[Task] = []
    seen: set[str] = set()
    for item, row in enumerate(plan):
        for side, key, response, baseline in _replies(row):
            if key not in seen:
                seen.add(key)
                tasks.append(Task(len(tasks), item, side, key, response, baseline))
    return tasks


class ReviewSession:
    """The state behind the review page; every method is safe to call from the server's threads."""

    def __init__(self, plan: list, rows: list, thresholds: dict, store: LabelStore, labeller: str, *,
                 verified_checks: Callable[..., list], gate_decided: Callable[[list], bool], seed: int = 0,
                 report: str = ""):
        self.plan, self.rows, self.thresholds = list(plan), list(rows), thresholds
        self.store, self.labeller, self.seed, self.report = store, labeller, seed, report
        self._verified_checks, self._gate_decided = verified_checks, gate_decided
        self.tasks = review_queue(self.plan)
        # The keys whose labels the verified rates read: every row of the report and its flips' baseline replies.
        self._row_keys = sorted({r.key for r in self.rows} | {t.key for t in self.tasks}
                                | {r.baseline_key for r in self.rows if getattr(r, "baseline_key", None)})
        self.known_at_start = len(self.store.labels(self._row_keys))
        self._skipped: set[int] = set()
        self._undo: list[tuple[str, int, int | None]] = []  # ("label", task, label id) | ("skip", task, None)
        self._lock = threading.RLock()
        self._checks: list | None = None
        self.revision = 0  # bumped by every change, so a page (and a test) can tell a fresh state

    # -- actions -------------------------------------------------------------------------------------------

    def label(self, task_id: int, label: str) -> int:
        if label not in REFUSAL_LABELS:
            raise HarnessError(f"{label!r} is not a label ({', '.join(REFUSAL_LABELS)})")
        with self._lock:
            task = self._current_or_stale(task_id)
            row = self.plan[task.item]
            label_id = self.store.add(task.key, label, labeller=self.labeller, prompt=row.prompt,
                                      input=row.input or "", response=task.response, source="review")
            self._undo.append(("label", task.id, label_id))
            self._changed()
            return label_id

    def skip(self, task_id: int) -> None:
        with self._lock:
            task = self._current_or_stale(task_id)
            self._skipped.add(task.id)
            self._undo.append(("skip", task.id, None))
            self._changed()

    def undo(self) -> str:
        """Take back this session's last label or skip; returns what was undone, in words."""
        with self._lock:
            if not self._undo:
                return "nothing to undo in this session"
            kind, task_id, label_id = self._undo[-1]
            if kind == "label":
                self.store.retract(label_id)  # a store error leaves the history as it was
            else:
                self._skipped.discard(task_id)
            self._undo.pop()
            self._changed()
            return f"undid the {kind} of reply {task_id + 1}"

    # -- what the page shows -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            mine, in_force = self._labelled()
            done = [t for t in self.tasks if t.key in mine or t.key in in_force]
            done_ids = {t.id for t in done}
            current = self._current(done_ids)
            checks = self._current_checks()
            return {
                "revision": self.revision,
                "report": self.report,
                "labeller": self.labeller,
                "store": str(self.store.path),
                "rubric_version": RUBRIC_VERSION,
                "rubric": [asdict(c) for c in RUBRIC],
                "progress": {"done": len(done), "skipped": len(self._skipped - done_ids), "total": len(self.tasks),
                             "known_at_start": self.known_at_start},
                "task": None if current is None else self._task_view(current, mine),
                "checks": [_blind_check(c) for c in checks],
                "decided": bool(checks) and bool(self._gate_decided(checks)),
                "can_undo": bool(self._undo),
            }

    def current_task(self) -> Task | None:
        with self._lock:
            mine, in_force = self._labelled()
            return self._current({t.id for t in self.tasks if t.key in mine or t.key in in_force})

    # -- internals -----------------------------------------------------------------------------------------

    def _labelled(self) -> tuple[dict[str, str], dict[str, str]]:
        """(this labeller's latest label per key, the labels in force) of the queue's keys."""
        keys = [t.key for t in self.tasks]
        records = self.store.records(keys)
        mine = {r.key: r.label for r in records if r.labeller == self.labeller}  # oldest first: latest wins
        return mine, self.store.labels(keys)

    def _current(self, done_ids: set[int]) -> Task | None:
        return next((t for t in self.tasks if t.id not in done_ids and t.id not in self._skipped), None)

    def _current_or_stale(self, task_id: int) -> Task:
        current = self.current_task()
        if current is None or current.id != task_id:
            raise StaleTask(f"reply {task_id + 1} is not the one to label now (the page was out of date; it is "
                            "shown afresh)")
        return current

    def _changed(self) -> None:
        self.revision += 1
        self._checks = None

    def _current_checks(self) -> list:
        if self._checks is None:
            labels = self.store.labels(self._row_keys)
            self._checks = list(self._verified_checks(self.rows, labels, self.thresholds, seed=self.seed))
        return self._checks

    def _task_view(self, task: Task, mine: dict[str, str]) -> dict[str, Any]:
        row = self.plan[task.item]
        replies = [{"side": side, "text": response, "active": key == task.key, "label": mine.get(key)}
                   for side, key, response, _ in _replies(row)]
        return {"id": task.id, "number": task.id + 1, "suite": row.suite, "category": row.category,
                "prompt_id": row.prompt_id, "prompt": row.prompt, "input": row.input or "",
                "flip": len(replies) > 1, "replies": replies}


def _blind_check(check) -> dict[str, Any]:
    """What the page may know of a verified check: which threshold, how many labelled, decided or not."""
    return {"suite": check.suite, "category": check.category, "metric": check.metric, "bound": check.bound,
            "threshold": check.threshold, "n_labelled": check.n_labelled, "N": check.N, "decided": check.decided}

