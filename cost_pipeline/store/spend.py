"""Spend in tenant-local periods, read from the warehouse: the inputs of budgets and overage.

`period_spend` counts a tenant's whole cost in its local billing month (LLM calls by their exact
instant, day-bucketed cloud and Kubernetes cost by local calendar day); `overage_for_day` and
`evaluate_day` feed it to the pure planners in `lib.overage` and `lib.budgets`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta

import pandas as pd

from cost_pipeline.catalog import COST_FORECASTS, DAILY_COST_SUMMARY
from cost_pipeline.lib.budgets import budget_status, latest_forecasts, period_calendar, top_drivers
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.overage import USAGE_COLUMNS, bills_tokens, compute_overage, periods_for_day
from cost_pipeline.lib.periods import (
    COMPANY,
    SPEND_COLUMNS,
    Period,
    as_utc,
    period_of,
    periods_overlapping_day,
    tenant_timezone,
)
from cost_pipeline.store import queries
from cost_pipeline.store.warehouse import Warehouse


def period_spend(
    warehouse: Warehouse,
    config: CostConfig,
    *,
    as_of: datetime,
    tenant_ids: Sequence[str] | None = None,
    period_key: str | None = None,
    include_company: bool = False,
) -> pd.DataFrame:
    """Spend to date per tenant in its local period, counting what happened before `as_of`.

    The period of each tenant is the one containing `as_of - 1µs` in its time zone, unless
    `period_key` ("YYYY-MM") names one explicitly (e.g. a month being closed). Interactions are
    counted when `occurred_at < as_of`; day-bucketed rows when their day is on or before the
    UTC date of `as_of - 1µs`. With `include_company`, a `COMPANY` row sums every tenant (and
    unattributed cost) over the UTC month. Returns columns `SPEND_COLUMNS`, one row per tenant
    (zero spend included), costs in USD.
    """
    as_of = as_utc(as_of)
    ids = list(tenant_ids) if tenant_ids is not None else [t.id for t in config.tenants]
    zones = {t: tenant_timezone(config, t) for t in ids}
    if include_company:
        zones[COMPANY] = "UTC"
    periods = {
        t: period_of(date.fromisoformat(f"{period_key}-01"), tz)
        if period_key
        else period_of(as_of - timedelta(microseconds=1), tz)
        for t, tz in zones.items()
    }
    cutoff_day = (as_of - timedelta(microseconds=1)).date()
    # UTC days hold the interactions; the local calendar dates match day-bucketed rows.
    days = sorted(
        {
            d
            for p in periods.values()
            for d in [*p.utc_days(), *(p.first_day + timedelta(days=i) for i in range(p.days))]
            if d <= cutoff_day
        }
    )
    llm = _llm_spend(periods, warehouse, as_of)
    other = _other_spend(warehouse, periods, days, cutoff_day, include_company)
    out = pd.DataFrame({"tenant_id": list(periods)})
    out["period"] = [periods[t].key for t in out["tenant_id"]]
    out = out.merge(llm, on="tenant_id", how="left").merge(other, on="tenant_id", how="left")
    out[["llm_cost_usd", "other_cost_usd"]] = (
        out[["llm_cost_usd", "other_cost_usd"]].astype("float64").fillna(0.0)
    )
    out["spend_usd"] = (out["llm_cost_usd"] + out["other_cost_usd"]).round(9)
    return out[SPEND_COLUMNS]


def _frame_for(df: pd.DataFrame, periods: dict[str, Period], include_company: bool) -> pd.DataFrame:
    """Rows keyed by the tenant whose period they are judged against (company rows duplicated)."""
    own = df[df["tenant_id"].isin([t for t in periods if t != COMPANY])]
    if include_company and COMPANY in periods:
        own = pd.concat([own, df.assign(tenant_id=COMPANY)], ignore_index=True)
    return own


def _llm_spend(periods: dict[str, Period], warehouse: Warehouse, as_of: datetime) -> pd.DataFrame:
    bounds = {t: (p.start, min(p.end, as_of)) for t, p in periods.items()}
    sums = queries.sum_in_windows(warehouse, bounds, "cost_usd")
    return pd.DataFrame({"tenant_id": list(sums), "llm_cost_usd": list(sums.values())})


def _other_spend(
    warehouse: Warehouse,
    periods: dict[str, Period],
    days: Iterable[date],
    cutoff_day: date,
    include_company: bool,
) -> pd.DataFrame:
    cols = ["day", "tenant_id", "cost_category", "cost_usd"]
    df = warehouse.read(DAILY_COST_SUMMARY, days=list(days), columns=cols)
    df = df[df["cost_category"] != "llm"]
    df = _frame_for(df, periods, include_company)
    if df.empty:
        return pd.DataFrame({"tenant_id": [], "other_cost_usd": []})
    first = df["tenant_id"].map({t: p.first_day for t, p in periods.items()})
    last = df["tenant_id"].map({t: min(p.last_day, cutoff_day) for t, p in periods.items()})
    inside = (df["day"] >= first) & (df["day"] <= last)
    sums = df[inside].groupby("tenant_id")["cost_usd"].sum()
    return sums.rename("other_cost_usd").reset_index()


def period_tokens(
    warehouse: Warehouse,
    *,
    bounds: dict[str, tuple[datetime, datetime]],
    as_of: datetime,
) -> pd.DataFrame:
    """Input + output tokens per tenant of interactions in [start, min(end, as_of)) per tenant."""
    windows = {t: (b[0], min(b[1], as_of)) for t, b in bounds.items()}
    sums = queries.sum_in_windows(warehouse, windows, "tokens")
    return pd.DataFrame({"tenant_id": list(sums), "usage_tokens": list(sums.values())})


def period_usage(
    warehouse: Warehouse,
    config: CostConfig,
    *,
    period_key: str,
    tenant_ids: Sequence[str],
    as_of: datetime,
) -> pd.DataFrame:
    """Usage (`USAGE_COLUMNS`) of each tenant in its local period `period_key`, up to `as_of`."""
    spend = period_spend(
        warehouse, config, as_of=as_of, tenant_ids=tenant_ids, period_key=period_key
    )
    first = date.fromisoformat(f"{period_key}-01")
    bounds = {t: period_of(first, config.tenants_by_id[t].timezone) for t in tenant_ids}
    spend["period_start"] = spend["tenant_id"].map({t: p.start for t, p in bounds.items()})
    spend["period_end"] = spend["tenant_id"].map({t: p.end for t, p in bounds.items()})
    spend["usage_usd"] = spend["spend_usd"]
    token_tenants = [t for t in tenant_ids if bills_tokens(config, t)]
    spend["usage_tokens"] = 0
    if token_tenants:
        # Token tiers need exact local-month bounds; read them only when some tier bills tokens.
        tokens = period_tokens(
            warehouse,
            bounds={t: (bounds[t].start, bounds[t].end) for t in token_tenants},
            as_of=as_of,
        )
        per_tenant = dict(zip(tokens["tenant_id"], tokens["usage_tokens"], strict=True))
        spend["usage_tokens"] = spend["tenant_id"].map(per_tenant).fillna(0).astype("int64")
    return spend[USAGE_COLUMNS]


def unpriced_periods(warehouse: Warehouse, charges: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Per (tenant, period) of `charges`: its calls in the whole local period (`period_start`,
    `period_end`) that are not priced; periods without any are left out. Charges without
    those windows (hand-built frames) have none to check."""
    if charges.empty or not {"period_start", "period_end"} <= set(charges.columns):
        return {}
    windows = {
        (t, p): (as_utc(pd.Timestamp(s).to_pydatetime()), as_utc(pd.Timestamp(e).to_pydatetime()))
        for t, p, s, e in zip(
            charges["tenant_id"],
            charges["period"],
            charges["period_start"],
            charges["period_end"],
            strict=True,
        )
    }
    return queries.unpriced_in_windows(warehouse, windows)


