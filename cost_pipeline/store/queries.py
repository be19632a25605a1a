"""Named queries: every question the pipeline asks the warehouse in SQL, in one place.

Each function takes the `Warehouse` and plain values and returns typed rows (a DataFrame or
numbers); none of them writes. Aggregations run in the database so that a day of ten million
calls never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import PRICED_INTERACTIONS
from cost_pipeline.lib.pricing import PRICED, PRICING_STATUSES, UNPRICED_STATUSES
from cost_pipeline.store.warehouse import Warehouse

COMPANY = "__company__"

_UNPRICED = "(" + ", ".join(f"'{s}'" for s in UNPRICED_STATUSES) + ")"
# Aggregated in the database: one pass over the day, memory bounded by the number of groups;
# the calls counted per pricing status (`lib.pricing`), the ones without a cost together too.
LLM_SUMMARY_SQL = f"""
SELECT day, tenant_id, provider, model AS model_or_service, agent_id,
       COUNT(*) AS requests,
       SUM(input_tokens) AS input_tokens,
       SUM(output_tokens) AS output_tokens,
       SUM(cost_usd) AS cost_usd,
       SUM(CASE WHEN pricing_status IN {_UNPRICED} THEN 1 ELSE 0 END) AS unpriced_requests,
       {
    ", ".join(
        f"SUM(CASE WHEN pricing_status = '{s}' THEN 1 ELSE 0 END) AS {s}_requests"
        for s in PRICING_STATUSES
        if s != PRICED
    )
}
FROM priced_interactions
WHERE day = :day
GROUP BY day, tenant_id, provider, model, agent_id
"""


def llm_day_groups(wh: Warehouse, day: date) -> pd.DataFrame:
    """The day's calls grouped by tenant, provider, model and agent (requests, tokens, cost)."""
    return wh.query(LLM_SUMMARY_SQL, {"day": day})


def price_versions(wh: Warehouse, day: date) -> pd.DataFrame:
    """Calls of a day per price version and pricing status, with their cost."""
    return wh.query(
        "SELECT price_version, pricing_status, COUNT(*) AS calls, "
        "COALESCE(SUM(cost_usd), 0) AS cost_usd FROM priced_interactions WHERE day = :day "
        "GROUP BY price_version, pricing_status",
        {"day": day},
    )


def cost_by_tenant(wh: Warehouse, day: date, n: int = 10) -> pd.DataFrame:
    """The day's priced cost of the `n` most expensive tenants."""
    return wh.query(
        "SELECT tenant_id, SUM(cost_usd) AS cost_usd FROM priced_interactions WHERE day = :day "
        "GROUP BY tenant_id ORDER BY cost_usd DESC LIMIT :n",
        {"day": day, "n": n},
    )


def unpriced_models(wh: Warehouse, day: date) -> pd.DataFrame:
    """Provider, model and status of the day's calls that are not priced, most calls first."""
    return wh.query(
        "SELECT provider, model, pricing_status, COUNT(*) AS calls, "
        "SUM(input_tokens + output_tokens) AS tokens FROM priced_interactions "
        f"WHERE day = :day AND pricing_status IN {_UNPRICED} "
        "GROUP BY provider, model, pricing_status ORDER BY calls DESC",
        {"day": day},
    )


def duplicate_event_ids(wh: Warehouse, day: date) -> int:
    """How many stored calls of a day repeat an event id of the same day (should be 0)."""
    out = wh.query(
        "SELECT COUNT(*) - COUNT(DISTINCT event_id) AS n FROM priced_interactions WHERE day = :day",
        {"day": day},
    )
    return int(out["n"].iloc[0] or 0)


def priced_and_summary_totals(wh: Warehouse, day: date) -> dict[str, float]:
    """Cost and calls of a day in priced_interactions and in the summary's `llm` rows."""
    priced = wh.query(
        "SELECT COALESCE(SUM(cost_usd), 0) AS c, COUNT(*) AS n FROM priced_interactions "
        "WHERE day = :day",
        {"day": day},
    ).iloc[0]
    summary = wh.query(
        "SELECT COALESCE(SUM(cost_usd), 0) AS c, COALESCE(SUM(requests), 0) AS n "
        "FROM daily_cost_summary WHERE day = :day AND cost_category = 'llm'",
        {"day": day},
    ).iloc[0]
    return {
        "priced_cost_usd": float(priced["c"]),
        "priced_calls": int(priced["n"]),
        "summary_llm_cost_usd": float(summary["c"]),
        "summary_requests": int(summary["n"]),
    }


