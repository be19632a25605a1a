"""Protects the analytics wiring: both assets materialize from the warehouse, idempotently."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.defs.analytics.assets import anomaly_scores, cost_forecasts
from cost_pipeline.lib.anomaly import ANOMALY_SCORES
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.forecasting import COST_FORECASTS
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
