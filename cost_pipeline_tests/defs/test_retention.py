"""Protects retention on SQLite and Postgres: exactly the days past their limit are dropped,
never one that is not summarized (no summary, or a summary that misses a late call), each drop
is logged with its evidence, and a second run drops nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import time_machine
import yaml

from cost_pipeline.catalog import DAILY_COST_SUMMARY, PRICED_INTERACTIONS, QUARANTINE, RETENTION_LOG
from cost_pipeline.defs.maintenance.assets import retention_cutoff, retention_log
from cost_pipeline.defs.summaries.assets import daily_cost_summary
from cost_pipeline.lib.config import CONFIG_ENV, load_config, packaged_config_path
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.billing_helpers import seed

TODAY = datetime(2026, 9, 30, 6, tzinfo=UTC)
CALLS = [
    ("acme", datetime(2026, 9, 10, 9, tzinfo=UTC), 2.0, 10),  # summarized: dropped
    ("acme", datetime(2026, 9, 10, 11, tzinfo=UTC), 3.0, 10),
    ("acme", datetime(2026, 9, 12, 9, tzinfo=UTC), 4.0, 10),  # no summary: kept
    ("acme", datetime(2026, 9, 15, 9, tzinfo=UTC), 5.0, 10),  # a late call after it: kept
    ("acme", datetime(2026, 9, 15, 23, tzinfo=UTC), 1.0, 10),
    ("acme", datetime(2026, 9, 25, 9, tzinfo=UTC), 6.0, 10),  # within 10 days: untouched
]


def _summary(wh: Warehouse, day: date, requests: int, cost: float) -> None:
    row = pd.DataFrame(
        {"day": [day], "tenant_id": "acme", "cost_category": "llm", "cost_usd": cost}
    ).assign(requests=requests, input_tokens=0, output_tokens=0, unpriced_requests=0)
    wh.replace_partition(DAILY_COST_SUMMARY, day, row)


def test_retention_drops_exactly_the_summarized_days_past_their_limit(
    tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = yaml.safe_load(packaged_config_path().read_text())
    raw["demo"]["enabled"] = False
    raw["partitions"] = {"first_day": "2026-08-01"}
    raw["retention"] = {"days": {"priced_interactions": 10, "quarantine": 30}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    wh = Warehouse(warehouse_url)
    seed(wh, CALLS)
    _summary(wh, date(2026, 9, 10), 2, 5.0)
    _summary(wh, date(2026, 9, 15), 1, 5.0)  # built before the 23:00 call landed
    wh.append(
        QUARANTINE,
        pd.DataFrame(
            [{"source": "llm_interactions", "day": date(2026, 9, 10), "source_file": "a.jsonl",
              "line": 3, "raw": "{", "reason": "bad json", "detected_at": TODAY}]
        ),
    )  # fmt: skip
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(path=str(config)),
    }
    with time_machine.travel(TODAY, tick=False):
        result = dg.materialize([retention_log], resources=resources)
        again = dg.materialize([retention_log], resources=resources)
    meta = result.asset_materializations_for_node("retention_log")[0].metadata
    assert meta["days_dropped"].value == 1 and meta["rows_dropped"].value == 2
    assert meta["days_kept_unsummarized"].value == 2
    left = wh.read(PRICED_INTERACTIONS).groupby("day").size().to_dict()
    assert left == {date(2026, 9, 12): 1, date(2026, 9, 15): 2, date(2026, 9, 25): 1}
    assert len(wh.read(QUARANTINE)) == 1  # 30 days for quarantine: the 10th stays
    log = wh.read(RETENTION_LOG)
    assert log[["table_name", "day", "rows_dropped", "retention_days"]].values.tolist() == [
        ["priced_interactions", date(2026, 9, 10), 2, 10]
    ]
    assert '"summary_requests": 2' in log.iloc[0]["evidence"]
    assert (
        again.asset_materializations_for_node("retention_log")[0].metadata["days_dropped"].value
        == 0
    )
    # The daily partitions start after the retention of the calls: nothing can rebuild the 10th.
    assert load_config(config).first_partition_day(TODAY.date()) == date(2026, 9, 21)
    monkeypatch.setenv(CONFIG_ENV, str(config))
    with time_machine.travel(TODAY, tick=False), pytest.raises(dg.Failure, match="final"):
        dg.materialize([daily_cost_summary], resources=resources, partition_key="2026-09-10")
    summary = wh.read(DAILY_COST_SUMMARY, days=[date(2026, 9, 10)])
    assert summary["cost_usd"].sum() == pytest.approx(5.0)  # untouched


def test_the_cutoff_keeps_today_and_the_days_before_it() -> None:
    assert retention_cutoff(date(2026, 9, 30), 10) == date(2026, 9, 21)


def test_a_table_not_kept_by_day_is_refused(tmp_path: Path, sqlite_url: str) -> None:
    raw = {
        "tiers": {"t": {"name": "T"}},
        "tenants": [],
        "retention": {"days": {"ingested_files": 30}},
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.raises(dg.Failure, match="not tables kept by day"):
        dg.materialize(
            [retention_log],
            resources={
                "warehouse": WarehouseResource(url=sqlite_url),
                "cost_config": CostConfigResource(path=str(config)),
            },
        )
