"""Protects the analytics wiring: both assets materialize from the warehouse, idempotently."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.defs.analytics.assets import anomaly_scores, cost_forecasts
from cost_pipeline.lib.anomaly import ANOMALY_SCORES
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.forecasting import COST_FORECASTS, forecast_month_end
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.benchmarks.synthetic import synthetic_daily_summary

AS_OF = date(2026, 6, 16)


@pytest.fixture
def url(sqlite_url: str, demo_config: CostConfig) -> str:
    url = sqlite_url
    ids = [t.id for t in demo_config.tenants]
    daily, _ = synthetic_daily_summary(len(ids) - 2, date(2026, 2, 1), 136, seed=3)
    daily["tenant_id"] = daily["tenant_id"].map(lambda t: ids[int(t[1:])])
    # A runaway agent on the as-of day, 10x its usual cost.
    hit = (daily["tenant_id"] == ids[0]) & (daily["agent_id"] == "agent-0")
    daily.loc[hit & (daily["day"] == AS_OF), ["cost_usd", "requests"]] *= 10
    wh = Warehouse(url)
    wh.replace_partition(DAILY_COST_SUMMARY, sorted(set(daily["day"])), daily)
    wh.dispose()
    return url


def _run(url: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [cost_forecasts, anomaly_scores],
        partition_key=AS_OF.isoformat(),
        resources={
            "warehouse": WarehouseResource(url=url),
            "cost_config": CostConfigResource(),
        },
    )


def test_assets_materialize_with_readable_metadata(url: str, demo_config: CostConfig) -> None:
    result = _run(url)
    assert result.success
    wh = Warehouse(url)
    forecasts = wh.read(COST_FORECASTS, days=[AS_OF])
    # Every configured tenant (two have no spend at all) and the company.
    assert len(forecasts) == len(demo_config.tenants) + 1
    idle = forecasts[forecasts["model"] == "zero"]
    assert len(idle) == 2 and (idle["forecast_usd"] == 0).all()
    company = forecasts.set_index("tenant_id").loc["__company__"]
    assert company["budget_usd"] == float(demo_config.company_budget.monthly_usd)
    assert company["lower_80_usd"] <= company["forecast_usd"] <= company["upper_80_usd"]

    scores = wh.read(ANOMALY_SCORES, days=[AS_OF])
    runaway = scores[(scores["tenant_id"] == demo_config.tenants[0].id)]
    agent = runaway[runaway["driver"] == "agent:agent-0"].iloc[0]
    assert agent["severity"] == "critical"
    assert "agent:agent-0" in agent["reason"] and "usual" in agent["reason"]

    meta = result.asset_materializations_for_node("cost_forecasts")[0].metadata
    assert meta["company_chart"].value.startswith("![Company forecast](data:image/png;base64,")
    assert "| tenant_id" in meta["forecast_vs_budget"].value
    top = result.asset_materializations_for_node("anomaly_scores")[0].metadata["top_anomalies"]
    assert "agent:agent-0" in top.value


def test_rerun_replaces_the_partition(url: str) -> None:
    assert _run(url).success
    wh = Warehouse(url)
    first = (wh.count(COST_FORECASTS), wh.count(ANOMALY_SCORES))
    assert _run(url).success
    assert (wh.count(COST_FORECASTS), wh.count(ANOMALY_SCORES)) == first


def test_empty_warehouse_gives_zero_forecasts_and_no_anomalies(tmp_path: Path) -> None:
    # A warehouse nobody migrated yet: the run migrates it at its start.
    url = f"sqlite:///{tmp_path}/empty.db"
    assert _run(url).success
    wh = Warehouse(url)
    forecasts = wh.read(COST_FORECASTS, days=[AS_OF])
    assert (forecasts["model"] == "zero").all() and (forecasts["forecast_usd"] == 0).all()
    scores = wh.read(ANOMALY_SCORES, days=[AS_OF - timedelta(days=0)])
    assert (scores["severity"] == "none").all()


def _infra_rows(tenant: str, days: list[date], category: str) -> pd.DataFrame:
    """A cloud- or Kubernetes-only tenant's summary rows, the same every week ($100 x a weekday
    shape)."""
    shape = [1.2, 1.2, 1.1, 1.1, 1.0, 0.6, 0.5]
    return pd.DataFrame(
        {
            "day": days,
            "tenant_id": tenant,
            "cost_category": category,
            "provider": "AWS" if category == "cloud" else "Kubernetes",
            "model_or_service": "Compute",
            "agent_id": None,
            "requests": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": [100.0 * shape[d.weekday()] for d in days],
            "unpriced_requests": 0,
        }
    )


def _tenant_forecast(url: str, tenant: str) -> tuple[float, dict]:
    result = _run(url)
    assert result.success
    row = Warehouse(url).read(COST_FORECASTS, days=[AS_OF]).set_index("tenant_id").loc[tenant]
    meta = result.asset_materializations_for_node("cost_forecasts")[0].metadata
    return float(row["forecast_usd"]), {k: v.value for k, v in meta.items()}


@pytest.mark.parametrize("source", ["cloud", "k8s"])
def test_days_a_source_has_not_delivered_are_estimated_not_zero(
    url: str, demo_config: CostConfig, source: str
) -> None:
    tenant = demo_config.tenants[-1].id  # no LLM spend in the fixture
    days = [AS_OF - timedelta(days=i) for i in range(119, -1, -1)]
    wh = Warehouse(url)
    summary = wh.read(DAILY_COST_SUMMARY, days=days)
    wh.replace_partition(
        DAILY_COST_SUMMARY,
        days,
        pd.concat([summary, _infra_rows(tenant, days, source)], ignore_index=True),
    )
    delivered, meta = _tenant_forecast(url, tenant)
    assert f"{source}_not_yet_delivered" not in meta

    # The source has delivered up to two days before the as-of day (a Tuesday: the missing
    # Monday and Tuesday are $120 each).
    late = [AS_OF - timedelta(days=1), AS_OF]
    kept = summary[summary["day"].isin(late)]
    wh.replace_partition(DAILY_COST_SUMMARY, late, kept)
    estimated, meta = _tenant_forecast(url, tenant)
    # The missing days are what the same weekdays cost a week before: the forecast is the one
    # the delivered rows give, not lowered by two $0 days (and their repetition by the models).
    assert estimated == pytest.approx(delivered, rel=1e-9)
    assert meta[f"{source}_rows_through"] == str(AS_OF - timedelta(days=2))
    text = meta[f"{source}_not_yet_delivered"]
    assert "estimated from the same weekday a week before ($240.00)" in text
    history = wh.read(DAILY_COST_SUMMARY, days=days)
    history["cost_usd"] = history["cost_usd"].astype(float)
    as_zero = forecast_month_end(history, AS_OF).set_index("tenant_id").loc[tenant, "forecast_usd"]
    assert as_zero < 0.98 * delivered

    # A source five days behind is not papered over: its check names it.
    gone = [AS_OF - timedelta(days=i) for i in range(4, -1, -1)]
    wh.replace_partition(DAILY_COST_SUMMARY, gone, summary[summary["day"].isin(gone)])
    _, meta = _tenant_forecast(url, tenant)
    assert "5 days before: not estimated" in meta[f"{source}_not_yet_delivered"]
