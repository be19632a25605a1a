"""Protects budget status math: utilization, status, breach date, crossings, enforcement, and
what a tier's allowance and hard cap count (`allowance_counts`) against what budgets count."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.lib.budgets import (
    alert_facts,
    enforcement,
    highest_threshold,
    new_crossing,
    top_drivers,
)
from cost_pipeline.lib.config import CostConfig, parse_config
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.lib.slack_messages import budget_message
from cost_pipeline.store.spend import evaluate_day
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.billing_helpers import seed

CONFIG = parse_config(
    {
        "tiers": {
            "free": {"name": "Free", "included_usage_usd": 5, "hard_cap_usd": 5},
            "pro": {"name": "Pro", "included_usage_usd": 200, "overage": {"unit": "usd"}},
        },
        "company_budget": {"monthly_usd": 1000},
        "tenants": [
            {"id": "free1", "name": "Free One", "tier": "free", "timezone": "Asia/Tokyo"},
            {
                "id": "pro1",
                "name": "Pro One",
                "tier": "pro",
                "budget": {"monthly_usd": 300, "daily_usd": 20, "thresholds": [50, 90]},
            },
        ],
    }
)


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        (None, 40.0, None),
        (None, 55.0, 50),
        (40.0, 95.0, 90),  # 50 and 90 crossed at once: only 90
        (91.0, 95.0, None),
        (95.0, 120.0, 100),
        (float("nan"), 80.0, 75),
    ],
)
def test_new_crossing(before: float | None, now: float, expected: float | None) -> None:
    assert new_crossing(before, now, [50, 75, 90, 100]) == expected


def test_highest_threshold_without_utilization() -> None:
    assert highest_threshold(None, [50]) is None
    assert highest_threshold(float("nan"), [50]) is None


def _summary(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        columns=["day", "tenant_id", "cost_category", "model_or_service", "agent_id", "cost_usd"],
    ).assign(requests=0, input_tokens=0, output_tokens=0, unpriced_requests=0)


def test_top_drivers_keeps_three_costliest() -> None:
    summary = _summary(
        [
            (date(2026, 10, 1), "t", "llm", "gpt-4o", "a1", 5.0),
            (date(2026, 10, 2), "t", "llm", "gpt-4o", "a1", 5.0),
            (date(2026, 10, 1), "t", "llm", "claude", "a2", 3.0),
            (date(2026, 10, 1), "t", "cloud", "EC2", None, 4.0),
            (date(2026, 10, 1), "t", "k8s", "cluster-a", None, 1.0),
        ]
    )
    out = json.loads(top_drivers(summary).iloc[0]["top_drivers"])
    assert [d["driver"] for d in out] == ["agent a1 · gpt-4o", "cloud · EC2", "agent a2 · claude"]
    assert out[0]["cost_usd"] == 10.0


def test_evaluate_day_status_breach_and_enforcement(warehouse: Warehouse) -> None:
    wh = warehouse
    rows = [(date(2026, 10, d), "pro1", "cloud", "EC2", None, 10.0) for d in range(1, 11)]
    rows += [(date(2026, 10, 10), "pro1", "llm", "gpt-4o", "a1", 150.0)]
    wh.append(DAILY_COST_SUMMARY, _summary(rows))
    # Free tiers count LLM calls toward their cap (the default `allowance_counts: llm`).
    seed(wh, [("free1", datetime(2026, 10, 9, 12, tzinfo=UTC), 6.0, 10)])
    status = evaluate_day(wh, CONFIG, date(2026, 10, 10)).set_index("tenant_id")

    pro = status.loc["pro1"]
    assert pro["spend_usd"] == pytest.approx(100.0)  # the llm summary rows are not counted
    assert pro["limit_usd"] == 300 and pro["limit_kind"] == "budget"
    assert pro["utilization_pct"] == pytest.approx(33.3333, abs=1e-3)
    assert pro["day_spend_usd"] == pytest.approx(160.0)  # the day's whole summary, llm included
    assert pro["daily_utilization_pct"] == pytest.approx(800.0)
    # Run rate: 100 in 10 of 31 days -> 310 > 300; at $10 a day 300 is reached at Oct 31 00:00.
    assert pro["forecast_source"] == "run_rate"
    assert pro["forecast_month_end_usd"] == pytest.approx(310.0)
    assert pro["projected_breach_date"] == date(2026, 10, 31)
    assert pro["status"] == "warning"
    assert pro["threshold_reached"] is None or pd.isna(pro["threshold_reached"])

    free = status.loc["free1"]
    assert free["limit_kind"] == "hard_cap"
    assert free["status"] == "exceeded" and free["threshold_reached"] == 100
    assert free["projected_breach_date"] == date(2026, 10, 11)  # already over: as-of, Tokyo date
    assert status.loc[COMPANY, "spend_usd"] == pytest.approx(106.0)
    drivers = json.loads(status.loc["pro1", "top_drivers"])
    assert drivers[0]["driver"] == "agent a1 · gpt-4o"

    facts = alert_facts(status.reset_index())
    assert set(map(tuple, facts[["tenant_id", "kind", "ref"]].values)) == {
        ("free1", "budget_threshold", "100"),
        ("pro1", "forecast_breach", "forecast"),
        # $160 spent on the day against a $20 daily budget.
        ("pro1", "daily_limit", "2026-10-10"),
    }
    text, _ = budget_message(
        status.loc["pro1"].to_dict() | {"tenant_id": "pro1"},
        kind="daily_limit",
        ref="2026-10-10",
        tenant_name="Pro One",
        ui_url="http://ui",
    )
    assert text.startswith(
        "Daily budget reached on 2026-10-10: Pro One spent $160.00 on 2026-10-10 (UTC day) "
        "against a daily budget of $20.00 (800.0%)"
    )

    enf = enforcement(status.reset_index(), pd.DataFrame()).set_index("tenant_id")
    assert COMPANY not in enf.index
    assert not enf.loc["free1", "allowed"] and "hard cap" in enf.loc["free1", "reason"]
    assert "LLM spend 6.0 USD" in enf.loc["free1", "reason"]
    assert enf.loc["pro1", "allowed"] and enf.loc["pro1", "reason"] == "no hard cap"


def test_month_end_day_gives_two_periods_for_a_tenant_ahead_of_utc(
    warehouse: Warehouse,
) -> None:
    wh = warehouse
    status = evaluate_day(wh, CONFIG, date(2026, 10, 31))
    got = status[status["tenant_id"] == "free1"].sort_values("period")
    # Tokyo's November begins at 15:00 UTC on Oct 31.
    assert got["period"].tolist() == ["2026-10", "2026-11"]
    assert got["as_of"].tolist() == [
        pd.Timestamp(datetime(2026, 10, 31, 15, tzinfo=UTC)),
        pd.Timestamp(datetime(2026, 11, 1, tzinfo=UTC)),
    ]
    assert status[status["tenant_id"] == "pro1"]["period"].tolist() == ["2026-10"]


def _config_counting(counts: str, *, free_budget: float | None = None) -> CostConfig:
    raw = {
        "tiers": {
            "free": {
                "name": "Free",
                "included_usage_usd": 5,
                "hard_cap_usd": 5,
                "allowance_counts": counts,
            },
        },
        "tenants": [{"id": "free1", "name": "Free One", "tier": "free"}],
    }
    if free_budget is not None:
        raw["tenants"][0]["budget"] = {"monthly_usd": free_budget}
    return parse_config(raw)


def _free_tenant_with_infrastructure(wh: Warehouse) -> None:
    """free1 in October: $2 of LLM calls and $6 of Kubernetes cost spread onto it."""
    wh.append(DAILY_COST_SUMMARY, _summary([(date(2026, 10, 9), "free1", "k8s", "c", None, 6.0)]))
    seed(wh, [("free1", datetime(2026, 10, 9, 12, tzinfo=UTC), 2.0, 10)])


@pytest.mark.parametrize(
    ("counts", "counted", "status", "allowed"),
    [
        ("llm", 2.0, "ok", True),  # 40 % of the $5 cap: infrastructure does not count
        ("all", 8.0, "exceeded", False),  # the whole cost is over the cap
    ],
)
def test_hard_cap_counts_what_the_tier_says(
    warehouse: Warehouse, counts: str, counted: float, status: str, allowed: bool
) -> None:
    _free_tenant_with_infrastructure(warehouse)
    config = _config_counting(counts)
    # Late in the month, so the run rate ($2 by the 28th) stays under the cap.
    rows = evaluate_day(warehouse, config, date(2026, 10, 28)).set_index("tenant_id")
    free = rows.loc["free1"]
    assert free["limit_kind"] == "hard_cap" and free["allowance_counts"] == counts
    assert free["spend_usd"] == pytest.approx(8.0)  # the whole spend is still reported
    assert free["llm_cost_usd"] == pytest.approx(2.0)
    assert free["counted_spend_usd"] == pytest.approx(counted)
    assert free["utilization_pct"] == pytest.approx(counted / 5 * 100)
    assert free["status"] == status
    assert rows.loc[COMPANY, "counted_spend_usd"] == pytest.approx(8.0)  # budgets: whole cost

    enf = enforcement(rows.reset_index(), pd.DataFrame()).set_index("tenant_id")
    assert bool(enf.loc["free1", "allowed"]) is allowed
    assert enf.loc["free1", "spend_usd"] == pytest.approx(counted)

    text, _ = budget_message(
        rows.reset_index().set_index("tenant_id").loc["free1"].to_dict() | {"tenant_id": "free1"},
        kind="budget_threshold",
        ref="75",
        tenant_name="Free One",
        ui_url="http://ui",
    )
    assert (" of LLM usage of " in text) is (counts == "llm")


def test_budget_judges_the_whole_cost_while_the_cap_judges_llm(warehouse: Warehouse) -> None:
    _free_tenant_with_infrastructure(warehouse)
    config = _config_counting("llm", free_budget=4)
    rows = evaluate_day(warehouse, config, date(2026, 10, 10))
    free = rows.set_index("tenant_id").loc["free1"]
    assert free["limit_kind"] == "budget" and free["limit_usd"] == 4
    assert free["counted_spend_usd"] == pytest.approx(8.0)
    assert free["status"] == "exceeded" and free["threshold_reached"] == 100
    enf = enforcement(rows, pd.DataFrame()).set_index("tenant_id")
    assert bool(enf.loc["free1", "allowed"])  # $2 of LLM calls are under the $5 cap
    assert enf.loc["free1", "reason"] == "under hard cap"


def test_a_forecast_breach_is_alerted_only_when_it_is_likely() -> None:
    """A breach is alerted when even the lower 80 % bound is over the limit, or, with the run
    rate alone, once a week of the period is behind: not after one expensive call on the 2nd."""
    start = pd.Timestamp("2026-10-01", tz="UTC")

    def row(tenant: str, source: str, lower: float, days_in: float) -> dict:
        return {
            "tenant_id": tenant,
            "period": "2026-10",
            "threshold_reached": None,
            "projected_breach_date": date(2026, 10, 25),
            "utilization_pct": 40.0,
            "forecast_month_end_usd": 120.0,
            "forecast_lower_usd": lower,
            "limit_usd": 100.0,
            "forecast_source": source,
            "period_start": start,
            "period_end": start + pd.Timedelta(days=31),
            "as_of": start + pd.Timedelta(days=days_in),
            "day": date(2026, 10, 1) + pd.Timedelta(days=int(days_in)),
            "daily_utilization_pct": float("nan"),
        }

    status = pd.DataFrame(
        [
            row("sure", "cost_forecasts", 105.0, 3),
            row("maybe", "cost_forecasts", 60.0, 20),
            row("early_run_rate", "run_rate", float("nan"), 1.5),
            row("late_run_rate", "run_rate", float("nan"), 10),
        ]
    )
    facts = alert_facts(status)
    assert sorted(facts.loc[facts["kind"] == "forecast_breach", "tenant_id"]) == [
        "late_run_rate",
        "sure",
    ]
