"""`budget_status` and `tenant_enforcement`: spend vs budget and tier per tenant, and the flag.

The daily partitions end at yesterday. Today, still running, is `budget_status_today`: an
unpartitioned asset the hourly refresh rebuilds, which writes today's rows of the same two tables
(LLM spend up to the run, other spend through yesterday) until the daily close builds the day.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd

from cost_pipeline.defs.partitions import (
    SINGLE_RUN,
    daily_partitions,
    day_chunks,
    for_each_day,
    merge_days,
    partition_day,
    partition_days,
)
from cost_pipeline.lib.budgets import BUDGET_STATUS, TENANT_ENFORCEMENT, alert_facts, enforcement
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.spend import evaluate_days
from cost_pipeline.store.warehouse import Warehouse

ALERT_FACTS_KEY = "alert_facts"


@dg.asset(
    group_name="budgets",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=["daily_cost_summary", "priced_interactions", "cost_forecasts"],
    description=(
        "Per UTC day, tenant (and the company) and local billing period overlapping the day: "
        "spend to date, budget, tier allowance and hard cap, utilization, forecast month end, "
        "projected breach date and status ok / warning / critical / exceeded."
    ),
)
def budget_status(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    days = partition_days(context)
    results = []
    # A range is evaluated a chunk of days at a time, each chunk from one read.
    for chunk in day_chunks(days):
        for day, status in evaluate_days(wh, cost_config.get(), chunk).items():
            results.append(_status_day(wh, day, status))
    return merge_days(days, results)


def _status_day(wh: Warehouse, day: date, status: pd.DataFrame) -> dg.MaterializeResult:
    rows = wh.replace_partition(BUDGET_STATUS, day, status)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "total_spend_usd": round(float(status["spend_usd"].sum()), 6),
            **status_metadata(status, alert_facts(status), key="tenant_id", noun="tenants"),
        }
    )


def status_metadata(
    status: pd.DataFrame, facts: pd.DataFrame, *, key: str, noun: str
) -> dict[str, object]:
    """A budget status day's counts per status, its alert facts and the top utilizations
    (`key`: the column naming a row, `tenant_id` or `node_id`; `noun` prefixes the counts)."""
    worst = status.sort_values("utilization_pct", ascending=False)
    shown = worst[[key, "period", "spend_usd", "limit_usd", "utilization_pct", "status"]]
    return {
        **{
            f"{noun}_{s}": int((status["status"] == s).sum())
            for s in ("warning", "critical", "exceeded")
        },
        # Read by the budget alert sensor: what is alertable, without touching the warehouse.
        ALERT_FACTS_KEY: dg.MetadataValue.json(facts.to_dict("records")),
        "top_utilization": dg.MetadataValue.md(markdown_table(shown, max_rows=10)),
    }


@dg.asset(
    group_name="budgets",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[budget_status],
    description=(
        "Whether each tenant may call models: a tier with a hard cap is blocked once its spend "
        "in the current local period reaches the cap. Read by "
        "`cost_pipeline.enforcement.is_allowed`."
    ),
)
@for_each_day
def tenant_enforcement(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    return _enforcement_day(wh, day, wh.read(BUDGET_STATUS, days=[day]))


def _enforcement_day(wh: Warehouse, day: date, status: pd.DataFrame) -> dg.MaterializeResult:
    previous = wh.read(TENANT_ENFORCEMENT, days=[day - timedelta(days=i) for i in range(1, 36)])
    rows = enforcement(status, previous)
    wh.replace_partition(TENANT_ENFORCEMENT, day, rows)
    blocked = rows[~rows["allowed"].astype(bool)]
    return dg.MaterializeResult(
        metadata={
            "rows": len(rows),
            "blocked": len(blocked),
            "blocked_tenants": dg.MetadataValue.md(
                markdown_table(
                    blocked[["tenant_id", "period", "spend_usd", "hard_cap_usd", "since"]]
                )
            ),
            "blocked_ids": dg.MetadataValue.json(
                json.loads(blocked["tenant_id"].to_json(orient="values"))
            ),
        }
    )


@dg.asset(
    group_name="budgets",
    kinds={"python", "sql"},
    deps=["llm_interactions"],
    description=(
        "Today so far (UTC), which is not a daily partition yet: `budget_status` and "
        "`tenant_enforcement` rows of today, from the LLM calls ingested up to this run and the "
        "other spend through yesterday. Rebuilt by the hourly refresh; the daily close replaces "
        "it with the finished day."
    ),
)
def budget_status_today(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    day = now.date()
    wh = warehouse.get()
    status = evaluate_days(wh, cost_config.get(), [day], as_of=now)[day]
    result = _status_day(wh, day, status)
    blocking = _enforcement_day(wh, day, status)
    context.log.info(f"today {day} as of {now:%H:%M} UTC: {blocking.metadata['blocked']} blocked")
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "as_of": now.isoformat(timespec="seconds"),
            **(result.metadata or {}),
            "blocked": blocking.metadata["blocked"],
            "blocked_tenants": blocking.metadata["blocked_tenants"],
        }
    )
