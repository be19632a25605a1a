"""Protects infra cost allocation: each rule, fallbacks, and money conservation on the demo."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY, INFRA_COST_ALLOCATION
from cost_pipeline.demo.infrastructure import (
    demo_days,
    focus_rows,
    kubecost_allocation_response,
)
from cost_pipeline.lib.allocation import (
    allocate,
    cloud_ledger,
    conservation,
    infra_summary_rows,
    k8s_ledger,
    map_k8s_tenants,
)
from cost_pipeline.lib.config import CostConfig, parse_config
from cost_pipeline.lib.focus import split_focus
from cost_pipeline.resources.kubecost import parse_allocations

DAY = date(2026, 9, 1)


def cfg(rule: str = "proportional", tenant: str | None = None) -> CostConfig:
    allocation = {"rule": rule, **({"tenant": tenant} if tenant else {})}
    return parse_config(
        {
            "tiers": {"free": {"name": "Free"}},
            "tenants": [{"id": t, "name": t, "tier": "free"} for t in ("a", "b", "platform")],
            "allocation": allocation,
        }
    )


def ledger(*entries: tuple[str, str | None, float], source: str = "k8s") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "day": DAY,
                "source": source,
                "category": cat,
                "provider": "P",
                "tenant_id": t,
                "amount": amt,
            }
            for cat, t, amt in entries
        ]
    )


def by_tenant(out: pd.DataFrame) -> dict[str, float]:
    return out.groupby("tenant_id")["cost_usd"].sum().round(9).to_dict()


@pytest.mark.parametrize(
    ("rule", "tenant", "expected"),
    [
        ("proportional", None, {"a": 30 + 7.5, "b": 10 + 2.5}),
        ("even", None, {"a": 30 + 10 / 3, "b": 10 + 10 / 3, "platform": 10 / 3}),
        ("tenant", "platform", {"a": 30.0, "b": 10.0, "platform": 10.0}),
    ],
)
def test_rules(rule: str, tenant: str | None, expected: dict[str, float]) -> None:
    entries = ledger(("c", "a", 30.0), ("c", "b", 10.0), ("c", None, 6.0), ("c", "ghost", 4.0))
    out = allocate(entries, cfg(rule, tenant))
    assert by_tenant(out) == pytest.approx(expected)
    assert out["direct_cost"].sum() == pytest.approx(40.0)
    assert out["shared_cost"].sum() == pytest.approx(10.0)
    assert conservation(entries, out)["conserved"].all()


def test_credits_do_not_earn_negative_shares_and_empty_days_fall_back_to_even() -> None:
    entries = ledger(("c", "a", 10.0), ("c", "b", -5.0), ("c", None, 2.0))
    assert by_tenant(allocate(entries, cfg())) == pytest.approx({"a": 12.0, "b": -5.0})
    only_shared = ledger(("c", None, 3.0))
    assert by_tenant(allocate(only_shared, cfg())) == pytest.approx(
        {"a": 1.0, "b": 1.0, "platform": 1.0}
    )


def test_rounding_residue_is_conserved_to_the_nano_dollar() -> None:
    entries = ledger(("c", "a", 1.0), ("c", "b", 2.0), ("c", None, 1e-9 * 7 + 0.1))
    out = INFRA_COST_ALLOCATION.conform(allocate(entries, cfg("even")))
    assert abs(out["cost_usd"].sum() - entries["amount"].sum()) < 1e-9


def test_money_is_conserved_on_the_demo_every_day_and_source(demo_config: CostConfig) -> None:
    days = demo_days(demo_config)
    cloud = []
    for month in sorted({d.strftime("%Y-%m") for d in days}):
        month_days = [d for d in days if d.strftime("%Y-%m") == month]
        for flavor in ("aws", "gcp"):
            raw = focus_rows(demo_config, month_days, flavor=flavor)
            cloud.append(split_focus(raw, source_file=flavor, config=demo_config).rows)
    k8s = []
    for d in days:
        body = kubecost_allocation_response(demo_config, d)
        alloc = parse_allocations(body, day=d, service="twin", endpoint="-")
        k8s.append(alloc.assign(tenant_id=map_k8s_tenants(alloc, demo_config)))
    entries = pd.concat(
        [cloud_ledger(pd.concat(cloud)), k8s_ledger(pd.concat(k8s))], ignore_index=True
    )
    out = INFRA_COST_ALLOCATION.conform(allocate(entries, demo_config))
    balance = conservation(entries, out)
    assert len(balance) == 2 * len(days)
    assert balance["conserved"].all(), balance[~balance["conserved"]]
    assert balance["gap_usd"].max() < 1e-6
    # every demo tenant receives cloud and k8s cost, and shared cost was actually spread
    per = out.groupby(["tenant_id", "source"])["cost_usd"].sum().unstack()
    assert set(per.index) == set(demo_config.tenants_by_id)
    assert (per > 0).all().all()
    assert out["shared_cost"].sum() > 0.1 * out["cost_usd"].sum()


def test_infra_summary_rows() -> None:
    alloc = allocate(
        pd.concat(
            [
                ledger(("prod-1", "a", 3.0), ("prod-1", None, 1.0)),
                ledger(("Compute", "a", 2.0), source="cloud"),
            ]
        ),
        cfg(),
    )
    rows = infra_summary_rows(alloc)
    assert list(rows.columns) == DAILY_COST_SUMMARY.column_names
    assert set(rows["cost_category"]) == {"k8s", "cloud"}
    assert rows["cost_usd"].sum() == pytest.approx(6.0)
    assert (rows["requests"] == 0).all() and (rows["input_tokens"] == 0).all()
    cloud = rows[rows["cost_category"] == "cloud"].iloc[0]
    assert (cloud["provider"], cloud["model_or_service"]) == ("P", "Compute")
    # read back from the stored table, k8s rows without a provider still name one
    stored = INFRA_COST_ALLOCATION.conform(alloc.assign(provider=None))
    k8s = infra_summary_rows(stored)
    assert set(k8s.loc[k8s["cost_category"] == "k8s", "provider"]) == {"Kubernetes"}
    assert infra_summary_rows(INFRA_COST_ALLOCATION.empty_frame()).empty
