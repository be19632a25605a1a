"""Protects the per-source quarantine checks: each day's result is its own, WARN on any
quarantined record of the day, ERROR above the configured share, and a record whose day could
not be read counts on the day it was detected."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations.
from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import PRICED_INTERACTIONS, QUARANTINE
from cost_pipeline.defs.summaries.assets import daily_cost_summary, quarantine_by_source
from cost_pipeline.lib.pricing import PricingEngine
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.lib.test_pricing import calls

DAY = date(2026, 9, 2)


def _quarantined(n: int, day: date | None, detected: datetime) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": "llm_interactions",
            "day": [day] * n,
            "source_file": "log.jsonl",
            "line": range(1, n + 1),
            "raw": "{not json",
            "reason": "not JSON",
            "detected_at": detected,
        }
    )


def test_quarantine_checks_per_source_and_day(warehouse_url: str) -> None:
    wh = Warehouse(warehouse_url)
    wh.migrate()
    frame = calls(
        event_id=[f"e{i}" for i in range(99)],
        occurred_at=pd.Timestamp("2026-09-02T12:00Z"),
        tenant_id="t1",
        agent_id=None,
        day=DAY,
    )
    wh.replace_partition(PRICED_INTERACTIONS, DAY, PricingEngine().price(frame))
    noon = datetime(2026, 9, 2, 12, tzinfo=UTC)
    # One record of the day, one whose day could not be read but was detected on it, and one
    # of another day: 2 of 101 records of the day (1.98 %), above the 1 % default.
    wh.append(QUARANTINE, _quarantined(1, DAY, noon))
    wh.append(QUARANTINE, _quarantined(1, None, noon))
    wh.append(QUARANTINE, _quarantined(1, date(2026, 9, 3), noon))
    result = dg.materialize(
        [daily_cost_summary, quarantine_by_source],
        partition_key=DAY.isoformat(),
        resources={
            "warehouse": WarehouseResource(url=warehouse_url),
            "cost_config": CostConfigResource(),
        },
        raise_on_error=False,
    )
    got = {e.check_name: e for e in result.get_asset_check_evaluations()}
    llm = got["quarantine_llm_interactions"]
    assert not llm.passed and llm.severity == dg.AssetCheckSeverity.ERROR
    assert llm.partition == DAY.isoformat()
    assert llm.metadata["quarantined"].value == 2 and llm.metadata["accepted"].value == 99
    assert got["quarantine_cloud_costs"].passed
    assert got["quarantine_k8s_allocations"].passed