def overage_for_day(
    warehouse: Warehouse, config: CostConfig, *, day: date, now: datetime | None = None
) -> pd.DataFrame:
    """Whole-period overage of every (tenant, period) that UTC day `day` touches, as of `now`.

    Re-running any day of a period recomputes that period in full from the warehouse, so a
    late re-run of an early day never replaces a later figure with an older one.
    """
    return overage_for_days(warehouse, config, days=[day], now=now)


def overage_for_days(
    warehouse: Warehouse, config: CostConfig, *, days: Sequence[date], now: datetime | None = None
) -> pd.DataFrame:
    """`overage_for_day` for a range of days: each touched (tenant, period) computed once."""
    now = now or datetime.now(UTC)
    touched: dict[str, set[str]] = {}
    for day in days:
        for key, ids in periods_for_day(config, day).items():
            touched.setdefault(key, set()).update(ids)
    frames = [
        period_usage(warehouse, config, period_key=key, tenant_ids=sorted(ids), as_of=now)
        for key, ids in sorted(touched.items())
    ]
    usage = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=USAGE_COLUMNS)
    return compute_overage(usage, config, computed_at=now)


def read_forecasts(
    warehouse: Warehouse, day: date, current_periods: dict[str, str]
) -> pd.DataFrame:
    """The latest month-end forecast per tenant made in the 4 days up to `day`."""
    days = [day - timedelta(days=i) for i in range(3, -1, -1)]
    df = warehouse.read(
        COST_FORECASTS,
        days=days,
        columns=["day", "tenant_id", "month", "forecast_usd", "upper_80_usd"],
    )
    return latest_forecasts(df, current_periods)