def cloud_billing_periods(wh: Warehouse) -> pd.DataFrame:
    """Rows and effective cost per provider and billing period of the loaded FOCUS data."""
    return wh.query(
        "SELECT provider, billing_period_start, COUNT(*) AS rows, SUM(effective_cost) AS "
        "effective_cost_usd FROM cloud_costs GROUP BY provider, billing_period_start "
        "ORDER BY billing_period_start, provider"
    )


def newest_cloud_days(wh: Warehouse) -> dict[str, date]:
    """The newest day with FOCUS rows, per provider."""
    rows = wh.query("SELECT provider, MAX(day) AS newest FROM cloud_costs GROUP BY provider")
    return {
        str(p): pd.Timestamp(d).date()
        for p, d in zip(rows["provider"], rows["newest"], strict=True)
        if d is not None
    }


def latest_enforcement(wh: Warehouse, tenant_id: str) -> pd.DataFrame:
    """The newest `tenant_enforcement` row of a tenant (allowed, period_end), or none."""
    return wh.query(
        "SELECT allowed, period_end FROM tenant_enforcement WHERE tenant_id = :t "
        "ORDER BY day DESC LIMIT 1",
        {"t": tenant_id},
    )


# Where each source's accepted records of a day are stored (quarantine `source` -> table).
SOURCE_TABLES = {
    "llm_interactions": "priced_interactions",
    "cloud_costs": "cloud_costs",
    "k8s_allocations": "k8s_allocations",
}


