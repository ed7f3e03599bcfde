"""A local HTTP file server for the tests of :mod:`brainage.data.fetch` (no network is touched).

It serves bytes by URL path on 127.0.0.1 (port chosen by the system), answers ``Range:
bytes=N-`` requests with 206, can cut responses short after half their body while announcing
the full Content-Length, can ignore Range requests (answering 200), and records every request.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ServerState:
    """What the server serves and how it misbehaves; read and written by the tests."""

    files: dict[str, bytes] = field(default_factory=dict)
    #: path -> number of coming responses to cut after half of their body
    truncate: dict[str, int] = field(default_factory=dict)
    #: answer Range requests with 206 (False: ignore them and send the whole file with 200)
    honour_range: bool = True
    #: (path, Range header or None) of every request, in order
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    #: path -> HTTP status to answer instead of the file (e.g. 403, as IXI's server at times)
    refuse: dict[str, int] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        wanted = self.headers.get("Range")
        state.requests.append((self.path, wanted))
        if self.path in state.refuse:
            self.send_error(state.refuse[self.path])
            return
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
        if match and state.honour_range:
            start = int(match[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if state.truncate.get(self.path, 0) > 0:
            state.truncate[self.path] -= 1
            payload = payload[: len(payload) // 2]
            self.close_connection = True  # the client sees the connection end early
        self.wfile.write(payload)
        self.wfile.flush()


class FileServer:
    """``ThreadingHTTPServer`` on 127.0.0.1, port 0, serving :class:`ServerState` in a thread."""

    def __init__(self) -> None:
        self.state = ServerState()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.state = self.state  # type: ignore[attr-defined]
        # a short poll interval: shutdown() waits up to one interval
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,),
                                        daemon=True)

    def url(self, path: str) -> str:
        """The URL of ``path`` (which starts with ``/``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
