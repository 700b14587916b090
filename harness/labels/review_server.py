"""The review page's local server: the standard library's ThreadingHTTPServer, bound to 127.0.0.1 only,
serving one static page (``static/``: HTML, JS and CSS, no build step) and a small JSON API over a
``ReviewSession``:

    GET  /api/state                       the page's state (current reply, progress, checks decided or not)
    POST /api/label  {"task": N, "label": L}   store label L for reply N, as it is given
    POST /api/skip   {"task": N}
    POST /api/undo   {}

Replies are model output, so they are treated as hostile text: the page writes them with ``textContent``
only, and every response carries a Content-Security-Policy that allows no inline script, no other origin
and no framing. Requests whose Host is not this server's loopback address (DNS rebinding) or whose POST is
not JSON from this origin (a cross-site form) are refused.
"""

from __future__ import annotations

import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from harness.core.errors import HarnessError
from harness.core.types import REFUSAL_LABELS
from harness.labels.review_session import ReviewSession, StaleTask

HOST = "127.0.0.1"
STATIC = {"/": ("review.html", "text/html; charset=utf-8"), "/review.html": ("review.html", "text/html; charset=utf-8"),
          "/review.js": ("review.js", "text/javascript; charset=utf-8"),
          "/review.css": ("review.css", "text/css; charset=utf-8")}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
MAX_BODY = 64 * 1024


class ReviewServer(ThreadingHTTPServer):
    """``ReviewServer(session).serve_forever()``; port 0 (the default) takes a free one."""

    daemon_threads = True  # a browser's open keep-alive connection must not hold up Ctrl-C

    def __init__(self, session: ReviewSession, port: int = 0):
        self.session = session
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as exc:
            raise HarnessError(f"cannot serve the review page on {HOST}:{port} ({exc.strerror or exc})") from None

    def handle_error(self, request, client_address):
        """A browser (or a test's client) that closed its connection while its request was answered, or while
        the keep-alive connection waited, is nothing to report; anything else is one line, not socketserver's
        traceback on the terminal the reviewer reads."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        print(f"review: a request from {client_address[0]} failed ({type(exc).__name__}: {exc})", file=sys.stderr)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002  (the base class's name) -- the terminal stays quiet
        pass

    def do_GET(self):
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if path == "/api/state":
            try:
                return self._json(HTTPStatus.OK, {"state": self.server.session.state()})
            except HarnessError as exc:  # a damaged or vanished store: one line on the page
                return self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc), "state": None})
        if path in STATIC:
            name, kind = STATIC[path]
            body = resources.files("harness.labels").joinpath("static", name).read_bytes()
            return self._send(HTTPStatus.OK, body, kind)
        self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain; charset=utf-8")

    def do_POST(self):
        if not self._host_ok():
            return
        body = self._json_body()
        if body is None:
            return
        session = self.server.session
        try:
            if self.path == "/api/label":
                session.label(_int(body.get("task")), _label(body.get("label")))
                message = ""
            elif self.path == "/api/skip":
                session.skip(_int(body.get("task")))
                message = ""
            elif self.path == "/api/undo":
                message = session.undo()
            else:
                return self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain; charset=utf-8")
        except StaleTask as exc:
            return self._json(HTTPStatus.CONFLICT, {"error": str(exc), "state": session.state()})
        except HarnessError as exc:  # a locked or damaged store, a bad label: nothing was stored, say so
            status = HTTPStatus.BAD_REQUEST if isinstance(exc, _BadRequest) else HTTPStatus.SERVICE_UNAVAILABLE
            return self._json(status, {"error": f"not saved: {exc}", "state": _state_or_none(session)})
        self._json(HTTPStatus.OK, {"message": message, "state": session.state()})

    # -- helpers -------------------------------------------------------------------------------------------

    def _host_ok(self) -> bool:
        allowed = {f"{HOST}:{self.server.port}", f"localhost:{self.server.port}"}
        if self.headers.get("Host") not in allowed:
            self._send(HTTPStatus.FORBIDDEN, b"this page answers on 127.0.0.1 only", "text/plain; charset=utf-8")
            return False
        return True

    def _json_body(self) -> dict | None:
        origin = self.headers.get("Origin")
        if origin is not None and origin not in (f"http://{HOST}:{self.server.port}", f"http://localhost:{self.server.port}"):
            self._send(HTTPStatus.FORBIDDEN, b"cross-origin request refused", "text/plain; charset=utf-8")
            return None
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._send(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, b"send JSON", "text/plain; charset=utf-8")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(HTTPStatus.BAD_REQUEST, b"bad Content-Length", "text/plain; charset=utf-8")
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._json(HTTPStatus.BAD_REQUEST, {"error": "the request body is not a JSON object"})
            return None
        return body

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class _BadRequest(HarnessError):
    pass


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadRequest(f"task must be a number, got {value!r}")
    return value


def _label(value) -> str:
    if value not in REFUSAL_LABELS:
        raise _BadRequest(f"{value!r} is not a label ({', '.join(REFUSAL_LABELS)})")
    return value


def _state_or_none(session: ReviewSession) -> dict | None:
    try:
        return session.state()
    except HarnessError:  # the store cannot even be read: the page keeps what it shows
        return None