def quarantine_by_source(wh: Warehouse, day: date) -> pd.DataFrame:
    """Per source: records of `day` accepted and quarantined. A quarantined record whose day
    could not be read counts for the day it was detected on."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = []
    for source, table in SOURCE_TABLES.items():
        counts = wh.query(
            f"SELECT (SELECT COUNT(*) FROM {table} WHERE day = :day) AS accepted, "
            "(SELECT COUNT(*) FROM quarantine WHERE source = :source AND (day = :day OR "
            "(day IS NULL AND detected_at >= :start AND detected_at < :end))) AS quarantined",
            {"day": day, "source": source, "start": start, "end": start + timedelta(days=1)},
        ).iloc[0]
        rows.append(
            {
                "source": source,
                "accepted": int(counts["accepted"]),
                "quarantined": int(counts["quarantined"]),
            }
        )
    return pd.DataFrame(rows)


def cost_by_tenant_and_day(wh: Warehouse, first: date, last: date) -> pd.DataFrame:
    """LLM cost per tenant (null: unattributed calls) and UTC day, over days `first`..`last`."""
    return wh.query(
        "SELECT tenant_id, day, SUM(cost_usd) AS cost_usd FROM priced_interactions "
        "WHERE day >= :first AND day <= :last GROUP BY tenant_id, day",
        {"first": first, "last": last},
    )


def sum_in_windows(
    wh: Warehouse,
    bounds: Mapping[str, tuple[datetime, datetime]],
    measure: Literal["cost_usd", "tokens"],
) -> dict[str, float]:
    """Per tenant, the sum of `measure` over its priced calls with start <= occurred_at < end.

    `tokens` is input + output tokens. One grouped query per distinct window (tenants of one
    time zone share theirs), so a month of interactions never has to fit in memory. The
    pseudo-tenant `COMPANY` sums every tenant's calls in its window.
    """
    table = wh.table(PRICED_INTERACTIONS)
    value = (
        table.c.cost_usd if measure == "cost_usd" else table.c.input_tokens + table.c.output_tokens
    )
    windows: dict[tuple[datetime, datetime], list[str]] = {}
    for tenant, window in bounds.items():
        windows.setdefault(window, []).append(tenant)
    sums: dict[str, float] = {}
    with wh.connect() as conn:
        for (start, end), tenants in windows.items():
            if end <= start:
                continue
            inside = sa.and_(
                table.c.day >= start.date(),
                table.c.day <= (end - timedelta(microseconds=1)).date(),
                table.c.occurred_at >= start,
                table.c.occurred_at < end,
            )
            total = sa.func.sum(value)
            own = [t for t in tenants if t != COMPANY]
            if own:
                stmt = sa.select(table.c.tenant_id, total).where(inside, table.c.tenant_id.in_(own))
                sums.update(
                    (t, float(v or 0)) for t, v in conn.execute(stmt.group_by(table.c.tenant_id))
                )
            if COMPANY in tenants:
                sums[COMPANY] = float(
                    conn.execute(sa.select(total).where(inside)).scalar_one() or 0
                )
    return sums


def unpriced_in_windows(
    wh: Warehouse, windows: Mapping[tuple[str, str], tuple[datetime, datetime]]
) -> dict[tuple[str, str], int]:
    """Per (tenant, period) key: how many of the tenant's calls with start <= occurred_at < end
    are not `priced` (unknown model, invalid usage). Keys without such calls are left out."""
    table = wh.table(PRICED_INTERACTIONS)
    grouped: dict[tuple[datetime, datetime], dict[str, tuple[str, str]]] = {}
    for key, window in windows.items():
        grouped.setdefault(window, {})[key[0]] = key
    counts: dict[tuple[str, str], int] = {}
    with wh.connect() as conn:
        for (start, end), keys in grouped.items():
            if end <= start:
                continue
            stmt = (
                sa.select(table.c.tenant_id, sa.func.count())
                .where(
                    table.c.day >= start.date(),
                    table.c.day <= (end - timedelta(microseconds=1)).date(),
                    table.c.occurred_at >= start,
                    table.c.occurred_at < end,
                    table.c.tenant_id.in_(list(keys)),
                    table.c.pricing_status.in_(UNPRICED_STATUSES),
                )
                .group_by(table.c.tenant_id)
            )
            counts.update((keys[t], int(n)) for t, n in conn.execute(stmt) if n)
    return counts


def report(wh: Warehouse, days: Sequence[date]) -> dict[str, pd.DataFrame]:
    """What `cost-pipeline run/demo` print: totals, tenants, quarantine, outbox, ledger, margins."""
    params = {"start": min(days), "end": max(days)}
    return {
        "totals": wh.query(
            "SELECT cost_category, SUM(cost_usd) AS cost_usd, SUM(requests) AS requests "
            "FROM daily_cost_summary WHERE day BETWEEN :start AND :end "
            "GROUP BY cost_category ORDER BY cost_usd DESC",
            params,
        ),
        "by_tenant": wh.query(
            "SELECT tenant_id, cost_category, SUM(cost_usd) AS cost_usd FROM daily_cost_summary "
            "WHERE day BETWEEN :start AND :end GROUP BY tenant_id, cost_category",
            params,
        ),
        "quarantine": wh.query(
            "SELECT source, reason, COUNT(*) AS records FROM quarantine "
            "GROUP BY source, reason ORDER BY records DESC"
        ),
        "outbox": wh.query(
            "SELECT kind, status, COUNT(*) AS alerts FROM alert_outbox GROUP BY kind, status "
            "ORDER BY kind, status"
        ),
        # Each alert and bill, so that the printed summary explains them one by one.
        "alerts": wh.query(
            "SELECT kind, tenant_id, period, day, status, text FROM alert_outbox "
            "ORDER BY kind, day, tenant_id"
        ),
        "bills": wh.query(
            "SELECT tenant_id, period, status, SUM(value_cents) / 100.0 AS usd "
            "FROM billing_ledger WHERE kind = 'meter_event' "
            "GROUP BY tenant_id, period, status ORDER BY period, usd DESC"
        ),
        "blocked": wh.query(
            "SELECT tenant_id, period, MIN(day) AS since_day, MAX(day) AS until_day, "
            "MAX(reason) AS reason FROM tenant_enforcement WHERE NOT allowed "
            "AND day BETWEEN :start AND :end GROUP BY tenant_id, period ORDER BY period, tenant_id",
            params,
        ),
        "meter_events": wh.query(
            "SELECT period, mode, status, COUNT(*) AS events, SUM(value_cents) / 100.0 AS usd "
            "FROM billing_ledger WHERE kind = 'meter_event' "
            "GROUP BY period, mode, status ORDER BY period"
        ),
        "margins": wh.query(
            "SELECT tenant_id, period, tier, revenue_usd, cost_usd, gross_margin_usd, margin_pct "
            "FROM tenant_unit_economics WHERE period = (SELECT MAX(period) FROM "
            "tenant_unit_economics WHERE period < (SELECT MAX(period) FROM tenant_unit_economics)) "
            "ORDER BY gross_margin_usd"
        ),
    }