def evaluate_day(
    warehouse: Warehouse, config: CostConfig, day: date, *, as_of: datetime | None = None
) -> pd.DataFrame:
    """All `budget_status` rows of UTC day `day`: every tenant's (and the company's) periods
    overlapping the day, spend counted up to `as_of` (default: the end of the day)."""
    end_of_day = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    as_of = min(as_of or end_of_day, end_of_day)
    ids = [t.id for t in config.tenants]
    zones = {**{t: tenant_timezone(config, t) for t in ids}, COMPANY: "UTC"}
    periods = {(t, p.key): p for t, tz in zones.items() for p in periods_overlapping_day(day, tz)}
    latest = period_spend(warehouse, config, as_of=as_of, include_company=True)
    frames = [latest]
    # Tenants whose local month ended during the day also get a row closing that month.
    current = dict(zip(latest["tenant_id"], latest["period"], strict=True))
    closing: dict[str, list[str]] = {}
    for t, key in periods:
        if key != current[t]:
            closing.setdefault(key, []).append(t)
    for key, tenants in closing.items():
        spend = period_spend(
            warehouse,
            config,
            as_of=as_of,
            tenant_ids=[t for t in tenants if t != COMPANY],
            period_key=key,
            include_company=COMPANY in tenants,
        )
        frames.append(spend[spend["tenant_id"].isin(tenants)])
    spend = pd.concat(frames, ignore_index=True)

    days = sorted({d for p in periods.values() for d in period_calendar(p) if d <= day})
    summary = warehouse.read(DAILY_COST_SUMMARY, days=days)
    summary = pd.concat([summary, summary.assign(tenant_id=COMPANY)], ignore_index=True)
    ranges = pd.DataFrame(
        [(t, k, p.first_day, p.last_day) for (t, k), p in periods.items()],
        columns=["tenant_id", "period", "first_day", "last_day"],
    )
    in_period = summary.merge(ranges, on="tenant_id")
    in_period = in_period[
        (in_period["day"] >= in_period["first_day"]) & (in_period["day"] <= in_period["last_day"])
    ]
    today = summary[summary["day"] == day]
    day_spend = today.groupby("tenant_id", as_index=False)["cost_usd"].sum()
    return budget_status(
        spend,
        periods,
        config,
        day=day,
        as_of=as_of,
        day_spend=day_spend.rename(columns={"cost_usd": "day_spend_usd"}),
        forecasts=read_forecasts(warehouse, day, current),
        drivers=top_drivers(in_period.drop(columns=["first_day", "last_day"])),
    )
