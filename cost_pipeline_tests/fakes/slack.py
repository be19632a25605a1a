"""A stateful fake of Slack's Web API on 127.0.0.1 that records messages and can misbehave.

`FakeSlack().start()` serves `POST /api/chat.postMessage` (form or JSON body, bearer token);
`base_url` is what `slack_sdk.WebClient(base_url=...)` needs. Misbehaviour:
`down_for(n)` answers the next n calls with 503, `rate_limit(n, retry_after)` answers 429
with `Retry-After`, `fail_with(error)` answers `ok: false` with a Slack error name.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from cost_pipeline_tests.fakes.loopback import JsonHandler, LoopbackServer


@dataclass
class Message:
    channel: str
    text: str
    blocks: list[dict]
    ts: str


@dataclass
class FakeSlack:
    token: str = "xoxb-test-token"
    messages: list[Message] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)  # monotonic time of every request
    _down: int = 0
    _limited: int = 0
    _retry_after: int = 0
    _error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: LoopbackServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"{self._server.url}/api/"

    def down_for(self, calls: int) -> None:
        self._down = calls

    def rate_limit(self, calls: int, retry_after: int = 1) -> None:
        self._limited, self._retry_after = calls, retry_after

    def fail_with(self, error: str | None) -> None:
        self._error = error

    def start(self) -> FakeSlack:
        fake = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                status, headers, body = fake._answer(self.path, self.headers, raw)
                self.send_json(
                    status, body, headers, content_type="application/json; charset=utf-8"
                )

        self._server = LoopbackServer(Handler).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _answer(self, path: str, headers: Any, raw: str) -> tuple[int, dict, dict]:
        with self._lock:
            self.calls.append(time.monotonic())
            if self._down > 0:
                self._down -= 1
                return 503, {}, {"ok": False, "error": "service_unavailable"}
            if self._limited > 0:
                self._limited -= 1
                return (
                    429,
                    {"Retry-After": str(self._retry_after)},
                    {
                        "ok": False,
                        "error": "ratelimited",
                    },
                )
            if headers.get("Authorization") != f"Bearer {self.token}":
                return 200, {}, {"ok": False, "error": "invalid_auth"}
            if not path.endswith("/chat.postMessage"):
                return 200, {}, {"ok": False, "error": "unknown_method"}
            if self._error:
                return 200, {}, {"ok": False, "error": self._error}
            args = _parse(headers.get("Content-Type", ""), raw)
            blocks = args.get("blocks") or []
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            if not args.get("channel"):
                return 200, {}, {"ok": False, "error": "channel_not_found"}
            ts = f"{time.time():.6f}"
            self.messages.append(Message(args["channel"], args.get("text", ""), blocks, ts))
            return 200, {}, {"ok": True, "channel": args["channel"], "ts": ts}


def _parse(content_type: str, raw: str) -> dict[str, Any]:
    if "json" in content_type:
        return json.loads(raw or "{}")
    return {k: v[0] for k, v in parse_qs(raw).items()}
