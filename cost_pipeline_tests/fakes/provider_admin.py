"""A stateful loopback fake of the OpenAI and Anthropic admin usage/cost APIs, able to misbehave.

It serves buckets the test loads (documented shapes), filters them by the requested window,
pages them with opaque cursors, checks the auth headers, records every request, and on demand
answers 429 with `Retry-After`, 5xx, malformed pages, stalls past the client's timeout, or
pages that repeat the previous page's last bucket.

Every OpenAI usage endpoint that bills is routed (completions, embeddings, moderations, images,
audio speeches and transcriptions, vector stores, code interpreter sessions), each rejecting a
`group_by` its documentation does not list with a 400, as the real API does.
`openai_usage_samples` and `openai_cost_samples` are realistic buckets of one day for each.
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
OPENAI_EMBEDDINGS = "/v1/organization/usage/embeddings"
OPENAI_MODERATIONS = "/v1/organization/usage/moderations"
OPENAI_IMAGES = "/v1/organization/usage/images"
OPENAI_AUDIO_SPEECHES = "/v1/organization/usage/audio_speeches"
OPENAI_AUDIO_TRANSCRIPTIONS = "/v1/organization/usage/audio_transcriptions"
OPENAI_VECTOR_STORES = "/v1/organization/usage/vector_stores"
OPENAI_CODE_INTERPRETER = "/v1/organization/usage/code_interpreter_sessions"
OPENAI_COSTS = "/v1/organization/costs"
ANTHROPIC_USAGE = "/v1/organizations/usage_report/messages"
ANTHROPIC_COSTS = "/v1/organizations/cost_report"
ANTHROPIC_PATHS = (ANTHROPIC_USAGE, ANTHROPIC_COSTS)
_KEYS = ("project_id", "user_id", "api_key_id", "model")
# The group_by values each OpenAI endpoint documents (API reference, Usage and Costs).
OPENAI_GROUP_BY: dict[str, frozenset[str]] = {
    OPENAI_USAGE: frozenset({*_KEYS, "batch", "service_tier"}),
    OPENAI_EMBEDDINGS: frozenset(_KEYS),
    OPENAI_MODERATIONS: frozenset(_KEYS),
    OPENAI_IMAGES: frozenset({*_KEYS, "size", "source"}),
    OPENAI_AUDIO_SPEECHES: frozenset(_KEYS),
    OPENAI_AUDIO_TRANSCRIPTIONS: frozenset(_KEYS),
    OPENAI_VECTOR_STORES: frozenset({"project_id"}),
    OPENAI_CODE_INTERPRETER: frozenset({"project_id"}),
    OPENAI_COSTS: frozenset({"project_id", "line_item"}),
}
OPENAI_USAGE_PATHS = tuple(p for p in OPENAI_GROUP_BY if p != OPENAI_COSTS)


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
        if path not in self.buckets and path not in (*OPENAI_GROUP_BY, *ANTHROPIC_PATHS):
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
        unsupported = set(params.get("group_by", [])) - OPENAI_GROUP_BY.get(path, frozenset())
        if path in OPENAI_GROUP_BY and unsupported:
            message = f"Invalid value for 'group_by': {sorted(unsupported)}"
            return 400, _error(False, "invalid_request_error", message), {}
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


def _bucket(day_start: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "bucket",
        "start_time": day_start,
        "end_time": day_start + 86_400,
        "results": results,
    }


def _keyed(obj: str, project: str | None = "proj_acme", **fields: Any) -> dict[str, Any]:
    """A usage result as the API sends it: the grouping fields it was not grouped by are null."""
    return {
        "object": f"organization.usage.{obj}.result",
        "project_id": project,
        "user_id": None,
        "api_key_id": None,
        **fields,
    }


def openai_usage_samples(day_start: int) -> dict[str, list[dict[str, Any]]]:
    """One day of realistic usage for every OpenAI usage endpoint, by path."""
    return {
        OPENAI_USAGE: [
            _bucket(
                day_start,
                [
                    _keyed(
                        "completions",
                        input_tokens=120_000,
                        output_tokens=8_000,
                        input_cached_tokens=90_000,
                        input_audio_tokens=0,
                        output_audio_tokens=0,
                        num_model_requests=42,
                        model="gpt-4.1-mini-2025-04-14",
                        api_key_id="key_unknown",
                        batch=False,
                    )
                ],
            )
        ],
        OPENAI_EMBEDDINGS: [
            _bucket(
                day_start,
                [
                    _keyed(
                        "embeddings",
                        input_tokens=2_500_000,
                        num_model_requests=310,
                        model="text-embedding-3-small",
                    )
                ],
            )
        ],
        OPENAI_MODERATIONS: [
            _bucket(
                day_start,
                [
                    _keyed(
                        "moderations",
                        input_tokens=40_000,
                        num_model_requests=55,
                        model="omni-moderation-2024-09-26",
                    )
                ],
            )
        ],
        OPENAI_IMAGES: [
            _bucket(
                day_start,
                [
                    _keyed(
                        "images",
                        images=12,
                        num_model_requests=12,
                        model="dall-e-3",
                        size="1024x1024",
                        source="image.generation",
                    ),
                    _keyed(
                        "images",
                        images=3,
                        num_model_requests=1,
                        model="dall-e-2",
                        size="512x512",
                        source="image.variation",
                    ),
                ],
            )
        ],
        OPENAI_AUDIO_SPEECHES: [
            _bucket(
                day_start,
                [
                    _keyed(
                        "audio_speeches",
                        characters=45_000,
                        num_model_requests=30,
                        model="tts-1",
                    )
                ],
            )
        ],
        OPENAI_AUDIO_TRANSCRIPTIONS: [
            _bucket(
                day_start,
                [
                    _keyed(
                        "audio_transcriptions",
                        seconds=1_830,
                        num_model_requests=14,
                        model="whisper-1",
                    )
                ],
            )
        ],
        OPENAI_VECTOR_STORES: [
            _bucket(
                day_start,
                [
                    {
                        "object": "organization.usage.vector_stores.result",
                        "usage_bytes": 3 * 1024**3,
                        "project_id": "proj_acme",
                    }
                ],
            )
        ],
        OPENAI_CODE_INTERPRETER: [
            _bucket(
                day_start,
                [
                    {
                        "object": "organization.usage.code_interpreter_sessions.result",
                        "num_sessions": 17,
                        "project_id": "proj_acme",
                    }
                ],
            )
        ],
    }


def openai_cost_samples(day_start: int) -> list[dict[str, Any]]:
    """The same day's `/organization/costs` buckets: one line item per billed usage, at list
    prices (moderations are free and billed nothing)."""
    items = [
        ("gpt-4.1-mini, input", 0.012),  # 30k uncached x $0.40/M
        ("gpt-4.1-mini, cached input", 0.009),  # 90k cached x $0.10/M
        ("gpt-4.1-mini, output", 0.0128),  # 8k x $1.60/M
        ("text-embedding-3-small", 0.05),  # 2.5M x $0.02/M
        ("dall-e-3, image generation", 0.48),  # 12 x $0.04
        ("dall-e-2, image variation", 0.054),  # 3 x $0.018
        ("tts-1", 0.675),  # 45k characters x $15/M
        ("whisper-1", 0.183),  # 30.5 minutes x $0.006
        ("File search storage", 0.2),  # 2 GB over the free GB x $0.10/GB-day
        ("Code interpreter sessions", 0.51),  # 17 x $0.03
    ]
    return [
        _bucket(
            day_start,
            [
                {
                    "object": "organization.costs.result",
                    "amount": {"value": value, "currency": "usd"},
                    "line_item": line_item,
                    "project_id": "proj_acme",
                }
                for line_item, value in items
            ],
        )
    ]
