"""A stateful fake of Kubecost's `/model/allocation` and OpenCost's `/allocation` on 127.0.0.1.

It serves the documented response shape from allocation sets the test gives per window, checks
the flavour's parameters (`idle` for Kubecost, `includeIdle` for OpenCost), records every request
and misbehaves on demand: `fail_next("500")`, `"429"` (with `Retry-After`) or `"hang"` (sleeps
`hang_seconds` so the client times out).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cost_pipeline_tests.fakes.loopback import JsonHandler, LoopbackServer

PATHS = {"kubecost": "/model/allocation", "opencost": "/allocation"}
IDLE_PARAMS = {"kubecost": "idle", "opencost": "includeIdle"}


def allocation(
    name: str,
    *,
    namespace: str,
    total: float,
    labels: dict[str, str] | None = None,
    cluster: str = "prod-1",
    window: str = "2026-01-01T00:00:00Z,2026-01-02T00:00:00Z",
) -> dict[str, Any]:
    """One allocation object in the documented shape; cost split 60/30/10 cpu/ram/pv."""
    start, end = window.split(",")
    return {
        "name": name,
        "properties": {"cluster": cluster, "namespace": namespace, "labels": labels or {}},
        "window": {"start": start, "end": end},
        "start": start,
        "end": end,
        "minutes": 1440,
        "cpuCoreHours": 24.0,
        "cpuCost": round(total * 0.6, 9),
        "gpuCost": 0,
        "ramByteHours": 4.1e11,
        "ramCost": round(total * 0.3, 9),
        "pvCost": round(total * 0.1, 9),
        "networkCost": 0,
        "loadBalancerCost": 0,
        "sharedCost": 0,
        "externalCost": 0,
        "totalCost": total,
        "cpuEfficiency": 0.4,
        "ramEfficiency": 0.5,
        "totalEfficiency": 0.45,
    }


class FakeKubecost(LoopbackServer):
    """The server for one flavour; `sets[window]` is the allocation set answered for a window."""

    def __init__(self, flavor: str = "kubecost", *, hang_seconds: float = 1.0) -> None:
        self.flavor = flavor
        self.sets: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, str]] = []
        self.faults: deque[str] = deque()
        self.hang_seconds = hang_seconds
        super().__init__(self._handler_class())

    def fail_next(self, fault: str, *, times: int = 1) -> None:
        self.faults.extend([fault] * times)

    def _answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any], dict]:
        self.requests.append({"path": path, **query})
        if self.faults:
            fault = self.faults.popleft()
            if fault == "hang":
                time.sleep(self.hang_seconds)
            elif fault == "429":
                return 429, {"message": "slow down"}, {"Retry-After": "0"}
            elif fault == "500":
                return 500, {"code": 500, "message": "query failed: prometheus down"}, {}
        if path != PATHS[self.flavor]:
            return 404, {"code": 404, "message": f"no route {path}"}, {}
        if "window" not in query:
            return 400, {"code": 400, "message": "missing window"}, {}
        allocations = dict(self.sets.get(query["window"], {}))
        if query.get(IDLE_PARAMS[self.flavor], "true") != "true":
            allocations.pop("__idle__", None)
        body: dict[str, Any] = {"code": 200, "data": [allocations]}
        if self.flavor == "opencost":
            body["status"] = "success"
        return 200, body, {}

    def _handler_class(self) -> type[JsonHandler]:
        fake = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                self.send_json(*fake._answer(parts.path, dict(parse_qsl(parts.query))))

        return Handler
