"""Tenant-local billing periods and the spend to date within them.

A billing period is the calendar month in the tenant's time zone (`Tenant.timezone`, default
UTC). Its boundaries are UTC instants computed with `zoneinfo`, so a month that contains a
daylight-saving change is still exactly "local midnight of the 1st to local midnight of the next
1st" (e.g. America/New_York, March 2026: 05:00 UTC Mar 1 to 04:00 UTC Apr 1).

How spend is counted in a period (`period_spend`):

- `priced_interactions` carry exact timestamps (`occurred_at`): an interaction belongs to the
  period whose [start, end) contains it, i.e. it is counted in the tenant's local month.
- `daily_cost_summary` rows of every category except `llm` (cloud, k8s, unattributed, ...) are
  bucketed by UTC day and have no finer time: a row of UTC day D is counted in the period whose
  local *calendar dates* contain D (the date is read as-is, not converted). The `llm` rows of the
  summary are skipped because they repeat the priced interactions.

Public API (also used by Stripe overage billing; keep it small and stable):
`Period`, `period_of`, `periods_overlapping_day`, `local_period_keys`, `period_spend`,
`COMPANY`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import DAILY_COST_SUMMARY, PRICED_INTERACTIONS
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.warehouse import Warehouse

COMPANY = "__company__"
"""Pseudo tenant id of the company as a whole (its period is the UTC month)."""

SPEND_COLUMNS = ["tenant_id", "period", "llm_cost_usd", "other_cost_usd", "spend_usd"]


@dataclass(frozen=True)
class Period:
    """One calendar month in one time zone, with its UTC boundaries [start, end)."""

    key: str  # "YYYY-MM" of the local month
    timezone: str
    start: datetime  # aware UTC
    end: datetime  # aware UTC, exclusive

    @property
    def first_day(self) -> date:
        """First local calendar date of the period."""
        return date.fromisoformat(f"{self.key}-01")

    @property
    def last_day(self) -> date:
        """Last local calendar date of the period."""
        return self.next().first_day - timedelta(days=1)

    @property
    def days(self) -> int:
        return (self.last_day - self.first_day).days + 1

    def utc_days(self) -> list[date]:
        """Every UTC day that overlaps the period (the warehouse partitions to read)."""
        first = self.start.date()
        last = (self.end - timedelta(microseconds=1)).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def next(self) -> Period:
        return period_of(self.end, self.timezone)

    def previous(self) -> Period:
        return period_of(self.start - timedelta(microseconds=1), self.timezone)

    def contains(self, instant: datetime) -> bool:
        return self.start <= _as_utc(instant) < self.end


def _as_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r}: pass an aware (UTC) instant")
    return instant.astimezone(UTC)


def _month_start_utc(year: int, month: int, tz: ZoneInfo) -> datetime:
    return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)


def period_of(instant: datetime | date, tz_name: str = "UTC") -> Period:
    """The local month containing `instant` (an aware datetime) or a local calendar `date`."""
    tz = ZoneInfo(tz_name)
    if isinstance(instant, datetime):
        local = _as_utc(instant).astimezone(tz)
    else:
        local = datetime(instant.year, instant.month, instant.day, tzinfo=tz)
    year, month = local.year, local.month
    nyear, nmonth = (year + 1, 1) if month == 12 else (year, month + 1)
    return Period(
        key=f"{year:04d}-{month:02d}",
        timezone=tz_name,
        start=_month_start_utc(year, month, tz),
        end=_month_start_utc(nyear, nmonth, tz),
    )


def periods_overlapping_day(day: date, tz_name: str = "UTC") -> list[Period]:
    """The local periods that overlap UTC day `day`: one, or two when a local month ends in it."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    first = period_of(start, tz_name)
    last = period_of(start + timedelta(days=1) - timedelta(microseconds=1), tz_name)
    return [first] if first == last else [first, last]


def tenant_timezone(config: CostConfig, tenant_id: str) -> str:
    """The tenant's time zone; UTC for the company and for tenants not in the config."""
    tenant = config.tenants_by_id.get(tenant_id)
    return tenant.timezone if tenant is not None else "UTC"


def local_period_keys(occurred_at: pd.Series, tz_names: pd.Series) -> pd.Series:
    """Vectorized "YYYY-MM" of each UTC instant in its row's time zone (one pass per zone)."""
    instants = pd.to_datetime(occurred_at, utc=True)
    out = pd.Series(pd.NA, index=occurred_at.index, dtype="object")
    for tz_name, idx in tz_names.groupby(tz_names, sort=False).groups.items():
        out.loc[idx] = instants.loc[idx].dt.tz_convert(str(tz_name)).dt.strftime("%Y-%m")
    return out


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
    as_of = _as_utc(as_of)
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


def sum_in_windows(
    warehouse: Warehouse,
    bounds: Mapping[str, tuple[datetime, datetime]],
    measure: Callable[[sa.Table], Any],
) -> dict[str, float]:
    """Per tenant, SUM(`measure`) over its priced calls with start <= occurred_at < end.

    Summed in the database with one grouped query per distinct window (tenants of one time zone
    share theirs), so a month of interactions never has to fit in memory. The pseudo-tenant
    `COMPANY` sums every tenant's calls in its window.
    """
    table = warehouse.table(PRICED_INTERACTIONS)
    windows: dict[tuple[datetime, datetime], list[str]] = {}
    for tenant, window in bounds.items():
        windows.setdefault(window, []).append(tenant)
    sums: dict[str, float] = {}
    with warehouse.engine.connect() as conn:
        for (start, end), tenants in windows.items():
            if end <= start:
                continue
            inside = sa.and_(
                table.c.day >= start.date(),
                table.c.day <= (end - timedelta(microseconds=1)).date(),
                table.c.occurred_at >= start,
                table.c.occurred_at < end,
            )
            total = sa.func.sum(measure(table))
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


def _llm_spend(periods: dict[str, Period], warehouse: Warehouse, as_of: datetime) -> pd.DataFrame:
    bounds = {t: (p.start, min(p.end, as_of)) for t, p in periods.items()}
    sums = sum_in_windows(warehouse, bounds, lambda t: t.c.cost_usd)
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
