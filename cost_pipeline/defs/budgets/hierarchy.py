"""`budget_node_status`: spend vs budget of the organization, its departments and its teams.

Each day's rows are every node's period(s) overlapping the UTC day, with the rollover from the
previous period (`lib.budget_tree`). The alertable facts go to the materialization's metadata
under the same key and in the same shape as `budget_status`'s, so the budget alert sensor can
read either; a node's id (`team:<id>`, `department:<id>`, `organization`) stands in the
`tenant_id` of a fact.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
from datetime import date

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import BUDGET_NODE_STATUS
from cost_pipeline.defs.budgets.assets import status_metadata
from cost_pipeline.defs.partitions import (
    PARTITIONS_START,
    SINGLE_RUN,
    daily_partitions,
    day_chunks,
    for_each_day,
    merge_days,
    partition_day,
    partition_days,
)
from cost_pipeline.lib.budget_tree import alert_facts, roll_up_mismatches
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.budget_tree import evaluate_node_days
from cost_pipeline.store.warehouse import Warehouse


@dg.asset(
    group_name="budgets",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=["daily_cost_summary", "priced_interactions"],
    description=(
        "Per UTC day, node of the budget hierarchy (organization, departments, teams, members "
        "of unpooled teams) and period overlapping the day: the spend of every tenant below, "
        "the budget plus the rollover of the previous period's unused budget, utilization, "
        "the highest threshold reached and status ok / warning / critical / exceeded."
    ),
)
def budget_node_status(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    config = cost_config.get()
    days = partition_days(context)
    results = []
    # A range is evaluated a chunk of days at a time, each chunk from one read.
    for chunk in day_chunks(days):
        evaluated = evaluate_node_days(wh, config, chunk, history_start=PARTITIONS_START)
        results.extend(_status_day(wh, day, status) for day, status in evaluated.items())
    return merge_days(days, results)


def _status_day(wh: Warehouse, day: date, status: pd.DataFrame) -> dg.MaterializeResult:
    rows = wh.replace_partition(BUDGET_NODE_STATUS, day, status)
    organization = status[status["node_kind"] == "organization"]
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "organization_spend_usd": round(float(organization["spend_usd"].max()), 6)
            if len(organization)
            else 0.0,
            **status_metadata(status, alert_facts(status), key="node_id", noun="nodes"),
        }
    )


@dg.asset_check(
    asset=budget_node_status,
    partitions_def=daily_partitions,
    description=(
        "Every node's spend is its own tenants' plus its children's exactly (in nano-USD), "
        "and its children's rows of the same period sum to that children's part."
    ),
)
@for_each_day
def children_sum_to_parents(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    day = partition_day(context)
    status = warehouse.get().read(BUDGET_NODE_STATUS, days=[day])
    problems = roll_up_mismatches(status)
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={
            "rows": len(status),
            "mismatches": len(problems),
            "examples": dg.MetadataValue.json(problems[:10]),
        },
    )
