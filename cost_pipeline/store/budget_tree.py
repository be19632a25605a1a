"""Tenant spend in the budget hierarchy's period windows, read from the warehouse.

`evaluate_node_days` builds the `budget_node_status` rows of a range of UTC days from one read:
the LLM cost through `store.spend.LlmCost` (whole UTC days grouped, partial days exact), the
day-bucketed cloud, Kubernetes and unattributed cost from `daily_cost_summary` by local date,
as `lib.periods` counts a period's spend. The math is `lib.budget_tree`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.lib.budget_periods import Window
from cost_pipeline.lib.budget_tree import (
    Spend,
    build_tree,
    end_of_day,
    node_status,
    plan_day,
    to_nano,
    windows,
)
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.store.spend import OTHER_COLUMNS, LlmCost
from cost_pipeline.store.warehouse import Warehouse


def tenant_spend(
    warehouse: Warehouse, tenant_ids: Sequence[str], wanted: Collection[Window]
) -> dict[Window, dict[str, Spend]]:
    """Each tenant's spend (nano-USD, LLM and other) in each window, from one read of each."""
    out: dict[Window, dict[str, Spend]] = {w: {} for w in wanted}
    if not wanted or not tenant_ids:
        return out
    first = min(w.start.date() for w in wanted)
    last = max((w.end - timedelta(microseconds=1)).date() for w in wanted)
    llm = LlmCost(warehouse, first, max(first, last))
    days = sorted({w.first_day + timedelta(days=i) for w in wanted for i in range(_days(w))})
    summary = warehouse.read(DAILY_COST_SUMMARY, days=days, columns=OTHER_COLUMNS)
    other = summary[
        (summary["cost_category"] != "llm") & summary["tenant_id"].isin(list(tenant_ids))
    ]
    # Rows are nano-USD already (rounded to 9 decimals): as integers they sum exactly.
    nano = np.rint(other["cost_usd"].to_numpy(dtype="float64") * 1e9).astype("int64")
    by_day = other.assign(nano=nano).groupby(["tenant_id", "day"], as_index=False)["nano"].sum()
    for window in wanted:
        costs = llm.sums({t: (window.start, window.end) for t in tenant_ids})
        inside = by_day[(by_day["day"] >= window.first_day) & (by_day["day"] <= window.last_day)]
        others = inside.groupby("tenant_id")["nano"].sum()
        out[window] = {
            t: Spend(llm=to_nano(costs.get(t, 0.0)), other=int(others.get(t, 0)))
            for t in tenant_ids
        }
    return out


def _days(window: Window) -> int:
    return max(0, (window.last_day - window.first_day).days + 1)


def evaluate_node_days(
    warehouse: Warehouse,
    config: CostConfig,
    days: Sequence[date],
    *,
    history_start: date,
    as_of: datetime | None = None,
) -> dict[date, pd.DataFrame]:
    """`budget_node_status` rows of each UTC day, spend counted up to the end of the day (or
    `as_of` if earlier), rollover from periods that began on or after `history_start`."""
    tree = build_tree(config)
    plans = {}
    for day in days:
        cut = min(as_of, end_of_day(day)) if as_of is not None else end_of_day(day)
        plans[day] = (cut, plan_day(tree, day, history_start))
    wanted = {w for day, (cut, plan) in plans.items() for w in windows(plan, day, cut)}
    spend = tenant_spend(warehouse, [t.id for t in config.tenants], wanted)
    return {
        day: node_status(tree, plan, spend, day=day, as_of=cut)
        for day, (cut, plan) in plans.items()
    }
