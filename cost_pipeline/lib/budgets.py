"""Budget status math: utilization, projected breach, status, threshold crossings, drivers.

One `budget_status` row per UTC day, tenant and local billing period overlapping that day (two
at a tenant's month end), plus one for the company (`periods.COMPANY`, UTC month). The limit a
tenant is judged against is, in order: its monthly budget, its tier's hard cap, its tier's
included usage. What is measured against it (`counted_spend_usd`) depends on the limit:

- a budget (tenant or company) is always measured on the whole spend (`spend_usd`: LLM calls
  plus allocated cloud, Kubernetes and unattributed cost);
- a tier's hard cap or included usage is measured on what the tier's `allowance_counts` says
  counts: its LLM cost alone (`llm`, the default) or its whole spend (`all`). The same rule
  decides when a capped tenant is blocked (`enforcement`) and what overage bills
  (`lib.overage`).

Status, with `u` = counted spend / limit in percent:

- `exceeded`: u >= 100;
- `critical`: u >= 90, or the projection breaches the limit within `CRITICAL_BREACH_DAYS`;
- `warning`: u >= 75, or the projected month end is over the limit;
- `ok` otherwise (and always when there is no limit).

The projected month end comes from `cost_forecasts` when it has a row for the tenant, else from
the run rate (counted spend so far / elapsed fraction of the period); `forecast_source` says
which. `cost_forecasts` project the whole spend: for a limit measured on LLM cost alone, the
projection is the LLM cost so far plus the LLM share (so far) of the spend the forecast still
expects. The breach date assumes the counted spend grows linearly from now to the projected
month end.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from cost_pipeline.catalog import BUDGET_STATUS, TENANT_ENFORCEMENT
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.periods import (
    COMPANY,
    Period,
)

CRITICAL_BREACH_DAYS = 3
WARNING_PCT = 75.0
CRITICAL_PCT = 90.0
# A run-rate projection (no forecast yet) alerts a breach only once this much of the period is over.
RUN_RATE_ALERT_MIN_DAYS = 7.0
TOP_DRIVERS = 3


STATUS_RANK = {"ok": 0, "warning": 1, "critical": 2, "exceeded": 3}


def limits(config: CostConfig, tenant_ids: list[str]) -> pd.DataFrame:
    """Budget, tier allowance and hard cap per tenant, and the limit they are judged against."""
    rows = []
    for t in tenant_ids:
        if t == COMPANY:
            budget, tier = config.company_budget, None
        else:
            budget, tier = config.tenants_by_id[t].budget, config.tier_of(t)
        cap = tier.hard_cap_usd if tier else None
        included = tier.included_usage_usd if tier else None
        counts = tier.allowance_counts if tier else None
        limit, kind = next(
            (
                (v, k)
                for v, k in (
                    (budget.monthly_usd, "budget"),
                    (cap, "hard_cap"),
                    (included, "included"),
                )
                if v is not None
            ),
            (None, None),
        )
        rows.append(
            {
                "tenant_id": t,
                "budget_monthly_usd": _f(budget.monthly_usd),
                "budget_daily_usd": _f(budget.daily_usd),
                "included_usage_usd": _f(included),
                "hard_cap_usd": _f(cap),
                "limit_usd": _f(limit),
                "limit_kind": kind,
                "allowance_counts": counts,
            }
        )
    return pd.DataFrame(rows)


def _f(value: object) -> float:
    return float(value) if value is not None else np.nan  # type: ignore[arg-type]


def llm_only(df: pd.DataFrame) -> pd.Series:
    """Rows whose tier counts only LLM cost toward its allowance and hard cap."""
    return df["allowance_counts"].eq("llm")


def limit_on_llm(df: pd.DataFrame) -> pd.Series:
    """Rows judged against a tier limit (hard cap, included usage) that counts LLM cost only."""
    return df["limit_kind"].isin(["hard_cap", "included"]) & llm_only(df)


def counted_spend(df: pd.DataFrame) -> pd.Series:
    """Per row: the spend measured against `limit_usd` (see the module docstring)."""
    return df["spend_usd"].where(~limit_on_llm(df), df["llm_cost_usd"])


def cap_spend(df: pd.DataFrame) -> pd.Series:
    """Per row: the spend the tier's hard cap is compared with (whatever the limit is)."""
    return df["spend_usd"].where(~llm_only(df), df["llm_cost_usd"])


