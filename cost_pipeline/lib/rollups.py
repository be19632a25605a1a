"""Rollups of a UTC day's priced calls: workflow runs, end users and agents; and the agents'
share of each tenant's monthly unit economics.

Workflow runs
-------------
A call's parent is the call of the same tenant and the same UTC day whose `event_id` is its
`parent_event_id`. The links form trees, resolved for the whole day at once by pointer jumping
(`resolve_call_trees`: O(n log depth) numpy, no recursion, no loop per call). Each tree whose
calls show any sign of a workflow (a `workflow_id`, a parent link, or a child) is one run;
a call with none of them is outside any run. Runs and calls outside runs add up to the day.

- **Midnight.** A run is built from one day's calls only, so every day adds up on its own and a
  day's rows never change because another day was (re)loaded. A run that continues past
  midnight is one row per day: the first under its real root; on later days each call whose
  parent is a call of the day before is the root of its own row, flagged `spans_days`.
- **Orphans.** A call whose parent is found neither on its day nor on the day before (or
  belongs to another tenant) is its own root, flagged `orphan`.
- **Cycles.** Parent links that loop are broken at the loop's earliest call (by `occurred_at`,
  then `event_id`), which becomes the root, flagged `cycle`.

`depth` counts levels (a root alone is 1); `duration_ms` runs from the first call's start
(`occurred_at`) to the last call's end (start + `latency_ms`).

Success and pricing
-------------------
A call succeeded when its `status` is one of `SUCCESS_STATUSES` (any case) or was not logged.
Unpriced calls (`lib.pricing.UNPRICED_STATUSES`) carry no cost: every rollup counts them in
`unpriced_calls` so that a total never passes them off as $0; per-dollar figures of agents
(`cost_per_successful_call_usd`, `tokens_per_usd`) are computed over priced calls only.

Unit economics per agent
------------------------
Revenue is earned by the tenant (`tenant_unit_economics`: tier price + overage, per local
month); an agent's share of it is its share of the tenant's calls in the month, so that an
agent whose calls cost more than the tenant's average revenue per call shows a negative margin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import pandas as pd

from cost_pipeline.catalog import AGENT_COSTS, AGENT_UNIT_ECONOMICS, END_USER_COSTS, WORKFLOW_RUNS
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.periods import periods_overlapping_day, tenant_timezone
from cost_pipeline.lib.pricing import UNPRICED_STATUSES

SUCCESS_STATUSES = ("ok", "success", "succeeded", "completed")

RUN_COLUMNS = [
    "event_id",
    "occurred_at",
    "tenant_id",
    "user_id",
    "agent_id",
    "workflow_id",
    "parent_event_id",
    "latency_ms",
    "status",
    "cost_usd",
    "pricing_status",
    "input_tokens",
    "output_tokens",
]
USER_COLUMNS = [
    "tenant_id",
    "user_id",
    "cost_usd",
    "pricing_status",
    "input_tokens",
    "output_tokens",
]
AGENT_COLUMNS = [
    "tenant_id",
    "agent_id",
    "latency_ms",
    "status",
    "cost_usd",
    "pricing_status",
    "input_tokens",
    "cache_read_tokens",
    "output_tokens",
]
AGENT_USAGE_COLUMNS = ["tenant_id", "period", "agent_id", "calls", "unpriced_calls", "cost_usd"]


def succeeded(status: pd.Series) -> np.ndarray:
    """Whether each call succeeded: a status in `SUCCESS_STATUSES` (any case), or none."""
    text = status.astype("object")
    return (text.isna() | text.str.lower().isin(SUCCESS_STATUSES)).to_numpy(bool)


def unpriced(pricing_status: pd.Series) -> np.ndarray:
    """Whether each call has no cost (see `lib.pricing.UNPRICED_STATUSES`)."""
    return pricing_status.isin(UNPRICED_STATUSES).to_numpy(bool)


# -- call trees -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallTrees:
    """The trees of a day's calls, by position: each call's root, its level below the root (0
    at a root) and whether it is a root chosen to break a loop of parent links."""

    root: np.ndarray
    level: np.ndarray
    loop_broken: np.ndarray


def resolve_call_trees(parent: np.ndarray) -> CallTrees:
    """Resolve parent positions (-1: none) into roots and levels, breaking loops.

    Pointer jumping: each round every call looks at its ancestor's ancestor, so a chain of any
    length resolves in ~log2(length) vectorized rounds. Rounds are capped at log2(n) + 2: past
    that, a call whose ancestor is not a root hangs on a loop, which is broken at the loop's
    smallest position (tracked along the way) and the rounds run again.
    """
    parent = np.asarray(parent, dtype=np.int64).copy()
    positions = np.arange(len(parent))
    loop_broken = parent == positions
    parent[loop_broken] = -1
    ancestor, level, lowest = _jump(parent)
    looping = parent[ancestor] >= 0
    if looping.any():
        # After the rounds, the ancestor of a looping call is on the loop and `lowest` of it
        # has seen the whole loop: the same position for every call of that loop.
        breaks = np.unique(lowest[ancestor[looping]])
        parent[breaks] = -1
        loop_broken[breaks] = True
        ancestor, level, _ = _jump(parent)
    return CallTrees(root=ancestor, level=level, loop_broken=loop_broken)


def _jump(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(parent)
    positions = np.arange(n)
    linked = parent >= 0
    ancestor = np.where(linked, parent, positions)
    level = linked.astype(np.int64)
    lowest = np.minimum(positions, ancestor)
    for _ in range(int(np.ceil(np.log2(n + 1))) + 2):
        further = ancestor[ancestor]
        if np.array_equal(further, ancestor):
            break
        level = level + level[ancestor]
        lowest = np.minimum(lowest, lowest[ancestor])
        ancestor = further
    return ancestor, level, lowest


def _parent_positions(event: np.ndarray, parent_id: np.ndarray, tenant: np.ndarray) -> np.ndarray:
    """Position of each call's parent among the calls (same tenant), -1 when not among them."""
    index = pd.Index(event)
    if not index.is_unique:
        # The store keeps one call per (day, event_id); should a duplicate appear, the first
        # one is the parent.
        first = np.flatnonzero(~index.duplicated())
        found = pd.Index(event[first]).get_indexer(parent_id)
        position = np.where(found >= 0, first[np.maximum(found, 0)], -1)
    else:
        position = index.get_indexer(parent_id)
    same_tenant = tenant[np.maximum(position, 0)] == tenant
    return np.where((position >= 0) & same_tenant, position, -1)


