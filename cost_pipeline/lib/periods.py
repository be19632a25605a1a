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

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd

from cost_pipeline.lib.config import CostConfig

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
        return self.start <= as_utc(instant) < self.end


def as_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r}: pass an aware (UTC) instant")
    return instant.astimezone(UTC)


def _month_start_utc(year: int, month: int, tz: ZoneInfo) -> datetime:
    return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)


def period_of(instant: datetime | date, tz_name: str = "UTC") -> Period:
    """The local month containing `instant` (an aware datetime) or a local calendar `date`."""
    tz = ZoneInfo(tz_name)
    if isinstance(instant, datetime):
        local = as_utc(instant).astimezone(tz)
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
