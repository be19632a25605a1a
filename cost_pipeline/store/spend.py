"""Spend in tenant-local periods, read from the warehouse: the inputs of budgets and overage.

`period_spend` counts a tenant's whole cost in its local billing month (LLM calls by their exact
instant, day-bucketed cloud and Kubernetes cost by local calendar day), split into its LLM and
other part; `overage_for_day` and `evaluate_day` feed it to the pure planners in `lib.overage`
and `lib.budgets`, which apply each tier's `allowance_counts`.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class LlmCost:
    """LLM cost per tenant over [start, end) windows inside UTC days `first`..`last`.

    Whole UTC days come from one grouped query; the part of a day before or after an instant
    that is not a UTC midnight (a local midnight of a period boundary, a `now`) is queried
    exactly, once per distinct window. The pseudo-tenant `COMPANY` counts every call, with or
    without a tenant. Budgets of a whole month of days are read this way in a few queries.
    """

    def __init__(self, warehouse: Warehouse, first: date, last: date) -> None:
        self._warehouse = warehouse
        self._first, self._last = first, last
        days = queries.cost_by_tenant_and_day(warehouse, first, last)
        self._day: dict[tuple[str | None, date], float] = {}
        for tenant, day, cost in zip(days["tenant_id"], days["day"], days["cost_usd"], strict=True):
            day = pd.Timestamp(day).date()
            key = None if pd.isna(tenant) else str(tenant)
            value = float(cost or 0.0)
            self._day[(key, day)] = value
            self._day[(COMPANY, day)] = self._day.get((COMPANY, day), 0.0) + value
        self._partial: dict[tuple[str, datetime, datetime], float] = {}

    def sums(self, windows: dict[str, tuple[datetime, datetime]]) -> dict[str, float]:
        """Cost per tenant over its window (start, end), each an aware instant."""
        pieces = {t: self._pieces(*w) for t, w in windows.items()}
        todo: dict[tuple[datetime, datetime], set[str]] = {}
        for tenant, (_, partials) in pieces.items():
            for window in partials:
                if (tenant, *window) not in self._partial:
                    todo.setdefault(window, set()).add(tenant)
        for window, tenants in todo.items():
            found = queries.sum_in_windows(
                self._warehouse, dict.fromkeys(tenants, window), "cost_usd"
            )
            for tenant in tenants:
                self._partial[(tenant, *window)] = found.get(tenant, 0.0)
        return {
            tenant: sum(self._day.get((tenant, d), 0.0) for d in full)
            + sum(self._partial[(tenant, *w)] for w in partials)
            for tenant, (full, partials) in pieces.items()
        }

    def _pieces(
        self, start: datetime, end: datetime
    ) -> tuple[list[date], list[tuple[datetime, datetime]]]:
        """[start, end) as whole loaded UTC days plus windows to query exactly."""
        full: list[date] = []
        partials: list[tuple[datetime, datetime]] = []
        cursor = as_utc(start)
        end = as_utc(end)
        while cursor < end:
            midnight = datetime(cursor.year, cursor.month, cursor.day, tzinfo=UTC)
            nxt = min(end, midnight + timedelta(days=1))
            whole = cursor == midnight and nxt == midnight + timedelta(days=1)
            if whole and self._first <= midnight.date() <= self._last:
                full.append(midnight.date())
            else:
                partials.append((cursor, nxt))
            cursor = nxt
        return full, partials


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
    periods = _periods(config, as_of, tenant_ids, period_key, include_company)
    cutoff_day = (as_of - timedelta(microseconds=1)).date()
    days = _spend_days(periods, cutoff_day)
    llm = LlmCost(warehouse, min(days, default=cutoff_day), max(days, default=cutoff_day))
    summary = warehouse.read(DAILY_COST_SUMMARY, days=days, columns=OTHER_COLUMNS)
    return _spend(llm, summary, periods, as_of, include_company)


OTHER_COLUMNS = ["day", "tenant_id", "cost_category", "cost_usd"]


def _periods(
    config: CostConfig,
    as_of: datetime,
    tenant_ids: Sequence[str] | None,
    period_key: str | None,
    include_company: bool,
) -> dict[str, Period]:
    ids = list(tenant_ids) if tenant_ids is not None else [t.id for t in config.tenants]
    zones = {t: tenant_timezone(config, t) for t in ids}
    if include_company:
        zones[COMPANY] = "UTC"
    return {
        t: period_of(date.fromisoformat(f"{period_key}-01"), tz)
        if period_key
        else period_of(as_of - timedelta(microseconds=1), tz)
        for t, tz in zones.items()
    }


def _spend_days(periods: dict[str, Period], cutoff_day: date) -> list[date]:
    """UTC days holding the periods' interactions and the local calendar dates matching their
    day-bucketed rows, up to `cutoff_day`."""
    return sorted(
        {
            d
            for p in periods.values()
            for d in [*p.utc_days(), *(p.first_day + timedelta(days=i) for i in range(p.days))]
            if d <= cutoff_day
        }
    )


def _spend(
    llm: LlmCost,
    summary: pd.DataFrame,
    periods: dict[str, Period],
    as_of: datetime,
    include_company: bool,
) -> pd.DataFrame:
    """`SPEND_COLUMNS` of each tenant's period up to `as_of`, from `llm` and summary rows."""
    cutoff_day = (as_of - timedelta(microseconds=1)).date()
    llm_sums = llm.sums({t: (p.start, min(p.end, as_of)) for t, p in periods.items()})
    other = _other_spend(summary, periods, cutoff_day, include_company)
    out = pd.DataFrame({"tenant_id": list(periods)})
    out["period"] = [periods[t].key for t in out["tenant_id"]]
    out["llm_cost_usd"] = out["tenant_id"].map(llm_sums)
    out = out.merge(other, on="tenant_id", how="left")
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


