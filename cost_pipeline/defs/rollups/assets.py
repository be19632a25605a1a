"""Rollups of the priced calls per UTC day (workflow runs, end users, agents) and the agents'
share of each tenant's monthly unit economics, with checks that each day adds up.

The rules (call trees, midnight, orphans, loops, success, revenue per agent) are told in
`lib.rollups`.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import AGENT_COSTS, AGENT_UNIT_ECONOMICS, END_USER_COSTS, WORKFLOW_RUNS
from cost_pipeline.defs.partitions import (
    SINGLE_RUN,
    daily_partitions,
    for_each_day,
    partition_day,
    partition_days,
)
from cost_pipeline.lib import rollups
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.lib.schemas import TableSchema
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import rollups as store
from cost_pipeline.store.warehouse import Warehouse

# Upstream assets by key: their modules belong to other domains and import heavier code.
priced_interactions = dg.AssetKey("priced_interactions")
tenant_unit_economics = dg.AssetKey("tenant_unit_economics")

TOP_RUN_COLUMNS = [
    "tenant_id",
    "root_event_id",
    "workflow_id",
    "agent_id",
    "calls",
    "depth",
    "duration_ms",
    "unpriced_calls",
    "success",
    "cost_usd",
]
TOP_USER_COLUMNS = ["tenant_id", "user_id", "calls", "unpriced_calls", "cost_usd"]
TOP_AGENT_COLUMNS = [
    "tenant_id",
    "agent_id",
    "calls",
    "unpriced_calls",
    "cost_usd",
    "cost_per_successful_call_usd",
    "cache_hit_share",
    "latency_p95_ms",
]
MARGIN_COLUMNS = [
    "tenant_id",
    "period",
    "agent_id",
    "calls",
    "cost_usd",
    "revenue_usd",
    "gross_margin_usd",
    "margin_pct",
]


def _figures(rows: pd.DataFrame) -> dict[str, float | int]:
    """The day's totals a person compares with the summary: cost, calls, unpriced calls."""
    return {
        "total_cost_usd": round(float(rows["cost_usd"].sum()), 6),
        "calls": int(rows["calls"].sum()),
        "unpriced_calls": int(rows["unpriced_calls"].sum()),
    }


# What every rollup asset shares: its group, kinds, the daily partitions, one run per range.
DAILY_ROLLUP = {
    "group_name": "rollups",
    "kinds": {"python", "sql"},
    "partitions_def": daily_partitions,
    "backfill_policy": SINGLE_RUN,
}


@dg.asset(
    **DAILY_ROLLUP,
    deps=[priced_interactions],
    description=(
        "Per UTC day, one row per workflow run: a root call and its descendants through "
        "parent_event_id on that day, with cost, calls, depth, duration, unpriced calls and "
        "success. A run crossing midnight is a row per day (later ones `spans_days`); a call "
        "whose parent is missing is its own root (`orphan`); looping links are broken "
        "(`cycle`)."
    ),
)
@for_each_day
def workflow_runs(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    calls = store.day_calls(wh, day, rollups.RUN_COLUMNS)
    earlier = store.calls_on_day(wh, day - timedelta(days=1), rollups.missing_parents(calls))
    built = rollups.workflow_runs(calls, day, earlier_parents=earlier)
    runs = built.runs
    rows = wh.replace_partition(WORKFLOW_RUNS, day, runs)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "runs_cost_usd": round(float(runs["cost_usd"].sum()), 6),
            "runs_calls": int(runs["calls"].sum()),
            "runs_unpriced_calls": int(runs["unpriced_calls"].sum()),
            "outside_runs_calls": built.outside_calls,
            "outside_runs_cost_usd": round(built.outside_cost_usd, 6),
            "failed_runs": int((~runs["success"]).sum()),
            "max_depth": int(runs["depth"].max()) if len(runs) else 0,
            "orphans": int(runs["orphan"].sum()),
            "cycles": int(runs["cycle"].sum()),
            "spans_days": int(runs["spans_days"].sum()),
            "top_runs": dg.MetadataValue.md(
                markdown_table(rollups.top_by_cost(runs, TOP_RUN_COLUMNS))
            ),
        }
    )


@dg.asset(
    **DAILY_ROLLUP,
    deps=[priced_interactions],
    description=(
        "Per UTC day, tenant and end user: calls, unpriced calls, cost and tokens — who "
        "drives each tenant's spend."
    ),
)
@for_each_day
def end_user_costs(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    users = rollups.end_user_costs(store.day_calls(wh, day, rollups.USER_COLUMNS), day)
    rows = wh.replace_partition(END_USER_COSTS, day, users)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            **_figures(users),
            "users": int(users["user_id"].notna().sum()),
            "top_users": dg.MetadataValue.md(
                markdown_table(rollups.top_by_cost(users, TOP_USER_COLUMNS))
            ),
        }
    )


