"""A local stand-in for GitHub's raw content host: serves the manifest's files from a data folder (the
shared data) in the upstream layout <owner>/<repo>/<commit>/<path>, on 127.0.0.1 only.

Test knobs: ``corrupt`` (names whose bytes are altered), ``serve`` (name -> the bytes to send instead),
``repeat`` (name -> how many times its body is sent in one answer: an oversized file), ``announce_length``
(send Content-Length, default True), ``stall`` (a name whose download stops halfway until ``release`` is
set; ``stalled`` is set once half was sent), ``hold`` (a name whose whole answer waits until ``release`` is
set; ``held`` is set when its request arrives), ``hits`` (GET requests per URL path) and ``sent`` (bytes the
server managed to write per URL path, before the client hung up).

By hand:  python tests/data_mirror.py ../shared/data --port 8765 [--corrupt xstest/xstest_prompts.csv]
"""

from __future__ import annotations

import argparse
import collections
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Mirror:
    def __init__(self, data_dir: Path, *, corrupt=(), port: int = 0):
        from harness.data.fetch import find_in_folder
        from harness.data.manifest import manifest

        self.files: dict[str, Path] = {}  # URL path -> local file
        self.names: dict[str, str] = {}  # URL path -> data-folder name
        for entry in manifest().values():
            local = find_in_folder(Path(data_dir), entry)
            if local is not None:
                url_path = f"/{entry.source.repo}/{entry.source.commit}/{entry.path}"
                self.files[url_path], self.names[url_path] = local, entry.name
        self.corrupt = set(corrupt)
        self.stall: str | None = None
        self.stalled = threading.Event()  # set once the stalled download has sent half its bytes
        self.hold: str | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.serve: dict[str, bytes] = {}
        self.repeat: dict[str, int] = {}
        self.announce_length = True
        self.hits: collections.Counter = collections.Counter()
        self.sent: collections.Counter = collections.Counter()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                mirror.hits[self.path] += 1
                local = mirror.files.get(self.path)
                if local is None:
                    self.send_error(404, "Not Found")
                    return
                name = mirror.names[self.path]
                if name == mirror.hold:
                    mirror.held.set()
                    mirror.release.wait(60)
                body = mirror.serve[name] if name in mirror.serve else local.read_bytes()
                if name in mirror.corrupt:
                    body = body.replace(b"a", b"4", 1)  # same size: the hash, not the size cap, must catch it
                repeat = mirror.repeat.get(name, 1)
                self.send_response(200)
                if mirror.announce_length:
                    self.send_header("Content-Length", str(len(body) * repeat))
                self.end_headers()
                if name == mirror.stall:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    mirror.stalled.set()
                    mirror.release.wait(30)
                    self.close_connection = True
                    return
                try:
                    for _ in range(repeat):
                        self.wfile.write(body)
                        mirror.sent[self.path] += len(body)
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what it should do
                    self.close_connection = True

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Mirror":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def hits_for(self, name: str) -> int:
        return sum(n for path, n in self.hits.items() if self.names.get(path) == name)

    def sent_for(self, name: str) -> int:
        return sum(n for path, n in self.sent.items() if self.names.get(path) == name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--corrupt", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    with Mirror(args.data_dir, corrupt=args.corrupt, port=args.port) as m:
        print(f"serving {len(m.files)} files at {m.url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