def _strings(series: pd.Series) -> np.ndarray:
    return series.astype(object).to_numpy(object)


def missing_parents(calls: pd.DataFrame) -> pd.DataFrame:
    """(tenant_id, event_id) of every parent the day's calls name but do not contain: what to
    look for on the day before (see `workflow_runs`)."""
    tenant, parent_id = _strings(calls["tenant_id"]), _strings(calls["parent_event_id"])
    absent = pd.notna(parent_id) & (
        _parent_positions(_strings(calls["event_id"]), parent_id, tenant) < 0
    )
    out = pd.DataFrame({"tenant_id": tenant[absent], "event_id": parent_id[absent]})
    return out.drop_duplicates(ignore_index=True)


def _utc_ns(series: pd.Series) -> np.ndarray:
    """UTC instants as int64 nanoseconds."""
    naive = pd.to_datetime(series, utc=True).dt.tz_localize(None)
    return naive.to_numpy("datetime64[ns]").view(np.int64)


def _time_order(start: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Positions of the calls by start, then event_id: the event ids are compared only among
    calls that start at the same instant (sorting every id would cost more than the rest)."""
    order = np.argsort(start, kind="stable")
    same = start[order][1:] == start[order][:-1]
    if same.any():
        tied = np.zeros(len(order), dtype=bool)
        tied[1:] |= same
        tied[:-1] |= same
        idx = order[tied]
        by = pd.DataFrame({"start": start[idx], "event": event[idx]})
        order[tied] = idx[by.sort_values(["start", "event"], kind="stable").index.to_numpy()]
    return order


@dataclass(frozen=True)
class WorkflowRuns:
    """A day's `workflow_runs` rows and what is left outside any run."""

    runs: pd.DataFrame
    outside_calls: int
    outside_cost_usd: float
    outside_unpriced_calls: int


def workflow_runs(
    calls: pd.DataFrame, day: date, *, earlier_parents: pd.DataFrame | None = None
) -> WorkflowRuns:
    """The workflow runs of one UTC day's calls (columns `RUN_COLUMNS`).

    `earlier_parents`: the (tenant_id, event_id) of `missing_parents(calls)` found on the day
    before; a call whose parent is there starts a `spans_days` row, any other call with a
    missing parent is an `orphan`.
    """
    start, event = _utc_ns(calls["occurred_at"]), _strings(calls["event_id"])
    order = _time_order(start, event)
    start, event, tenant = start[order], event[order], _strings(calls["tenant_id"])[order]
    parent_id, workflow = (
        _strings(calls["parent_event_id"])[order],
        _strings(calls["workflow_id"])[order],
    )
    n = len(order)
    has_workflow = pd.notna(workflow)

    parent = _parent_positions(event, parent_id, tenant)
    named = pd.notna(parent_id)
    missing = named & (parent < 0)
    earlier = np.zeros(n, dtype=bool)
    if earlier_parents is not None and len(earlier_parents) and missing.any():
        seen = pd.MultiIndex.from_frame(earlier_parents[["tenant_id", "event_id"]].astype(object))
        earlier[missing] = pd.MultiIndex.from_arrays([tenant[missing], parent_id[missing]]).isin(
            seen
        )
    trees = resolve_call_trees(parent)
    root = trees.root
    has_child = np.bincount(parent[parent >= 0], minlength=n) > 0
    flowing = has_workflow | named | has_child
    in_run = (np.bincount(root, weights=flowing.astype(float), minlength=n) > 0)[root]

    no_cost = unpriced(calls["pricing_status"])[order]
    cost = calls["cost_usd"].to_numpy(float)[order]
    latency = pd.to_numeric(calls["latency_ms"]).fillna(0).clip(lower=0).to_numpy(np.int64)
    members = pd.DataFrame(
        {
            "root": root,
            "cost_usd": cost,
            "unpriced_calls": no_cost.astype(np.int64),
            "failed_calls": (~succeeded(calls["status"])[order]).astype(np.int64),
            "level": trees.level,
            "start": start,
            "end": start + latency[order] * 1_000_000,
            "input_tokens": calls["input_tokens"].to_numpy(np.int64)[order],
            "output_tokens": calls["output_tokens"].to_numpy(np.int64)[order],
            # Positions are in time order: the smallest one with a workflow id is the first.
            "workflow_at": np.where(has_workflow, np.arange(n), n),
        }
    )[in_run]
    grouped = members.groupby("root", sort=True).agg(
        calls=("cost_usd", "size"),
        cost_usd=("cost_usd", "sum"),
        unpriced_calls=("unpriced_calls", "sum"),
        failed_calls=("failed_calls", "sum"),
        level=("level", "max"),
        start=("start", "min"),
        end=("end", "max"),
        input_tokens=("input_tokens", "sum"),
        output_tokens=("output_tokens", "sum"),
        workflow_at=("workflow_at", "min"),
    )
    roots = grouped.index.to_numpy(np.int64)
    first_workflow = np.append(workflow, None)[grouped["workflow_at"].to_numpy()]
    grouped = grouped.reset_index(drop=True)
    runs = pd.DataFrame(
        {
            "day": day,
            "tenant_id": tenant[roots],
            "workflow_id": np.where(has_workflow[roots], workflow[roots], first_workflow),
            "root_event_id": event[roots],
            "agent_id": _strings(calls["agent_id"])[order][roots],
            "user_id": _strings(calls["user_id"])[order][roots],
            "calls": grouped["calls"],
            "depth": grouped["level"] + 1,
            "started_at": pd.to_datetime(grouped["start"], utc=True),
            "ended_at": pd.to_datetime(grouped["end"], utc=True),
            "duration_ms": (grouped["end"] - grouped["start"]) // 1_000_000,
            "cost_usd": grouped["cost_usd"],
            "unpriced_calls": grouped["unpriced_calls"],
            "failed_calls": grouped["failed_calls"],
            "success": grouped["failed_calls"] == 0,
            "input_tokens": grouped["input_tokens"],
            "output_tokens": grouped["output_tokens"],
            "orphan": missing[roots] & ~earlier[roots],
            "cycle": trees.loop_broken[roots],
            "spans_days": earlier[roots],
        }
    )
    outside = ~in_run
    return WorkflowRuns(
        runs=WORKFLOW_RUNS.conform(runs),
        outside_calls=int(outside.sum()),
        outside_cost_usd=round(float(cost[outside].sum()), 9),
        outside_unpriced_calls=int(no_cost[outside].sum()),
    )


# -- end users and agents ---------------------------------------------------------------------


def end_user_costs(calls: pd.DataFrame, day: date) -> pd.DataFrame:
    """`end_user_costs` rows of one UTC day's calls (columns `USER_COLUMNS`)."""
    if calls.empty:
        return END_USER_COSTS.empty_frame()
    frame = pd.DataFrame(
        {
            "tenant_id": calls["tenant_id"].astype(object),
            "user_id": calls["user_id"].astype(object),
            "cost_usd": calls["cost_usd"].astype(float),
            "unpriced_calls": unpriced(calls["pricing_status"]).astype(np.int64),
            "input_tokens": calls["input_tokens"].astype(np.int64),
            "output_tokens": calls["output_tokens"].astype(np.int64),
        }
    )
    out = (
        frame.groupby(["tenant_id", "user_id"], dropna=False, sort=True)
        .agg(
            calls=("cost_usd", "size"),
            unpriced_calls=("unpriced_calls", "sum"),
            cost_usd=("cost_usd", "sum"),
            input_tokens=("input_tokens", "sum"),
            output_tokens=("output_tokens", "sum"),
        )
        .reset_index()
    )
    return END_USER_COSTS.conform(out.assign(day=day))


def agent_costs(calls: pd.DataFrame, day: date) -> pd.DataFrame:
    """`agent_costs` rows of one UTC day's calls (columns `AGENT_COLUMNS`)."""
    if calls.empty:
        return AGENT_COSTS.empty_frame()
    no_cost = unpriced(calls["pricing_status"])
    ok = succeeded(calls["status"])
    tokens = calls["input_tokens"].to_numpy(np.int64) + calls["output_tokens"].to_numpy(np.int64)
    frame = pd.DataFrame(
        {
            "tenant_id": calls["tenant_id"].astype(object),
            "agent_id": calls["agent_id"].astype(object),
            "cost_usd": calls["cost_usd"].astype(float),
            "successful_calls": ok.astype(np.int64),
            "successful_priced": (ok & ~no_cost).astype(np.int64),
            "unpriced_calls": no_cost.astype(np.int64),
            "priced_tokens": np.where(no_cost, 0, tokens),
            "input_tokens": calls["input_tokens"].astype(np.int64),
            "cache_read_tokens": calls["cache_read_tokens"].astype(np.int64),
            "output_tokens": calls["output_tokens"].astype(np.int64),
            "latency_ms": pd.to_numeric(calls["latency_ms"]).astype(float),
        }
    )
    groups = frame.groupby(["tenant_id", "agent_id"], dropna=False, sort=True)
    out = groups.agg(
        calls=("cost_usd", "size"),
        successful_calls=("successful_calls", "sum"),
        successful_priced=("successful_priced", "sum"),
        unpriced_calls=("unpriced_calls", "sum"),
        cost_usd=("cost_usd", "sum"),
        priced_tokens=("priced_tokens", "sum"),
        input_tokens=("input_tokens", "sum"),
        cache_read_tokens=("cache_read_tokens", "sum"),
        output_tokens=("output_tokens", "sum"),
    )
    latency = groups["latency_ms"].quantile([0.5, 0.95]).unstack()
    out["latency_p50_ms"] = latency[0.5]
    out["latency_p95_ms"] = latency[0.95]
    out = out.reset_index()
    cost = out["cost_usd"]
    out["cost_per_successful_call_usd"] = cost / out["successful_priced"].where(
        out["successful_priced"] > 0
    )
    out["tokens_per_usd"] = out["priced_tokens"] / cost.where(cost > 0)
    out["cache_hit_share"] = out["cache_read_tokens"] / out["input_tokens"].where(
        out["input_tokens"] > 0
    )
    return AGENT_COSTS.conform(out.assign(day=day))


# -- unit economics per agent -----------------------------------------------------------------


def period_windows(
    config: CostConfig, tenant_ids: Iterable[str], days: Iterable[date]
) -> dict[tuple[str, str], tuple[datetime, datetime]]:
    """(tenant, period) -> the period's UTC [start, end), for every tenant-local month the
    `days` touch (tenants not in the configuration count in UTC months)."""
    days = list(days)
    out: dict[tuple[str, str], tuple[datetime, datetime]] = {}
    for tenant_id in sorted(set(tenant_ids)):
        zone = tenant_timezone(config, tenant_id)
        for day in days:
            for period in periods_overlapping_day(day, zone):
                out[(tenant_id, period.key)] = (period.start, period.end)
    return out


def agent_unit_economics(
    usage: pd.DataFrame,
    tenant_revenue: Mapping[tuple[str, str], float],
    *,
    computed_at: datetime,
) -> pd.DataFrame:
    """`agent_unit_economics` rows from each agent's usage in a period (`AGENT_USAGE_COLUMNS`)
    and each (tenant, period)'s revenue from `tenant_unit_economics` (missing: no revenue)."""
    if usage.empty:
        return AGENT_UNIT_ECONOMICS.empty_frame()
    out = usage[AGENT_USAGE_COLUMNS].reset_index(drop=True)
    tenant_calls = out.groupby(["tenant_id", "period"])["calls"].transform("sum")
    out["call_share"] = (out["calls"] / tenant_calls.where(tenant_calls > 0)).fillna(0.0)
    keys = list(zip(out["tenant_id"], out["period"], strict=True))
    out["tenant_revenue_usd"] = pd.Series(
        [tenant_revenue.get(k) for k in keys], index=out.index, dtype="float64"
    )
    out["revenue_usd"] = out["tenant_revenue_usd"] * out["call_share"]
    out["gross_margin_usd"] = out["revenue_usd"] - out["cost_usd"]
    revenue = out["revenue_usd"]
    out["margin_pct"] = (out["gross_margin_usd"] / revenue.where(revenue > 0) * 100).round(2)
    out["computed_at"] = computed_at
    out = out.sort_values(["tenant_id", "period", "agent_id"], na_position="first")
    return AGENT_UNIT_ECONOMICS.conform(out)


def top_by_cost(rows: pd.DataFrame, columns: list[str], n: int = 10) -> pd.DataFrame:
    """The `n` most expensive rows, `columns` shown: what a person reads first."""
    return rows.nlargest(n, "cost_usd")[columns]