def _other_spend(
    summary: pd.DataFrame,
    periods: dict[str, Period],
    cutoff_day: date,
    include_company: bool,
) -> pd.DataFrame:
    df = summary[(summary["cost_category"] != "llm") & (summary["day"] <= cutoff_day)]
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
    """Usage (`USAGE_COLUMNS`) of each tenant in its local period `period_key`, up to `as_of`.

    The LLM and the other (cloud, Kubernetes, unattributed) cost are kept apart: which of them
    count toward the tier's allowance is the tier's `allowance_counts` (`lib.overage`)."""
    spend = period_spend(
        warehouse, config, as_of=as_of, tenant_ids=tenant_ids, period_key=period_key
    )
    first = date.fromisoformat(f"{period_key}-01")
    bounds = {t: period_of(first, config.tenants_by_id[t].timezone) for t in tenant_ids}
    spend["period_start"] = spend["tenant_id"].map({t: p.start for t, p in bounds.items()})
    spend["period_end"] = spend["tenant_id"].map({t: p.end for t, p in bounds.items()})
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


def _forecasts_for(warehouse: Warehouse, days: Sequence[date], day: date) -> pd.DataFrame:
    """`cost_forecasts` rows made in the 4 days up to `day`, of a read covering `days`."""
    first = min(days) - timedelta(days=3)
    frame = warehouse.read(
        COST_FORECASTS,
        days=[first + timedelta(days=i) for i in range((max(days) - first).days + 1)],
        columns=["day", "tenant_id", "month", "forecast_usd", "lower_80_usd", "upper_80_usd"],
    )
    return frame[(frame["day"] > day - timedelta(days=4)) & (frame["day"] <= day)]


def evaluate_day(
    warehouse: Warehouse, config: CostConfig, day: date, *, as_of: datetime | None = None
) -> pd.DataFrame:
    """All `budget_status` rows of UTC day `day`: every tenant's (and the company's) periods
    overlapping the day, spend counted up to `as_of` (default: the end of the day)."""
    return evaluate_days(warehouse, config, [day], as_of=as_of)[day]


def evaluate_days(
    warehouse: Warehouse,
    config: CostConfig,
    days: Sequence[date],
    *,
    as_of: datetime | None = None,
) -> dict[date, pd.DataFrame]:
    """`evaluate_day` for each of `days`, from one read of the interactions, summary and
    forecasts they need (a backfill's month of days in a few queries, not a few per day)."""
    ids = [t.id for t in config.tenants]
    zones = {**{t: tenant_timezone(config, t) for t in ids}, COMPANY: "UTC"}
    plans = {}
    for day in days:
        end_of_day = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        cut = min(as_of or end_of_day, end_of_day)
        overlapping = {
            (t, p.key): p for t, tz in zones.items() for p in periods_overlapping_day(day, tz)
        }
        current = _periods(config, cut, None, None, include_company=True)
        plans[day] = (cut, overlapping, current)
    needed = {
        d
        for day, (cut, overlapping, current) in plans.items()
        for d in [
            *_spend_days(current, day),
            *(d for p in overlapping.values() for d in period_calendar(p) if d <= day),
            *(d for p in overlapping.values() for d in p.utc_days() if d <= day),
        ]
    }
    spans = sorted(needed)
    llm = LlmCost(warehouse, spans[0], spans[-1])
    summary = warehouse.read(DAILY_COST_SUMMARY, days=spans)
    forecasts = _forecasts_for(warehouse, days, max(days))
    return {day: _evaluate(config, day, *plans[day], llm, summary, forecasts) for day in days}


def _evaluate(
    config: CostConfig,
    day: date,
    as_of: datetime,
    periods: dict[tuple[str, str], Period],
    current: dict[str, Period],
    llm: LlmCost,
    summary: pd.DataFrame,
    forecasts: pd.DataFrame,
) -> pd.DataFrame:
    frames = [_spend(llm, summary, current, as_of, include_company=True)]
    # Tenants whose local month ended during the day also get a row closing that month.
    closing: dict[str, Period] = {t: p for (t, key), p in periods.items() if key != current[t].key}
    if closing:
        frames.append(_spend(llm, summary, closing, as_of, include_company=COMPANY in closing))
    spend = pd.concat(frames, ignore_index=True)

    upto = summary[summary["day"] <= day]
    both = pd.concat([upto, upto.assign(tenant_id=COMPANY)], ignore_index=True)
    ranges = pd.DataFrame(
        [(t, k, p.first_day, p.last_day) for (t, k), p in periods.items()],
        columns=["tenant_id", "period", "first_day", "last_day"],
    )
    in_period = both.merge(ranges, on="tenant_id")
    in_period = in_period[
        (in_period["day"] >= in_period["first_day"]) & (in_period["day"] <= in_period["last_day"])
    ]
    today = both[both["day"] == day]
    day_spend = today.groupby("tenant_id", as_index=False)["cost_usd"].sum()
    recent = forecasts[(forecasts["day"] > day - timedelta(days=4)) & (forecasts["day"] <= day)]
    return budget_status(
        spend,
        periods,
        config,
        day=day,
        as_of=as_of,
        day_spend=day_spend.rename(columns={"cost_usd": "day_spend_usd"}),
        forecasts=latest_forecasts(recent, {t: p.key for t, p in current.items()}),
        drivers=top_drivers(in_period.drop(columns=["first_day", "last_day"])),
    )
