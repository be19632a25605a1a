"""Protects the Kubecost/OpenCost client: request shape per flavour, idle/unallocated, retries."""

from __future__ import annotations

import json
from datetime import date

import pytest

from cost_pipeline.lib.allocation import map_k8s_tenants
from cost_pipeline.resources.http import ApiError
from cost_pipeline.resources.kubecost import (
    KubecostResource,
    KubecostTwin,
    day_window,
    parse_allocations,
)
from cost_pipeline_tests.fakes.kubecost import FakeKubecost, allocation

DAY = date(2026, 1, 1)
WINDOW = "2026-01-01T00:00:00Z,2026-01-02T00:00:00Z"


def _set() -> dict:
    return {
        "tenant-acme/acme": allocation(
            "tenant-acme/acme", namespace="tenant-acme", total=4.36, labels={"tenant": "acme"}
        ),
        "payments/beacon": allocation(
            "payments/beacon", namespace="payments", total=2.0, labels={"tenant": "beacon"}
        ),
        "platform/__unallocated__": allocation(
            "platform/__unallocated__", namespace="platform", total=1.5
        ),
        "__idle__": allocation("__idle__", namespace="__idle__", total=3.25),
    }


def _client(fake: FakeKubecost, **kw) -> KubecostResource:
    return KubecostResource(
        url=fake.url, flavor=fake.flavor, max_retries=2, backoff_seconds=0.01, **kw
    )


def test_day_window_is_one_utc_day() -> None:
    assert day_window(DAY) == WINDOW


@pytest.mark.parametrize("flavor", ["kubecost", "opencost"])
def test_one_request_per_day_with_flavour_parameters(flavor: str, demo_config) -> None:
    with FakeKubecost(flavor) as fake:
        fake.sets[WINDOW] = _set()
        df = _client(fake).allocations(day=DAY, tenant_label="tenant")
    assert len(fake.requests) == 1
    req = fake.requests[0]
    assert req["window"] == WINDOW
    assert req["aggregate"] == "namespace,label:tenant"
    assert req["accumulate"] == "true"
    assert req["idle" if flavor == "kubecost" else "includeIdle"] == "true"
    assert set(df["allocation_name"]) == set(_set())
    assert df["total_cost"].sum() == pytest.approx(4.36 + 2.0 + 1.5 + 3.25)
    idle = df[df["allocation_name"] == "__idle__"].iloc[0]
    assert idle["cpu_cost"] == pytest.approx(3.25 * 0.6)
    assert json.loads(df.loc[df["namespace"] == "tenant-acme", "labels"].iloc[0]) == {
        "tenant": "acme"
    }
    tenants = dict(zip(df["allocation_name"], map_k8s_tenants(df, demo_config), strict=True))
    # namespace mapping, then the tenant label; idle and unallocated stay unmapped
    assert tenants == {
        "tenant-acme/acme": "acme",
        "payments/beacon": "beacon",
        "platform/__unallocated__": None,
        "__idle__": None,
    }


def test_older_opencost_path_is_configurable() -> None:
    with FakeKubecost("opencost") as fake:
        fake.sets[WINDOW] = _set()
        with pytest.raises(ApiError) as err:
            _client(fake, path="/allocation/compute").allocations(day=DAY, tenant_label="tenant")
    assert err.value.status == 404
    assert fake.requests[0]["path"] == "/allocation/compute"


def test_500_then_success_is_retried() -> None:
    with FakeKubecost() as fake:
        fake.sets[WINDOW] = _set()
        fake.fail_next("500")
        df = _client(fake).allocations(day=DAY, tenant_label="tenant")
    assert len(fake.requests) == 2
    assert len(df) == 4


def test_persistent_500_is_a_clear_error() -> None:
    with FakeKubecost() as fake:
        fake.fail_next("500", times=5)
        with pytest.raises(ApiError) as err:
            _client(fake).allocations(day=DAY, tenant_label="tenant")
    assert "Kubecost" in str(err.value) and "/model/allocation" in str(err.value)
    assert len(fake.requests) == 3  # the first try and two retries


def test_timeout_is_retried_then_reported() -> None:
    with FakeKubecost(hang_seconds=0.5) as fake:
        fake.sets[WINDOW] = _set()
        fake.fail_next("hang")
        df = _client(fake, timeout_seconds=0.2).allocations(day=DAY, tenant_label="tenant")
        assert len(df) == 4
        fake.fail_next("hang", times=3)
        with pytest.raises(ApiError) as err:
            _client(fake, timeout_seconds=0.2).allocations(day=DAY, tenant_label="tenant")
    assert "OpenCost" not in str(err.value)
    assert err.value.status is None


def test_empty_day_is_an_empty_frame() -> None:
    with FakeKubecost("opencost") as fake:
        df = _client(fake).allocations(day=DAY, tenant_label="tenant")
    assert df.empty


@pytest.mark.parametrize(
    "body",
    [{"code": 500, "data": [], "message": "boom"}, {"status": "error", "data": []}, {"x": 1}],
)
def test_error_bodies_are_api_errors(body: dict) -> None:
    with pytest.raises(ApiError):
        parse_allocations(body, day=DAY, service="OpenCost", endpoint="GET /allocation")


def test_twin_serves_demo_namespaces_platform_and_idle(demo_config) -> None:
    df = KubecostTwin().allocations(day=date(2026, 9, 2), tenant_label="tenant")
    tenants = map_k8s_tenants(df, demo_config)
    assert set(tenants.dropna()) == set(demo_config.tenants_by_id)
    assert {"__idle__", "platform/__unallocated__"} <= set(df["allocation_name"])
    assert (df["total_cost"] > 0).all()
