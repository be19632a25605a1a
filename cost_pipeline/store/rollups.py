"""The rollups' reads and writes: a day's calls, parents on the day before, the day's totals
(for the checks), agents' usage per tenant-local month and the tenants' revenue.

What the rollups mean is told in `lib.rollups`; their tables are in `catalog.rollups`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import PRICED_INTERACTIONS, TENANT_UNIT_ECONOMICS
from cost_pipeline.lib.pricing import UNPRICED_STATUSES
from cost_pipeline.lib.rollups import AGENT_USAGE_COLUMNS
from cost_pipeline.lib.schemas import TableSchema
from cost_pipeline.store.warehouse import Warehouse

# Bound parameters per IN list: well under SQLite's limit of 32,766 variables.
IN_CHUNK = 5_000

_UNPRICED = "(" + ", ".join(f"'{s}'" for s in UNPRICED_STATUSES) + ")"


def _totals_sql(alias: str = "") -> str:
    """Calls, cost and unpriced calls of the selected calls (of table `alias`, when given)."""
    at = f"{alias}." if alias else ""
    return (
        f"COUNT(*) AS calls, COALESCE(SUM({at}cost_usd), 0) AS cost_usd, "
        f"COALESCE(SUM(CASE WHEN {at}pricing_status IN {_UNPRICED} THEN 1 ELSE 0 END), 0) "
        "AS unpriced_calls"
    )


# A call outside any workflow run: no workflow id, no parent, and no child on its day (a call of
# the same tenant naming it as parent). A join against the day's distinct parents, not NOT
# EXISTS: SQLite runs a correlated subquery once per call (quadratic), while it indexes a
# joined subquery; Postgres makes either a hash anti-join.
OUTSIDE_RUNS_SQL = f"""
SELECT {_totals_sql("p")}
FROM priced_interactions p
LEFT JOIN (
  SELECT DISTINCT tenant_id, parent_event_id FROM priced_interactions
  WHERE day = :day AND parent_event_id IS NOT NULL
) c ON c.tenant_id = p.tenant_id AND c.parent_event_id = p.event_id
WHERE p.day = :day AND p.workflow_id IS NULL AND p.parent_event_id IS NULL
  AND c.parent_event_id IS NULL
