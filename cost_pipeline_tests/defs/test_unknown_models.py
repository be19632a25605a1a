"""Protects knowledge from an unknown model: the day still builds, flagged, never at $0 silently."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import DAILY_COST_SUMMARY, PRICED_INTERACTIONS
from cost_pipeline.defs.pricing.assets import no_unknown_models, priced_interactions
from cost_pipeline.defs.summaries.assets import daily_cost_summary
from cost_pipeline.lib.schemas import TOKEN_COLUMNS
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse

DAY = date(2026, 9, 2)


def test_an_unknown_model_flags_the_day_and_the_summary_still_builds(warehouse_url: str) -> None:
    calls = pd.DataFrame(
        {
            "event_id": ["known", "unknown"],
            "occurred_at": datetime(2026, 9, 2, 9, tzinfo=UTC),
            "day": DAY,
            "tenant_id": "acme",
            "provider": "openai",
            "model": ["gpt-4o-mini", "gpt-from-the-future"],
            **dict.fromkeys(TOKEN_COLUMNS, 0),
            "input_tokens": 1000,
            "output_tokens": 100,
            "cost_usd": 0.0,
            "pricing_status": "priced",  # stale: the day is re-priced below
        }
    )
    for name in ("cost_input_usd", "cost_cache_read_usd", "cost_cache_write_usd"):
        calls[name] = 0.0
    calls["cost_output_usd"] = 0.0
    calls["cost_other_usd"] = 0.0
    Warehouse(warehouse_url).replace_partition(PRICED_INTERACTIONS, DAY, calls)
    result = dg.materialize(
        [priced_interactions, no_unknown_models, daily_cost_summary],
        partition_key=DAY.isoformat(),
        resources={
            "warehouse": WarehouseResource(url=warehouse_url),
            "cost_config": CostConfigResource(),
        },
    )
    assert result.success
    (check,) = [
        c for c in result.get_asset_check_evaluations() if c.check_name == "no_unknown_models"
    ]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    summary = Warehouse(warehouse_url).read(DAILY_COST_SUMMARY, days=[DAY])
    assert int(summary["unpriced_requests"].sum()) == 1
    assert int(summary["requests"].sum()) == 2
    assert float(summary["cost_usd"].sum()) > 0  # the known call is priced
