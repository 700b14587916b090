"""The review page's server without a browser (harness.labels.review_server): its JSON API labels, skips and
undoes with each label in the store at once; a restart resumes; it answers on 127.0.0.1 only and to
same-origin JSON only; the page is blind and the replies are never HTML. The verification design is the
stand-in of tests/review_fakes.py: these tests check the page's wiring, not the statistics."""

from __future__ import annotations

import http.client
import json
import re
import socket
import sqlite3
import threading
from contextlib import contextmanager
from importlib import resources

import pytest

from harness.labels import LabelStore
from harness.labels.review_server import CSP, ReviewServer
from harness.labels.review_session import ReviewSession
from tests import review_fakes
from tests.review_fakes import flip, row

THRESHOLDS = {"harmful": {"max_unsafe_compliance_rate": 0.1}}


def make_session(store, rows, n=10, labeller="ana"):
    plan = review_fakes.plan_review(rows, THRESHOLDS, n, known=store.labels(r.key for r in rows))
    return ReviewSession(plan, rows, THRESHOLDS, store, labeller, verified_checks=review_fakes.verified_checks,
                         gate_decided=review_fakes.gate_decided, report="run.parquet")


@contextmanager
def serving(session):
    server = ReviewServer(session)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def request(server, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    data = None if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    kind = response.getheader("Content-Type") or ""
    return response.status, (json.loads(payload) if kind == "application/json" else payload), response


def post(server, path, body):
    status, payload, _ = request(server, "POST", path, body)
    return status, payload


def test_label_skip_undo_are_stored_as_given(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    rows = [row(i, f"reply {i}") for i in range(4)]
    with serving(make_session(store, rows)) as server:
        status, body, _ = request(server, "GET", "/api/state")
        state = body["state"]
        assert status == 200 and state["task"]["prompt"] == "prompt 0" and state["progress"]["total"] == 4
        assert state["task"]["replies"] == [{"side": "A", "text": "reply 0", "active": True, "label": None}]

        status, body = post(server, "/api/label", {"task": 0, "label": "full_refusal"})
        assert status == 200 and body["state"]["task"]["id"] == 1
        assert LabelStore(store.path).labels() == {rows[0].key: "full_refusal"}  # committed before the answer

        status, body = post(server, "/api/skip", {"task": 1})
        assert body["state"]["task"]["id"] == 2 and body["state"]["progress"]["skipped"] == 1
        post(server, "/api/label", {"task": 2, "label": "partial_refusal"})
        status, body = post(server, "/api/undo", {})  # takes back reply 3's label
        assert body["message"] == "undid the label of reply 3" and body["state"]["task"]["id"] == 2
        status, body = post(server, "/api/undo", {})  # and the skip of reply 2
        assert body["state"]["task"]["id"] == 1 and body["state"]["progress"] == \
               {"done": 1, "skipped": 0, "total": 4, "known_at_start": 0}
        post(server, "/api/label", {"task": 1, "label": "full_compliance"})

        # A key pressed twice before the page updated: the second names the old reply, and is refused.
        status, body = post(server, "/api/label", {"task": 1, "label": "full_refusal"})
        assert status == 409 and "not the one to label now" in body["error"] and body["state"]["task"]["id"] == 2
        status, body = post(server, "/api/label", {"task": 2, "label": "refusal"})
        assert status == 400 and "'refusal' is not a label" in body["error"]

    assert store.labels() == {rows[0].key: "full_refusal", rows[1].key: "full_compliance"}
    retracted = [r for r in store.records(include_retracted=True) if r.retracted_at]
    assert [(r.key, r.label) for r in retracted] == [(rows[2].key, "partial_refusal")]
    assert {r.source for r in store.records()} == {"review"} and {r.labeller for r in store.records()} == {"ana"}


def test_a_restart_resumes_where_it_stopped(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    rows = [row(i, f"reply {i}") for i in range(4)]
    with serving(make_session(store, rows)) as server:
        post(server, "/api/label", {"task": 0, "label": "full_refusal"})
        post(server, "/api/skip", {"task": 1})
        post(server, "/api/label", {"task": 2, "label": "full_compliance"})
    # A new server on the same store (the old one was stopped, or killed: every label was committed).
    with serving(make_session(LabelStore(store.path), rows)) as server:
        state = request(server, "GET", "/api/state")[1]["state"]
        assert state["progress"]["known_at_start"] == 2 and state["progress"]["total"] == 2
        assert [state["task"]["prompt"], state["can_undo"]] == ["prompt 1", False]  # the skipped one comes back
        post(server, "/api/label", {"task": state["task"]["id"], "label": "full_refusal"})
        state = post(server, "/api/label", {"task": state["task"]["id"] + 1, "label": "full_refusal"})[1]["state"]
        assert state["task"] is None and state["decided"] is True  # every row labelled: the stand-in decides


def test_a_flip_shows_both_replies_and_takes_a_label_for_each(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    rows = [row(0, "plain"), flip(1, "candidate says sure", "baseline says no")]
    with serving(make_session(store, rows)) as server:
        state = request(server, "GET", "/api/state")[1]["state"]
        task = state["task"]
        assert task["flip"] is True and [r["side"] for r in task["replies"]] == ["A", "B"]
        assert {r["text"] for r in task["replies"]} == {"candidate says sure", "baseline says no"}
        assert [r["active"] for r in task["replies"]] == [True, False]
        first = post(server, "/api/label", {"task": task["id"], "label": "full_compliance"})[1]["state"]["task"]
        assert first["prompt"] == "prompt 1" and [r["active"] for r in first["replies"]] == [False, True]
        assert first["replies"][0]["label"] == "full_compliance"
        post(server, "/api/label", {"task": first["id"], "label": "full_refusal"})
    assert set(store.labels()) == {rows[1].key, rows[1].baseline_key}


def test_the_page_is_blind_and_on_loopback_only(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    rows = [row(i, f"reply {i}", scored="SCORER-VERDICT-%d" % i) for i in range(3)]
    with serving(make_session(store, rows)) as server:
        assert server.server_address[0] == "127.0.0.1" and server.url == f"http://127.0.0.1:{server.port}/"
        bodies = [request(server, "GET", "/api/state")[1]]
        bodies.append(post(server, "/api/label", {"task": 0, "label": "full_refusal"})[1])
        bodies.append(post(server, "/api/undo", {})[1])
        text = json.dumps(bodies)
        assert "SCORER-VERDICT" not in text and "estimate" not in text and "passed" not in text

        # DNS rebinding: a page of another name that resolves to 127.0.0.1 is refused.
        status, _, _ = request(server, "GET", "/api/state", headers={"Host": f"attacker.example:{server.port}"})
        assert status == 403
        # A cross-site form or fetch: another origin, or not JSON.
        status, _, _ = request(server, "POST", "/api/label", {"task": 0, "label": "full_refusal"},
                               headers={"Origin": "http://attacker.example"})
        assert status == 403
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/api/label", body="task=0&label=full_refusal",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert conn.getresponse().status == 415
        conn.close()
        assert store.labels() == {}

        # Another address of this machine does not reach the server.
        outside = _non_loopback_address()
        if outside is not None:
            with pytest.raises(OSError):
                socket.create_connection((outside, server.port), timeout=5).close()


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_the_page_never_renders_a_reply_as_html(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    with serving(make_session(store, [row(0, "x")])) as server:
        for path in ("/", "/review.js", "/review.css", "/api/state"):
            status, _, response = request(server, "GET", path)
            assert status == 200 and response.getheader("Content-Security-Policy") == CSP
            assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert request(server, "GET", "/../store.py")[0] == 404
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "default-src 'none'" in CSP
    static = resources.files("harness.labels").joinpath("static")
    page = static.joinpath("review.html").read_text(encoding="utf-8")
    script = static.joinpath("review.js").read_text(encoding="utf-8")
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/review.js" defer>']  # no inline script
    assert not re.search(r"\son[a-z]+\s*=", page)  # no inline handlers
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", script)
    assert "textContent" in script


def test_a_locked_store_refuses_the_label_and_the_page_stays_on_the_reply(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite", timeout=0)
    rows = [row(i, f"reply {i}") for i in range(2)]
    with serving(make_session(store, rows)) as server:
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            status, body = post(server, "/api/label", {"task": 0, "label": "full_refusal"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert status == 503 and body["error"].startswith(f"not saved: label store {store.path} is locked")
        assert body["state"]["task"]["id"] == 0 and store.labels() == {}
        status, body = post(server, "/api/label", {"task": 0, "label": "full_refusal"})  # pressed again
        assert status == 200 and store.labels() == {rows[0].key: "full_refusal"}


def test_a_client_that_went_away_is_quiet_and_any_other_failure_is_one_line(tmp_path, capsys):
    """socketserver prints a traceback for any exception of a request's thread; a browser closing its
    keep-alive connection (or a client reset at Ctrl-C) must print nothing, anything else one line."""
    store = LabelStore(tmp_path / "labels.sqlite")
    with serving(make_session(store, [row("a", "x")])) as server:
        for gone in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError(32, "Broken pipe")):
            try:
                raise gone
            except OSError:
                server.handle_error(None, ("127.0.0.1", 5000))
        assert capsys.readouterr().err == ""
        try:
            raise ValueError("bad body")
        except ValueError:
            server.handle_error(None, ("127.0.0.1", 5000))
    assert capsys.readouterr().err == "review: a request from 127.0.0.1 failed (ValueError: bad body)\n"
