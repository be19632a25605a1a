"""Kubecost (`/model/allocation`) and OpenCost (`/allocation`) allocations: one client, a twin.

One request per UTC day window, aggregated by namespace and the tenant label, accumulated to
one set, with idle cost kept as its own `__idle__` allocation (never shared: allocation is our
job, by the configured rule). The flavour picks the path and the name of the idle parameter;
`path` overrides it (e.g. OpenCost's older `/allocation/compute`).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from cost_pipeline.demo.infrastructure import kubecost_allocation_response
from cost_pipeline.resources.http import ApiError, JsonHttpClient
from cost_pipeline.resources.warehouse import CostConfigResource

FLAVORS: dict[str, tuple[str, str, str]] = {
    # flavour: (service name, path, idle parameter)
    "kubecost": ("Kubecost", "/model/allocation", "idle"),
    "opencost": ("OpenCost", "/allocation", "includeIdle"),
}
COST_FIELDS = {
    "cpuCost": "cpu_cost",
    "ramCost": "ram_cost",
    "gpuCost": "gpu_cost",
    "pvCost": "pv_cost",
    "networkCost": "network_cost",
    "loadBalancerCost": "load_balancer_cost",
    "sharedCost": "shared_cost",
    "externalCost": "external_cost",
}
ALLOCATION_COLUMNS = [
    "day",
    "cluster",
    "namespace",
    "controller",
    "allocation_name",
    "labels",
    *COST_FIELDS.values(),
    "total_cost",
]


def day_window(day: date) -> str:
    """The RFC 3339 window of one UTC day, as both servers accept it."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return f"{start.strftime(fmt)},{(start + timedelta(days=1)).strftime(fmt)}"


IDLE = "__idle__"


def aggregate_param(tenant_label: str) -> str:
    return f"namespace,label:{tenant_label}"


def parse_allocations(body: Any, *, day: date, service: str, endpoint: str) -> pd.DataFrame:
    """The allocation sets of a response as rows (`ALLOCATION_COLUMNS`); `labels` as JSON text.

    A body without a `data` list, a non-200 `code` or an error `status` is an `ApiError`.
    """
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ApiError(service, endpoint, 200, f"response has no 'data' list: {body!r:.200}")
    code = body.get("code", 200)
    if code != 200 or str(body.get("status", "success")).lower() not in ("success", "ok"):
        message = body.get("message") or body.get("warning") or "error status"
        raise ApiError(service, endpoint, int(code) if str(code).isdigit() else None, message)
    records: list[dict[str, Any]] = []
    for step in body["data"]:
        if not step:  # Kubecost answers null for an empty step
            continue
        if not isinstance(step, dict):
            raise ApiError(
                service, endpoint, 200, f"allocation set is not an object: {step!r:.200}"
            )
        for name, alloc in step.items():
            if isinstance(alloc, dict):
                records.append(record_row(name, alloc, day))
    return pd.DataFrame.from_records(records, columns=ALLOCATION_COLUMNS)


def record_row(name: str, alloc: dict[str, Any], day: date) -> dict[str, Any]:
    props = alloc.get("properties") or {}
    costs = {ours: float(alloc.get(theirs) or 0.0) for theirs, ours in COST_FIELDS.items()}
    total = alloc.get("totalCost")
    full_name = str(alloc.get("name") or name)
    cluster = props.get("cluster")
    if full_name.endswith(IDLE):
        # Idle is reported per cluster as `<cluster>/__idle__` when aggregated by cluster.
        prefix = full_name[: -len(IDLE)].rstrip("/")
        cluster = cluster or prefix or None
        namespace, full_name = IDLE, IDLE
    else:
        namespace = props.get("namespace") or full_name.split("/")[0]
    return {
        "day": day,
        "cluster": cluster,
        "namespace": namespace,
        "controller": props.get("controller"),
        "allocation_name": full_name,
        "labels": json.dumps(props.get("labels") or {}, sort_keys=True),
        **costs,
        "total_cost": float(total) if total is not None else sum(costs.values()),
    }


class KubernetesAllocations(dg.ConfigurableResource):
    """What the assets need from Kubecost or OpenCost; the real client and the twin implement it."""

    @property
    def is_configured(self) -> bool:
        return True

    def describe(self) -> str:
        return "offline twin"

    def allocations(self, *, day: date, tenant_label: str) -> pd.DataFrame:
        """The day's allocations by namespace and `tenant_label`, idle as `__idle__`."""
        raise NotImplementedError


class KubecostResource(KubernetesAllocations):
    """The real client. `url` empty means the source is not configured."""

    url: str = Field(default="", description="Base URL of Kubecost or OpenCost (KUBECOST_URL).")
    flavor: Literal["kubecost", "opencost"] = "kubecost"
    path: str = Field(default="", description="Override of the allocation path.")
    timeout_seconds: float = 60.0
    max_retries: int = 5
    backoff_seconds: float = 0.5

    @property
    def is_configured(self) -> bool:
        return bool(self.url)

    def describe(self) -> str:
        return f"{FLAVORS[self.flavor][0]} at {self.url}"

    def allocations(self, *, day: date, tenant_label: str) -> pd.DataFrame:
        if not self.url:
            raise ValueError("Kubecost/OpenCost is not configured: set KUBECOST_URL")
        service, default_path, idle_param = FLAVORS[self.flavor]
        path = self.path or default_path
        client = JsonHttpClient(
            service=service,
            base_url=self.url,
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
        )
        params = {
            "window": day_window(day),
            "aggregate": aggregate_param(tenant_label),
            "accumulate": "true",
            idle_param: "true",
        }
        if self.flavor == "kubecost":
            params["shareIdle"] = "false"
        body = client.get_json(path, params=params)
        return parse_allocations(body, day=day, service=service, endpoint=f"GET {path}")


class KubecostTwin(KubernetesAllocations):
    """Offline twin: the demo company's cluster, answered in Kubecost's response shape."""

    cost_config: CostConfigResource = Field(default_factory=CostConfigResource)

    def allocations(self, *, day: date, tenant_label: str) -> pd.DataFrame:
        body = kubecost_allocation_response(self.cost_config.get(), day, tenant_label=tenant_label)
        return parse_allocations(body, day=day, service="twin", endpoint="/model/allocation")
