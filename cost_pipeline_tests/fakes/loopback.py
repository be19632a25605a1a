"""What every loopback fake shares: an HTTP server on 127.0.0.1 (a free port) and JSON replies.

`LoopbackServer(handler)` binds at once and serves from a daemon thread after `start()` (or on
entering `with`); `stop()` shuts it down and closes the socket. `JsonHandler` is a quiet request
handler whose `send_json` writes a JSON (or raw bytes) reply and tolerates a client that has
already gone away, as the timeout tests intend.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackServer:
    """A `ThreadingHTTPServer` on 127.0.0.1 port 0 with daemon threads, served in the background."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, poll_interval: float = 0.5
    ) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for serve_forever, so only when serving
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing and answers JSON."""

    def log_message(self, *args: Any) -> None:
        pass

    def send_json(
        self,
        status: int,
        body: Any,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = "application/json",
    ) -> None:
        """Answer `status` with `body` (JSON-encoded unless already bytes) and extra `headers`."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)