def budget_status(
    spend: pd.DataFrame,
    periods: dict[tuple[str, str], Period],
    config: CostConfig,
    *,
    day: date,
    as_of: datetime,
    day_spend: pd.DataFrame | None = None,
    forecasts: pd.DataFrame | None = None,
    drivers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Build `budget_status` rows from `periods.period_spend` output (one row per tenant+period).

    `periods` maps (tenant_id, period key) to its `Period`; `day_spend` has tenant_id,
    day_spend_usd; `forecasts` tenant_id, period, forecast_month_end_usd, forecast_lower_usd,
    forecast_upper_usd;
    `drivers` tenant_id, period, top_drivers (JSON text). All optional.
    """
    df = spend.merge(limits(config, sorted(spend["tenant_id"].unique())), on="tenant_id")
    df["day"] = day
    keys = list(zip(df["tenant_id"], df["period"], strict=True))
    df["timezone"] = [periods[k].timezone for k in keys]
    df["period_start"] = pd.to_datetime([periods[k].start for k in keys], utc=True)
    df["period_end"] = pd.to_datetime([periods[k].end for k in keys], utc=True)
    df["as_of"] = pd.to_datetime([min(as_of, periods[k].end) for k in keys], utc=True)
    df = _left(df, day_spend, ["tenant_id"], {"day_spend_usd": 0.0})
    df = _left(
        df,
        forecasts,
        ["tenant_id", "period"],
        {
            "forecast_month_end_usd": np.nan,
            "forecast_lower_usd": np.nan,
            "forecast_upper_usd": np.nan,
        },
    )
    df = _left(df, drivers, ["tenant_id", "period"], {"top_drivers": "[]"})

    df["counted_spend_usd"] = counted_spend(df)
    limit = df["limit_usd"].where(df["limit_usd"] > 0)
    df["utilization_pct"] = (df["counted_spend_usd"] / limit * 100).round(4)
    daily = df["budget_daily_usd"].where(df["budget_daily_usd"] > 0)
    df["daily_utilization_pct"] = (df["day_spend_usd"] / daily * 100).round(4)

    # Run-rate projection where the forecaster had nothing for this tenant and period.
    total = (df["period_end"] - df["period_start"]).dt.total_seconds()
    elapsed = (df["as_of"] - df["period_start"]).dt.total_seconds().clip(lower=1.0)
    run_rate = df["counted_spend_usd"] * total / elapsed
    has_forecast = df["forecast_month_end_usd"].notna()
    # Forecasts project the whole spend; a limit measured on LLM cost alone takes the LLM
    # share (so far) of the spend the forecast still expects.
    on_llm = limit_on_llm(df)
    share = (df["llm_cost_usd"] / df["spend_usd"].where(df["spend_usd"] > 0)).clip(0, 1).fillna(1)
    for column in ("forecast_month_end_usd", "forecast_lower_usd", "forecast_upper_usd"):
        remaining = (df[column] - df["spend_usd"]).clip(lower=0)
        df[column] = df[column].where(~on_llm, df["llm_cost_usd"] + remaining * share)
    df["forecast_source"] = np.where(has_forecast, "cost_forecasts", "run_rate")
    df["forecast_month_end_usd"] = df["forecast_month_end_usd"].where(has_forecast, run_rate)

    df["projected_breach_date"] = projected_breach_dates(df)
    df["status"] = statuses(df, as_of)
    df["threshold_reached"] = [
        highest_threshold(u, config.thresholds_for(t))
        for t, u in zip(df["tenant_id"], df["utilization_pct"], strict=True)
    ]
    return BUDGET_STATUS.conform(df)


def _left(df: pd.DataFrame, other: pd.DataFrame | None, on: list[str], fill: dict) -> pd.DataFrame:
    if other is None or other.empty:
        return df.assign(**fill)
    out = df.merge(other[[*on, *fill]], on=on, how="left")
    return out.fillna({k: v for k, v in fill.items() if not (isinstance(v, float) and np.isnan(v))})


def projected_breach_dates(df: pd.DataFrame) -> list[date | None]:
    """Local date the limit is (or will be) reached on a linear path to the projected month end.

    Already over the limit: the as-of date. Projected to stay under: None. The spend is
    `counted_spend_usd` where present (the spend measured against the limit).
    """
    spend = df["counted_spend_usd"] if "counted_spend_usd" in df.columns else df["spend_usd"]
    limit = df["limit_usd"]
    target = df["forecast_month_end_usd"]
    remaining = (df["period_end"] - df["as_of"]).dt.total_seconds()
    growth = (target - spend).where(target > spend)
    fraction = ((limit - spend) / growth).where((limit > spend) & (target >= limit))
    seconds = (fraction * remaining).where(spend < limit, 0.0)
    # Only rows with a breach are converted: pandas' float-to-timedelta cast of a column with
    # NaNs multiplies uninitialised values and warns at random (overflow / invalid value).
    has = seconds.notna()
    breach = pd.Series(pd.NaT, index=df.index, dtype=df["as_of"].dtype)
    breach[has] = df.loc[has, "as_of"] + pd.to_timedelta(seconds[has].to_numpy(), unit="s")
    out: list[date | None] = []
    for at, tz, lim in zip(breach, df["timezone"], limit, strict=True):
        out.append(None if pd.isna(at) or pd.isna(lim) else at.tz_convert(tz).date())
    return out


def statuses(df: pd.DataFrame, as_of: datetime) -> np.ndarray:
    u = df["utilization_pct"].fillna(0.0)
    breach = pd.to_datetime(df["projected_breach_date"])
    soon = breach.notna() & (breach <= pd.Timestamp(as_of.date() + timedelta(CRITICAL_BREACH_DAYS)))
    over = df["forecast_month_end_usd"] > df["limit_usd"]
    return np.select(
        [u >= 100, (u >= CRITICAL_PCT) | soon, (u >= WARNING_PCT) | over],
        ["exceeded", "critical", "warning"],
        default="ok",
    )


def highest_threshold(utilization_pct: float | None, thresholds: list[float]) -> float | None:
    """The highest threshold reached; crossing 50 and 90 at once reaches only 90."""
    if utilization_pct is None or pd.isna(utilization_pct):
        return None
    reached = [t for t in thresholds if utilization_pct >= t]
    return max(reached) if reached else None


def new_crossing(
    previous_pct: float | None, current_pct: float | None, thresholds: list[float]
) -> float | None:
    """The threshold to alert on when utilization moves from `previous_pct` to `current_pct`."""
    now = highest_threshold(current_pct, thresholds)
    before = highest_threshold(previous_pct, thresholds)
    if now is None or (before is not None and before >= now):
        return None
    return now


def top_drivers(summary: pd.DataFrame, n: int = TOP_DRIVERS) -> pd.DataFrame:
    """Per tenant (and `period` if present): the `n` costliest agent / model / service, as JSON.

    `summary` has daily_cost_summary columns; LLM cost is attributed to "agent · model", other
    categories to "category · service".
    """
    keys = ["tenant_id", "period"] if "period" in summary.columns else ["tenant_id"]
    if summary.empty:
        return pd.DataFrame(columns=[*keys, "top_drivers"])
    is_llm = summary["cost_category"] == "llm"
    agent = summary["agent_id"].fillna("no agent").astype(str)
    what = summary["model_or_service"].fillna("unknown").astype(str)
    label = np.where(
        is_llm, "agent " + agent + " · " + what, summary["cost_category"].astype(str) + " · " + what
    )
    grouped = (
        summary.assign(driver=label)
        .groupby([*keys, "driver"], as_index=False)["cost_usd"]
        .sum()
        .sort_values([*keys, "cost_usd"], ascending=[*(True for _ in keys), False])
    )
    top = grouped.groupby(keys, as_index=False).head(n)
    top = top.assign(cost_usd=top["cost_usd"].round(2))
    out = (
        top.groupby(keys)[["driver", "cost_usd"]]
        .apply(lambda g: json.dumps(g.to_dict("records")))
        .rename("top_drivers")
        .reset_index()
    )
    return out


def latest_forecasts(forecasts: pd.DataFrame, current_periods: dict[str, str]) -> pd.DataFrame:
    """The newest `cost_forecasts` row per tenant as (tenant_id, period, point, upper 80 %)."""
    if forecasts.empty:
        return pd.DataFrame(
            columns=[
                "tenant_id",
                "period",
                "forecast_month_end_usd",
                "forecast_lower_usd",
                "forecast_upper_usd",
            ]
        )
    df = forecasts.sort_values("day").groupby("tenant_id", as_index=False).tail(1)
    period = pd.to_datetime(df["month"]).dt.strftime("%Y-%m")
    return pd.DataFrame(
        {
            "tenant_id": df["tenant_id"],
            "period": period.fillna(df["tenant_id"].map(current_periods)),
            "forecast_month_end_usd": df["forecast_usd"].astype("float64"),
            "forecast_lower_usd": df["lower_80_usd"].astype("float64"),
            "forecast_upper_usd": df["upper_80_usd"].astype("float64"),
        }
    )


def enforcement(status: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """`tenant_enforcement` rows for one day from its `budget_status` rows (company excluded).

    Each tenant is judged on its latest period of the day. A tenant with a hard cap is blocked
    when the spend its tier counts (`allowance_counts`: its LLM cost, or its whole spend)
    reaches the cap; `spend_usd` of the result is that counted spend. `since` is carried over
    from `previous` (the tenant's last earlier row) while the decision is unchanged, so it says
    when the current state began.
    """
    df = status[status["tenant_id"] != COMPANY].sort_values("period_end")
    df = df.groupby("tenant_id", as_index=False).tail(1)
    cap = df["hard_cap_usd"]
    spend = cap_spend(df)
    what = pd.Series(np.where(llm_only(df), "LLM spend ", "spend "), index=df.index)
    blocked = cap.notna() & (spend >= cap)
    out = pd.DataFrame(
        {
            "day": df["day"],
            "tenant_id": df["tenant_id"],
            "period": df["period"],
            "period_end": df["period_end"],
            "allowed": ~blocked,
            "reason": np.where(
                blocked,
                "hard cap reached: "
                + what
                + spend.round(2).astype(str)
                + " USD >= cap "
                + cap.round(2).astype(str)
                + " USD in "
                + df["period"],
                np.where(cap.notna(), "under hard cap", "no hard cap"),
            ),
            "since": df["as_of"],
            "spend_usd": spend,
            "hard_cap_usd": cap,
        }
    )
    if not previous.empty:
        prev = previous.sort_values("day").groupby("tenant_id").tail(1)
        prev = prev.set_index("tenant_id")
        same = out["tenant_id"].map(prev["allowed"].astype(bool)) == out["allowed"]
        same &= out["tenant_id"].map(prev["period"]) == out["period"]
        out["since"] = out["since"].where(~same, out["tenant_id"].map(prev["since"]))
    return TENANT_ENFORCEMENT.conform(out)


def period_calendar(period: Period) -> list[date]:
    return [period.first_day + timedelta(days=i) for i in range(period.days)]


def alert_facts(status: pd.DataFrame) -> pd.DataFrame:
    """The alertable facts of `budget_status` rows: the highest threshold reached per tenant and
    period, a forecast breach (projected over the limit while still under it), and a daily
    budget reached (`daily_limit`, once per tenant and UTC day).

    A breach is only alerted when it is likely, not merely possible: with a forecast, when even
    its lower 80 % bound is over the limit (a breach at least ~90 % likely by the forecast's own
    calibrated interval); with the run rate alone (no forecast yet), once
    `RUN_RATE_ALERT_MIN_DAYS` of the period are behind, because a run rate from the first days
    of a month (one expensive call) says little about its end.
    """
    thr = status[status["threshold_reached"].notna()]
    threshold = pd.DataFrame(
        {
            "tenant_id": thr["tenant_id"],
            "period": thr["period"],
            "kind": "budget_threshold",
            "ref": thr["threshold_reached"].map(lambda v: f"{v:g}"),
        }
    )
    elapsed_days = (status["as_of"] - status["period_start"]).dt.total_seconds() / 86_400
    likely = np.where(
        status["forecast_source"] == "cost_forecasts",
        status["forecast_lower_usd"] > status["limit_usd"],
        elapsed_days >= RUN_RATE_ALERT_MIN_DAYS,
    )
    fc = status[
        status["projected_breach_date"].notna()
        & (status["utilization_pct"] < 100)
        & (status["forecast_month_end_usd"] > status["limit_usd"])
        & likely
    ]
    forecast = pd.DataFrame(
        {
            "tenant_id": fc["tenant_id"],
            "period": fc["period"],
            "kind": "forecast_breach",
            "ref": "forecast",
        }
    )
    # A daily budget reached: once per tenant and day (the row of the day's own period).
    over_day = status[
        (status["daily_utilization_pct"] >= 100) & (status["as_of"] < status["period_end"])
    ]
    over_day = over_day.sort_values("period_end").drop_duplicates(["tenant_id", "day"])
    daily = pd.DataFrame(
        {
            "tenant_id": over_day["tenant_id"],
            "period": over_day["period"],
            "kind": "daily_limit",
            "ref": over_day["day"].astype(str),
        }
    )
    return pd.concat([threshold, forecast, daily], ignore_index=True)