@dg.asset(
    **DAILY_ROLLUP,
    deps=[priced_interactions],
    description=(
        "Per UTC day, tenant and agent: cost, calls, cost per successful call, tokens per "
        "dollar, cache hit share, p50 / p95 latency and unpriced calls."
    ),
)
@for_each_day
def agent_costs(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    agents = rollups.agent_costs(store.day_calls(wh, day, rollups.AGENT_COLUMNS), day)
    rows = wh.replace_partition(AGENT_COSTS, day, agents)
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            **_figures(agents),
            "top_agents": dg.MetadataValue.md(
                markdown_table(rollups.top_by_cost(agents, TOP_AGENT_COLUMNS))
            ),
        }
    )


@dg.asset(
    **DAILY_ROLLUP,
    deps=[priced_interactions, tenant_unit_economics],
    description=(
        "Per tenant, tenant-local month and agent: the agent's LLM cost against its share of "
        "the tenant's revenue (by calls), margin. The tenant-level view is "
        "`tenant_unit_economics`. A day's run recomputes every month it touches in full."
    ),
)
def agent_unit_economics(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    config = cost_config.get()
    days = partition_days(context)
    tenants = {t.id for t in config.tenants} | set(store.tenants_on_days(wh, days))
    windows = rollups.period_windows(config, tenants, days)
    economics = rollups.agent_unit_economics(
        store.agent_usage_in_windows(wh, windows),
        store.tenant_revenue(wh, list(windows)),
        computed_at=datetime.now(UTC),
    )
    rows = store.replace_periods(wh, AGENT_UNIT_ECONOMICS, list(windows), economics)
    losing = economics[economics["gross_margin_usd"] < 0]
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "periods": ", ".join(sorted({p for _, p in windows})),
            "cost_usd": round(float(economics["cost_usd"].sum()), 2),
            "revenue_usd": round(float(economics["revenue_usd"].sum()), 2),
            "agents_losing_money": len(losing),
            "margins": dg.MetadataValue.md(
                markdown_table(
                    economics.sort_values("gross_margin_usd", na_position="last")[MARGIN_COLUMNS],
                    max_rows=30,
                )
            ),
        }
    )


def _adds_up(
    wh: Warehouse,
    schema: TableSchema,
    day: date,
    what: str,
    *,
    outside: dict[str, float | int] | None = None,
) -> dg.AssetCheckResult:
    """Whether `schema`'s rows of `day` (plus the calls `outside` them) have exactly the day's
    priced calls, cost and unpriced calls."""
    rollup = store.rollup_totals(wh, schema, day)
    found = {k: v + (outside or {}).get(k, 0) for k, v in rollup.items()}
    expected = store.day_totals(wh, day)
    gaps = {k: expected[k] - found[k] for k in expected}
    passed = abs(gaps["cost_usd"]) < 1e-6 and gaps["calls"] == 0 and gaps["unpriced_calls"] == 0
    return dg.AssetCheckResult(
        passed=passed,
        description=(
            f"{what} add up to the {expected['calls']:,} priced call(s) of {day}"
            if passed
            else f"{what} differ from the priced calls of {day} by {gaps['calls']:,} call(s), "
            f"${gaps['cost_usd']:,.6f} and {gaps['unpriced_calls']:,} unpriced call(s)"
        ),
        metadata={
            **{f"{schema.name}_{k}": v for k, v in rollup.items()},
            **{f"outside_runs_{k}": v for k, v in (outside or {}).items()},
            **{f"priced_{k}": v for k, v in expected.items()},
        },
    )


@dg.asset_check(
    asset=workflow_runs,
    partitions_def=daily_partitions,
    description=(
        "The day's workflow runs plus the calls outside any run have exactly the calls, cost "
        "and unpriced calls of the day's priced interactions."
    ),
)
@for_each_day
def runs_add_up_to_priced_calls(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    day = partition_day(context)
    wh = warehouse.get()
    outside = store.outside_runs_totals(wh, day)
    return _adds_up(wh, WORKFLOW_RUNS, day, "Runs and calls outside runs", outside=outside)


@dg.asset_check(
    asset=end_user_costs,
    partitions_def=daily_partitions,
    description="The day's end-user rows have exactly the calls, cost and unpriced calls of "
    "the day's priced interactions.",
)
@for_each_day
def end_users_add_up_to_priced_calls(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _adds_up(warehouse.get(), END_USER_COSTS, partition_day(context), "End-user rows")


@dg.asset_check(
    asset=agent_costs,
    partitions_def=daily_partitions,
    description="The day's agent rows have exactly the calls, cost and unpriced calls of the "
    "day's priced interactions.",
)
@for_each_day
def agents_add_up_to_priced_calls(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _adds_up(warehouse.get(), AGENT_COSTS, partition_day(context), "Agent rows")
