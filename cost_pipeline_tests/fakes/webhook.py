"""A webhook receiver on 127.0.0.1 that honours the event id contract and can misbehave.

`FakeWebhookReceiver().start()` accepts signed alert POSTs at `url`. It checks the signature the
way a receiver should — written here from the contract in `lib.messages`, not with the product's
own code: HMAC-SHA256 of `<timestamp>.<raw body>` keyed by `secret`, a timestamp within five
minutes — and answers 401 otherwise. It acts once per event id: the first request of an id is
kept in `deliveries`, a repeat is answered 200 `{"duplicate": true}` (or 409 with
`conflict_on_duplicate`) and acted on no more. Every request is in `requests`.

Misbehaviour, each for the next n requests: `down_for(n, status)` answers 5xx without acting;
`act_then_stall(n, seconds)` acts, then answers only after `seconds` — longer than the client's
timeout, it is a timeout after the receiver acted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cost_pipeline_tests.fakes.loopback import JsonHandler, LoopbackServer


@dataclass
class WebhookRequest:
    event_id: str | None
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class FakeWebhookReceiver:
    secret: str = "whsec-test-secret"
    conflict_on_duplicate: bool = False
    requests: list[WebhookRequest] = field(default_factory=list)
    deliveries: dict[str, dict] = field(default_factory=dict)  # event id -> event, acted on once
    _down: int = 0
    _down_status: int = 503
    _stalls: int = 0
    _stall_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: LoopbackServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"{self._server.url}/hooks/cost-alerts"

    def down_for(self, requests: int, status: int = 503) -> None:
        self._down, self._down_status = requests, status

    def act_then_stall(self, requests: int, seconds: float) -> None:
        self._stalls, self._stall_seconds = requests, seconds

    def start(self) -> FakeWebhookReceiver:
        fake = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, reply, stall = fake._answer(dict(self.headers.items()), body)
                if stall:
                    time.sleep(stall)
                self.send_json(status, reply)

        self._server = LoopbackServer(Handler).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _answer(self, headers: dict[str, str], body: bytes) -> tuple[int, Any, float]:
        event_id = headers.get("X-Cost-Pipeline-Event-Id")
        with self._lock:
            status, reply, stall = self._decide(headers, body, event_id)
            self.requests.append(WebhookRequest(event_id, headers, body, status))
        return status, reply, stall

    def _decide(
        self, headers: dict[str, str], body: bytes, event_id: str | None
    ) -> tuple[int, Any, float]:
        if self._down > 0:
            self._down -= 1
            return self._down_status, {"error": "unavailable"}, 0.0
        problem = self._authentic(headers, body)
        if problem:
            return 401, {"error": problem}, 0.0
        if not event_id or headers.get("Idempotency-Key") != event_id:
            return 400, {"error": "no event id"}, 0.0
        if event_id in self.deliveries:
            if self.conflict_on_duplicate:
                return 409, {"error": "duplicate"}, 0.0
            return 200, {"duplicate": True}, 0.0
        self.deliveries[event_id] = json.loads(body)
        stall = 0.0
        if self._stalls > 0:
            self._stalls -= 1
            stall = self._stall_seconds
        return 200, {"received": event_id}, stall

    def _authentic(self, headers: dict[str, str], body: bytes) -> str | None:
        timestamp = headers.get("X-Cost-Pipeline-Timestamp", "")
        given = headers.get("X-Cost-Pipeline-Signature", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return "stale or missing timestamp"
        mac = hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        if not hmac.compare_digest(given, "v1=" + mac.hexdigest()):
            return "bad signature"
        return None