"""


def day_calls(wh: Warehouse, day: date, columns: Sequence[str]) -> pd.DataFrame:
    """The `columns` of every priced call of UTC day `day` (the database's bulk path out)."""
    return wh.read(PRICED_INTERACTIONS, days=[day], columns=list(columns))


def calls_on_day(wh: Warehouse, day: date, keys: pd.DataFrame) -> pd.DataFrame:
    """Which of the (tenant_id, event_id) `keys` are calls of UTC day `day`."""
    found = []
    ids = sorted(set(keys["event_id"]))
    for start in range(0, len(ids), IN_CHUNK):
        found.append(
            wh.read(
                PRICED_INTERACTIONS,
                days=[day],
                where={"event_id": ids[start : start + IN_CHUNK]},
                columns=["tenant_id", "event_id"],
            )
        )
    if not found:
        return pd.DataFrame({"tenant_id": [], "event_id": []}, dtype=object)
    hits = pd.concat(found, ignore_index=True)
    return hits.merge(keys[["tenant_id", "event_id"]].drop_duplicates(), how="inner")


def _totals(frame: pd.DataFrame) -> dict[str, float | int]:
    row = frame.iloc[0]
    return {
        "calls": int(row["calls"] or 0),
        "cost_usd": round(float(row["cost_usd"] or 0), 9),
        "unpriced_calls": int(row["unpriced_calls"] or 0),
    }


def day_totals(wh: Warehouse, day: date) -> dict[str, float | int]:
    """Calls, cost and unpriced calls of the day in `priced_interactions`."""
    return _totals(
        wh.query(f"SELECT {_totals_sql()} FROM priced_interactions WHERE day = :day", {"day": day})
    )


def outside_runs_totals(wh: Warehouse, day: date) -> dict[str, float | int]:
    """Calls, cost and unpriced calls of the day that belong to no workflow run."""
    return _totals(wh.query(OUTSIDE_RUNS_SQL, {"day": day}))


def rollup_totals(wh: Warehouse, schema: TableSchema, day: date) -> dict[str, float | int]:
    """The sums of `calls`, `cost_usd` and `unpriced_calls` of a rollup table's day."""
    return _totals(
        wh.query(
            "SELECT COALESCE(SUM(calls), 0) AS calls, COALESCE(SUM(cost_usd), 0) AS cost_usd, "
            f"COALESCE(SUM(unpriced_calls), 0) AS unpriced_calls FROM {schema.name} "
            "WHERE day = :day",
            {"day": day},
        )
    )


def tenants_on_days(wh: Warehouse, days: Sequence[date]) -> list[str]:
    """Every tenant with a priced call on one of `days`."""
    table = wh.table(PRICED_INTERACTIONS)
    stmt = sa.select(table.c.tenant_id).distinct().where(table.c.day.in_(list(days)))
    with wh.connect() as conn:
        return sorted(conn.execute(stmt).scalars())


def agent_usage_in_windows(
    wh: Warehouse, windows: Mapping[tuple[str, str], tuple[datetime, datetime]]
) -> pd.DataFrame:
    """Per (tenant, period) key and agent: calls, unpriced calls and cost of the tenant's calls
    with start <= occurred_at < end (columns `AGENT_USAGE_COLUMNS`). One grouped query per
    distinct window: tenants of one time zone share theirs."""
    table = wh.table(PRICED_INTERACTIONS)
    grouped: dict[tuple[datetime, datetime], dict[str, str]] = {}
    for (tenant, period), window in windows.items():
        grouped.setdefault(window, {})[tenant] = period
    no_cost = sa.case((table.c.pricing_status.in_(UNPRICED_STATUSES), 1), else_=0)
    rows = []
    with wh.connect() as conn:
        for (start, end), periods in grouped.items():
            stmt = (
                sa.select(
                    table.c.tenant_id,
                    table.c.agent_id,
                    sa.func.count().label("calls"),
                    sa.func.sum(no_cost).label("unpriced_calls"),
                    sa.func.coalesce(sa.func.sum(table.c.cost_usd), 0).label("cost_usd"),
                )
                .where(
                    table.c.day >= start.date(),
                    table.c.day <= (end - timedelta(microseconds=1)).date(),
                    table.c.occurred_at >= start,
                    table.c.occurred_at < end,
                    table.c.tenant_id.in_(list(periods)),
                )
                .group_by(table.c.tenant_id, table.c.agent_id)
            )
            for tenant, agent, calls, unpriced_calls, cost in conn.execute(stmt):
                rows.append(
                    {
                        "tenant_id": tenant,
                        "period": periods[tenant],
                        "agent_id": agent,
                        "calls": int(calls),
                        "unpriced_calls": int(unpriced_calls or 0),
                        "cost_usd": float(cost or 0),
                    }
                )
    return pd.DataFrame(rows, columns=AGENT_USAGE_COLUMNS)


def tenant_revenue(wh: Warehouse, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """(tenant, period) -> `revenue_usd` of `tenant_unit_economics`, for the keys it has."""
    if not keys:
        return {}
    stored = wh.read(
        TENANT_UNIT_ECONOMICS,
        where={"period": sorted({p for _, p in keys}), "tenant_id": sorted({t for t, _ in keys})},
        columns=["tenant_id", "period", "revenue_usd"],
    )
    wanted = set(keys)
    return {
        (t, p): float(r)
        for t, p, r in zip(
            stored["tenant_id"], stored["period"], stored["revenue_usd"], strict=True
        )
        if (t, p) in wanted
    }


def replace_periods(
    wh: Warehouse, schema: TableSchema, keys: Sequence[tuple[str, str]], frame: pd.DataFrame
) -> int:
    """Replace the rows of each (tenant, period) key with `frame`'s, one period at a time (a
    period x tenant cross product would delete periods the run did not recompute)."""
    written = 0
    tenants_of: dict[str, list[str]] = {}
    for tenant, period in keys:
        tenants_of.setdefault(period, []).append(tenant)
    for period, tenants in sorted(tenants_of.items()):
        rows = frame[(frame["period"] == period) & frame["tenant_id"].isin(tenants)]
        written += wh.replace_where(schema, {"period": [period], "tenant_id": tenants}, rows)
    return written
