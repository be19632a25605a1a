"""A stateful loopback fake of the OpenAI and Anthropic admin usage/cost APIs, able to misbehave.

It serves buckets the test loads (documented shapes), filters them by the requested window,
pages them with opaque cursors, checks the auth headers, records every request, and on demand
answers 429 with `Retry-After`, 5xx, malformed pages, stalls past the client's timeout, or
pages that repeat the previous page's last bucket.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cost_pipeline_tests.fakes.loopback import JsonHandler, LoopbackServer

OPENAI_USAGE = "/v1/organization/usage/completions"
OPENAI_COSTS = "/v1/organization/costs"
ANTHROPIC_USAGE = "/v1/organizations/usage_report/messages"
ANTHROPIC_COSTS = "/v1/organizations/cost_report"
ANTHROPIC_PATHS = (ANTHROPIC_USAGE, ANTHROPIC_COSTS)


@dataclass
class Fault:
    kind: str  # "status" | "malformed" | "stall"
    status: int = 500
    retry_after: str | None = None
    message: str = "simulated failure"
    seconds: float = 0.0


@dataclass
class Recorded:
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    at: float


@dataclass
class ProviderAdminFake:
    openai_key: str = "sk-admin-openai-test"
    anthropic_key: str = "sk-ant-admin-test"
    page_size: int = 2
    duplicate_pages: bool = False
    buckets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _faults: dict[str, deque[Fault]] = field(default_factory=dict)
    _server: LoopbackServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- state ---------------------------------------------------------------------------------

    def load(self, path: str, buckets: list[dict[str, Any]]) -> None:
        """Serve `buckets` (documented bucket objects) at `path` (one of the module constants)."""
        self.buckets[path] = list(buckets)

    def fail(
        self,
        path: str,
        status: int,
        *,
        times: int = 1,
        retry_after: str | None = None,
        message: str = "simulated failure",
    ) -> None:
        for _ in range(times):
            self._faults.setdefault(path, deque()).append(
                Fault("status", status=status, retry_after=retry_after, message=message)
            )

    def malformed(self, path: str, *, times: int = 1) -> None:
        for _ in range(times):
            self._faults.setdefault(path, deque()).append(Fault("malformed"))

    def stall(self, path: str, seconds: float, *, times: int = 1) -> None:
        for _ in range(times):
            self._faults.setdefault(path, deque()).append(Fault("stall", seconds=seconds))

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    # -- server --------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"{self._server.url}/v1"

    def start(self) -> ProviderAdminFake:
        fake = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                fake._handle(self)

        self._server = LoopbackServer(Handler, poll_interval=0.02).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> ProviderAdminFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour -----------------------------------------------------------------------------

    def _handle(self, req: JsonHandler) -> None:
        url = urlsplit(req.path)
        params = parse_qs(url.query)
        headers = {k.lower(): v for k, v in req.headers.items()}
        path = url.path
        with self._lock:
            queue = self._faults.get(path)
            fault = queue.popleft() if queue else None
        status, body, extra = self._respond(path, params, headers, fault)
        if fault is not None and fault.kind == "stall":
            time.sleep(fault.seconds)
        self.requests.append(Recorded(path, params, headers, status, time.monotonic()))
        req.send_json(status, body, extra)

    def _respond(
        self, path: str, params: dict[str, list[str]], headers: dict[str, str], fault: Fault | None
    ) -> tuple[int, Any, dict[str, str]]:
        anthropic = path in ANTHROPIC_PATHS
        if path not in self.buckets and path not in (
            OPENAI_USAGE,
            OPENAI_COSTS,
            *ANTHROPIC_PATHS,
        ):
            return 404, _error(anthropic, "not_found_error", f"no route {path}"), {}
        if anthropic:
            ok = headers.get("x-api-key") == self.anthropic_key
            ok = ok and headers.get("anthropic-version") == "2023-06-01"
        else:
            ok = headers.get("authorization") == f"Bearer {self.openai_key}"
        if not ok:
            return 401, _error(anthropic, "authentication_error", "invalid admin key"), {}
        if fault is not None and fault.kind == "status":
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, _error(anthropic, "api_error", fault.message), extra
        if fault is not None and fault.kind == "malformed":
            return 200, b'{"object": "page", "data": [{"object": "bucket", "results": [', {}
        return 200, self._page(path, params, anthropic), {}

    def _page(self, path: str, params: dict[str, list[str]], anthropic: bool) -> dict[str, Any]:
        start_key = "starting_at" if anthropic else "start_time"
        lo = _seconds(params[start_key][0]) if start_key in params else None
        end_key = "ending_at" if anthropic else "end_time"
        hi = _seconds(params[end_key][0]) if end_key in params else None
        selected = sorted(
            (
                b
                for b in self.buckets.get(path, [])
                if (lo is None or _seconds(b[start_key]) >= lo)
                and (hi is None or _seconds(b[start_key]) < hi)
            ),
            key=lambda b: _seconds(b[start_key]),
        )
        limit = int(params.get("limit", ["7"])[0])
        size = max(1, min(limit, self.page_size))
        offset = int(params["page"][0].removeprefix("page_")) if "page" in params else 0
        page = selected[offset : offset + size]
        if self.duplicate_pages and offset > 0:
            page = [selected[offset - 1], *page]  # a sloppy cursor: the previous bucket again
        has_more = offset + size < len(selected)
        body: dict[str, Any] = {
            "data": page,
            "has_more": has_more,
            "next_page": f"page_{offset + size}" if has_more else None,
        }
        if not anthropic:
            body["object"] = "page"
        return body


def _error(anthropic: bool, kind: str, message: str) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _seconds(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    if text.isdigit():
        return float(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
