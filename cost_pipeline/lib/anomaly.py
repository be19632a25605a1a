"""Anomaly scores per tenant-day, on total cost and on its drivers (each agent, each model).

Robust, seasonality-aware baseline (all series at once, as matrices of series x days). For day t:

- weekday profile: for each weekday, the median of that weekday over the 8 weeks before t,
  normalised to mean 1 — a Saturday is compared with Saturdays;
- level: the median of the 14 days before t, each divided by its weekday factor;
- expected(t) = level x factor(weekday of t); spread = 1.4826 x MAD of the 28 deseasonalized
  days before t. Medians, not means: a spike cannot inflate the baseline it is measured against,
  and an incident must last more than a week before it starts to become "usual".

Severity needs three things at once: the ratio actual / expected, a robust z-score, and an
excess in dollars that matters for the tenant (a share of its usual daily total). Cost is
heavy-tailed, so the ratio must also pass the series' own tail: exp(`tail_mult` x the
`tail_quantile` of its upward log deviations from its level over the 8 weeks before) — a series
whose ordinary days often reach 2x its level needs more than 2x to be unusual. For a series with
calls it is the calls that must pass their own tail (cost is calls x cost per call: once the
calls are unusual, a day of a few expensive calls has nothing left to explain). A series with
fewer than `min_history_days` started days in the last 28 (a new tenant, agent or model) is
scored `none` with the reason "not enough history", so new tenants are not flagged for being new.

Drivers: the tenant total, each agent and model (LLM), each cloud service category and k8s
cluster of the summary (`category:`, `cluster:`), each model of provider usage no logged call
explains (`unattributed:`), each provider (`provider:`), and — from the
`detail` frame the asset reads from `cloud_costs` / `k8s_allocations` — each cloud service
name, sub-account, region and k8s
namespace (`service:`, `sub_account:`, `region:`, `namespace:`).

The request-count gate (cost must be backed by a rise in calls) applies only to series that
have calls: cloud and Kubernetes rows carry `requests = 0`, so their drivers are gated by cost
alone, and the tenant total is not gated when most of its excess comes from rows without calls.

Sustained shifts and drops (`changepoints.level_shift` on each series up to the scored day, in
logs, on days since the series started — days before the data began are not a level of zero):
a step of at least 1.25x (or a drop to 0.8x or less) that has lasted a week
(`shift.min_days_after`), alerted for `shift_max_days` days from its start and only while the
scored day itself is nearer the new level than the old one (weekday-adjusted: a series that is
back is no longer shifted, whatever the median since the start says); intermittent series and
shifts from (almost) nothing (a new driver) are not shifts. A shift of a series with calls must
also show in its calls (`changepoints.count_shift`: a Poisson test with overdispersion, in
square roots, so a small driver's quiet days are not an "infinite" drop) or in its cost per
call (the same level-shift test on cost / calls, days without calls left out): the median day of
a driver making a few expensive calls a day jumps with their count and is $0 on quiet days,
which a median test in logs alone reads as a step or a collapse.

One-day dips of the tenant total (kind `drop`, detector `robust`), so a sudden fall is not
alerted a week late or never: spend under `dip_threshold` (half its usual value for the weekday,
with a robust z of -3.5 or less) and past the series' own lower tail (the spikes' rule below the
level: a tenant whose ordinary days often fall to 0.6x must fall further; a tenant often empty
has no dips), unless credits or refunds (negative cost rows) make at least half of the
shortfall. A tenant with no cost at all on the day is kept at `low` with the reason that the
day's rows may be missing: a late or failed export looks the same, and an empty stretch that
lasts is the level-shift drop after a week. A dip mostly of the tenant's cloud (or Kubernetes)
rows, on a day for which fewer than `infra_settle_days` later days have FOCUS rows (Kubernetes
allocations), is kept at `low` too: exports keep adding and restating a day for a few days,
Kubecost may not have answered for a day yet, and the daily close and the late-data sensor
score the day again as they land. Drivers do not dip on their own (spend moving
between services or agents is no anomaly of the tenant); the dip's reason names the most
specific driver behind it, and its `since_day` is the first of the days before it at or under
1 / 1.5 of their usual value (as a spike is elevated since the days above 1.5x).

Every flagged row carries `impact_usd`, the dollars above (or below) its usual level since
`since_day`; an alert (high or critical) needs an impact of at least `min_impact_usd` *and*
`min_impact_share` of the tenant's monthly budget (of its usual month's spend without a budget),
like AWS Cost Anomaly Detection's monitors (`impact_threshold`; the usual month is 30
weekday-neutral usual days). Below that, the row is kept at `low` with its reason. The tenant
total and coarse drivers (provider, category, cluster, region, account) name the most specific
driver behind them in their reason (`largest driver service:...`, `namespace:...`, an agent or
a model).

The IsolationForest multivariate view was removed (F1 0.175 on the project's own evaluation);
`multivariate_score` is always null.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from cost_pipeline.catalog import ANOMALY_SCORES
from cost_pipeline.lib.changepoints import ShiftParams, count_shift, level_shift, nanquantile0

SEVERITIES = ("none", "low", "medium", "high", "critical")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
WINDOW_DAYS = 28 + 56 + 14
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class AnomalyParams:
    # (ratio, robust z) a series' cost must reach for low, medium, high, critical.
    thresholds: tuple[tuple[float, float], ...] = ((1.5, 3.0), (2.0, 3.5), (2.0, 3.5), (5.0, 8.0))
    # The same for its request count: the level is the lower of the two, because a few
    # expensive calls make cost heavy-tailed while a runaway loop, a spike or a model switch
    # also moves how many calls a driver makes.
    request_thresholds: tuple[tuple[float, float], ...] = (
        (1.3, 2.0),
        (1.5, 3.0),
        (2.0, 4.0),
        (3.0, 6.0),
    )
    min_history_days: int = 21
    # Heavy tails: a spike's ratio must also pass exp(tail_mult x q), q the `tail_quantile` of
    # the series' own upward log deviations from its level over the 28 days before (a series
    # whose ordinary days often reach 2x its level needs more than 2x to be unusual).
    tail_quantile: float = 0.9
    tail_mult: float = 3.0
    # The excess must be at least this share of the tenant's usual daily total, and this much.
    min_excess_share: float = 0.02
    min_excess_usd: float = 0.05
    rel_sigma_floor: float = 0.10
    min_new_driver_share: float = 0.25
    min_new_driver_requests: int = 5
    # Alerts (high, critical) need a dollar impact since the anomaly started of at least
    # `min_impact_usd` and at least `min_impact_share` of the tenant's monthly budget (of its
    # usual month's spend when it has no budget): material for the tenant, like AWS Cost
    # Anomaly Detection's monitors.
    min_impact_usd: float = 1.0
    min_impact_share: float = 0.01
    # Sustained shifts and drops: alerted once they have lasted `min_days_after` days (a week,
    # so a quiet weekend or a busy Monday is not a shift) and for `shift_max_days` days after
    # the start.
    shift: ShiftParams = field(
        default_factory=lambda: ShiftParams(min_ratio=1.25, min_z=5.0, min_days_after=7)
    )
    shift_max_days: int = 14
    # One-day dips of the tenant total: alerted (high) at (ratio at most, robust z at most), the
    # ratio also under exp(-`tail_mult` x the `tail_quantile` of the series' own downward log
    # deviations from its level (a tenant whose ordinary days often fall to 0.6x must fall
    # further).
    dip_threshold: tuple[float, float] = (0.5, -3.5)
    # FOCUS exports keep adding and restating a day's rows for a few days, and Kubecost may not
    # have answered for a day yet: a dip the tenant's cloud (or Kubernetes) rows make is an
    # alert only once this many later days have rows of that source too.
    infra_settle_days: int = 2


def impact_threshold(month_usd: np.ndarray | float, params: AnomalyParams) -> np.ndarray:
    """The dollar impact an alert (high, critical) needs: `min_impact_usd`, and
    `min_impact_share` of the tenant's monthly budget (its usual month without one)."""
    return np.fmax(params.min_impact_usd, params.min_impact_share * np.nan_to_num(month_usd))


def _lagged(values: np.ndarray, targets: np.ndarray, lag: int) -> np.ndarray:
    idx = targets - lag
    out = values[:, np.clip(idx, 0, None)]
    out[:, idx < 0] = np.nan
    return out


def robust_baseline(
    values: np.ndarray, targets: np.ndarray, tail_quantile: float = 0.9
) -> dict[str, np.ndarray]:
    """Expected value, spread and usable-history count for columns `targets` of `values`.

    `values` is (series x days) with NaN before each series starts; results are (series x m).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        profile = np.stack(
            [
                nanquantile0(
                    np.stack([_lagged(values, targets, 7 * k - j) for k in range(1, 9)]), 0.5
                )
                for j in range(7)
            ]
        )  # (7, n, m): j = weekday offset from the target day
        mean = np.nanmean(profile, axis=0)
        factors = profile / np.where(mean > 1e-9, mean, np.nan)
        # A weekday that is usually empty must not make every other day "infinitely" busy.
        factors = np.clip(np.nan_to_num(factors, nan=1.0), 0.05, 7.0)
        # (56, n, m): the last 28 days give the level and spread, all 56 the tail.
        deseason56 = np.stack(
            [_lagged(values, targets, lag) / factors[(-lag) % 7] for lag in range(1, 57)]
        )
        deseason = deseason56[:28]
        # The median alone says "usually zero" for a driver used on a third of days; a mean of
        # the days under the 85th percentile still ignores an incident of up to four days.
        q85 = nanquantile0(deseason, 0.85)
        trimmed = np.nanmean(np.where(deseason <= q85, deseason, np.nan), axis=0)
        level = np.fmax(nanquantile0(deseason[:14], 0.5), trimmed)
        center = nanquantile0(deseason, 0.5)
        mad = nanquantile0(np.abs(deseason - center), 0.5)
        history = np.sum(~np.isnan(deseason), axis=0)
        # Upward log deviations from the level over 8 weeks (0 for a day at or under it): the
        # series' own tail, little moved by an incident of a few days.
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.log(np.maximum(deseason56, 1e-12) / np.where(level > 0, level, np.nan))
        missing = np.isnan(deseason56)
        logs = np.nan_to_num(up, nan=0.0)
        up = np.where(missing, np.nan, np.clip(logs, 0, None))
        tail = np.nan_to_num(nanquantile0(up, tail_quantile))
        # The same below the level, for dips: an empty day is a very deep one, so a series often
        # empty (more than a tenth of its days) has no dip.
        down = np.where(missing, np.nan, np.clip(-logs, 0, None))
        tail_down = np.nan_to_num(nanquantile0(down, tail_quantile))
    return {
        "expected": level * factors[0],
        "level": level,
        "factors": factors,
        "sigma": 1.4826 * mad * factors[0],
        "history": history,
        "tail": tail,
        "tail_down": tail_down,
    }


def severity_codes(
    actual: np.ndarray,
    expected: np.ndarray,
    sigma: np.ndarray,
    min_excess: np.ndarray | float,
    params: AnomalyParams,
    *,
    thresholds: tuple[tuple[float, float], ...] | None = None,
    floor: np.ndarray | float = 0.01,
    min_ratio: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(severity code 0-4, ratio, z) for arrays of the same shape.

    A driver with no usual value (a model or agent new to an established tenant) has ratio inf.
    `min_ratio` raises every level's ratio threshold (per element: the series' own tail).
    """
    expected = np.nan_to_num(expected)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.maximum(sigma, params.rel_sigma_floor * expected)
        scale = np.maximum(np.nan_to_num(scale), floor)
        z = (actual - expected) / scale
        ratio = np.where(expected > 0, actual / expected, np.where(actual > 0, np.inf, np.nan))
    excess_ok = (actual - expected) >= min_excess
    code = np.zeros(actual.shape, dtype=int)
    for level, (r_min, z_min) in enumerate(thresholds or params.thresholds, start=1):
        r_needed = np.maximum(r_min, min_ratio)
        hit = excess_ok & (np.nan_to_num(ratio) >= r_needed) & (np.nan_to_num(z) >= z_min)
        code = np.where(hit, level, code)
    return code, ratio, z


def infra_detail(
    cloud_costs: pd.DataFrame | None = None, k8s_allocations: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Extra driver rows (day, tenant_id, driver, cost_usd) from tenant-mapped cloud and
    Kubernetes rows: `service:<service_name>`, `sub_account:<id>`, `region:<id>` (cloud, at
    effective cost) and `namespace:<namespace>` (k8s, at total cost)."""
    parts = []
    if cloud_costs is not None and not cloud_costs.empty:
        c = cloud_costs[cloud_costs["tenant_id"].notna()]
        cost = pd.to_numeric(c["effective_cost"], errors="coerce").fillna(0.0).astype(float)
        for col, prefix in (
            ("service_name", "service:"),
            ("sub_account_id", "sub_account:"),
            ("region", "region:"),
        ):
            if col in c:
                ok = c[col].notna()
                parts.append(
                    pd.DataFrame(
                        {
                            "day": c.loc[ok, "day"],
                            "tenant_id": c.loc[ok, "tenant_id"],
                            "driver": prefix + c.loc[ok, col].astype(str),
                            "cost_usd": cost[ok],
                        }
                    )
                )
    if k8s_allocations is not None and not k8s_allocations.empty:
        k = k8s_allocations[k8s_allocations["tenant_id"].notna()]
        parts.append(
            pd.DataFrame(
                {
                    "day": k["day"],
                    "tenant_id": k["tenant_id"],
                    "driver": "namespace:" + k["namespace"].astype(str),
                    "cost_usd": pd.to_numeric(k["total_cost"], errors="coerce").astype(float),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["day", "tenant_id", "driver", "cost_usd"])
    out = pd.concat(parts, ignore_index=True)
    return out.groupby(["day", "tenant_id", "driver"], as_index=False)["cost_usd"].sum()


def driver_panel(
    daily: pd.DataFrame,
    days: list[date],
    value: str = "cost_usd",
    detail: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Series (tenant_id, driver) x days of `value`: the tenant total, each agent, model,
    service and provider, plus the `detail` drivers (see `infra_detail`)."""
    frame = daily[(daily["day"] >= days[0]) & (daily["day"] <= days[-1])]
    parts = [frame.assign(driver="tenant")]
    if "agent_id" in frame:
        agents = frame[frame["agent_id"].notna()]
        parts.append(agents.assign(driver="agent:" + agents["agent_id"].astype(str)))
    if "model_or_service" in frame:
        llm = frame[(frame["cost_category"] == "llm") & frame["model_or_service"].notna()]
        parts.append(llm.assign(driver="model:" + llm["model_or_service"].astype(str)))
        infra = frame[(frame["cost_category"] != "llm") & frame["model_or_service"].notna()]
        # The summary's infrastructure grain: cloud service category, k8s cluster; provider
        # usage no logged call explains is named by its model as such.
        label = np.select(
            [infra["cost_category"] == "k8s", infra["cost_category"] == "unattributed"],
            ["cluster:", "unattributed:"],
            "category:",
        )
        parts.append(infra.assign(driver=label + infra["model_or_service"].astype(str)))
    if "provider" in frame:
        prov = frame[frame["provider"].notna()]
        parts.append(prov.assign(driver="provider:" + prov["provider"].astype(str)))
    if detail is not None and not detail.empty and value == "cost_usd":
        d = detail[(detail["day"] >= days[0]) & (detail["day"] <= days[-1])]
        parts.append(d[["day", "tenant_id", "driver", "cost_usd"]])
    long = pd.concat([p for p in parts if not p.empty] or parts[:1], ignore_index=True)
    if long.empty:
        index = pd.MultiIndex.from_tuples([], names=["tenant_id", "driver"])
        return pd.DataFrame(index=index, columns=days, dtype="float64")
    wide = long.pivot_table(
        index=["tenant_id", "driver"], columns="day", values=value, aggfunc="sum"
    )
    return wide.reindex(columns=days).fillna(0.0)


def _started(values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """`values` with NaN before each series' first non-zero day — or, with `groups` (the tenant
    of each row), before its tenant's first: a driver new to an established tenant has a usual
    value of zero rather than no history."""
    nonzero = values != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), values.shape[1])
    if groups is not None:
        first = pd.Series(first).groupby(groups).transform("min").to_numpy()
    return np.where(np.arange(values.shape[1])[None, :] >= first[:, None], values, np.nan)


def _since(
    values: np.ndarray, base: dict[str, np.ndarray], targets: np.ndarray, r_min: float | np.ndarray
):
    """Days (0-13) the series was already elevated (`r_min` > 1: above `r_min` x its usual
    value; below 1: at or under it) before each target, consecutively."""
    run = np.ones(values.shape[0:1] + targets.shape, dtype=bool)
    count = np.zeros(run.shape, dtype=int)
    below = np.asarray(r_min) < 1
    for lag in range(1, 15):
        past = _lagged(values, targets, lag)
        usual = base["level"] * base["factors"][(-lag) % 7]
        with np.errstate(invalid="ignore"):
            bound = r_min * np.nan_to_num(usual)
            known = ~np.isnan(past)
            low = (np.nan_to_num(past) <= bound) & (bound > 0)
            run &= known & np.where(below, low, np.nan_to_num(past) > bound)
        count += run
    return count


def _tenant_days(rows: pd.DataFrame, tenants: list[str], days: list[date]) -> np.ndarray:
    """(tenants x days) the sum of `rows`' `cost_usd` per tenant and day, 0 without rows."""
    if rows.empty:
        return np.zeros((len(tenants), len(days)))
    wide = rows.pivot_table(index="tenant_id", columns="day", values="cost_usd", aggfunc="sum")
    return wide.reindex(index=tenants, columns=days).fillna(0.0).to_numpy(dtype=float)


def _credits(daily: pd.DataFrame, tenant_of: pd.Index, target_days: list[date]) -> np.ndarray:
    """(series x targets) the dollars of the tenant's negative cost rows (credits, refunds) on
    each target day, on every row of the tenant."""
    if daily.empty or "cost_usd" not in daily:
        return np.zeros((len(tenant_of), len(target_days)))
    cost = pd.to_numeric(daily["cost_usd"], errors="coerce")
    neg = daily[cost < 0].assign(cost_usd=cost[cost < 0])
    return -_tenant_days(neg, list(tenant_of), target_days)


# The sources whose rows arrive late (summary category -> what delivers them, for reasons).
LATE_SOURCES = {"cloud": "FOCUS rows", "k8s": "Kubernetes allocations"}


def _unsettled(
    daily: pd.DataFrame,
    target_days: list[date],
    source: str,
    through: date | None,
    settle_days: int,
) -> np.ndarray:
    """Per target day: fewer than `settle_days` later days have rows of `source` (`through`,
    the newest day of the source in the warehouse, else the newest in `daily`), so the day's own
    rows of it may still be arriving."""
    if through is None:
        rows = daily[daily["cost_category"] == source] if "cost_category" in daily else daily[:0]
        through = max(rows["day"]) if len(rows) else None
    if through is None:
        return np.zeros(len(target_days), dtype=bool)
    return np.array([(through - d).days < settle_days for d in target_days])


def _source_excess(
    daily: pd.DataFrame, days: list[date], targets: np.ndarray, tenant_of: pd.Index, source: str
) -> np.ndarray:
    """(series x targets) the tenant's cost of `source` (a summary category) on each target day
    minus its usual (the same baseline as every series), on every row of the tenant."""
    if daily.empty or "cost_category" not in daily:
        return np.zeros((len(tenant_of), len(targets)))
    tenants = sorted(set(tenant_of))
    rows = daily[daily["cost_category"] == source]
    values = _started(_tenant_days(rows, tenants, days))
    base = robust_baseline(values, targets)
    excess = np.nan_to_num(values[:, targets]) - np.nan_to_num(base["expected"])
    row = {t: i for i, t in enumerate(tenants)}
    return excess[[row[t] for t in tenant_of]]


def _shift_scan(
    values: np.ndarray, dows: np.ndarray, targets: np.ndarray, params: AnomalyParams
) -> dict[str, np.ndarray]:
    """Level shifts (steps and drops) ending at each target day: per series x target, the
    shift's start column (-1 if none), ratio, z and the level before it."""
    n, m = values.shape[0], len(targets)
    out = {
        "start": np.full((n, m), -1),
        "ratio": np.ones((n, m)),
        "z": np.zeros((n, m)),
        "before": np.zeros((n, m)),
        "after": np.zeros((n, m)),
    }
    for j, t in enumerate(targets):
        lo = max(t + 1 - (params.shift.search_days + params.shift.baseline_days + 28), 0)
        r = level_shift(values[:, lo : t + 1], dows[lo : t + 1], params.shift)
        recent = (r["start"] >= 0) & (r["days"] <= params.shift_max_days)
        out["start"][:, j] = np.where(recent, r["start"] + lo, -1)
        out["ratio"][:, j] = np.where(recent, r["ratio"], 1.0)
        out["z"][:, j] = np.where(recent, r["z"], 0.0)
        out["before"][:, j] = np.where(recent, r["before"], 0.0)
        out["after"][:, j] = np.where(recent, r["after"], 0.0)
    return out


def score_days(
    daily: pd.DataFrame,
    score_on: list[date],
    *,
    tenants: list[str] | None = None,
    params: AnomalyParams = AnomalyParams(),
    detail: pd.DataFrame | None = None,
    budgets: dict[str, float | None] | None = None,
    infra_through: dict[str, date] | None = None,
) -> pd.DataFrame:
    """`anomaly_scores` rows for each day in `score_on`, from `daily_cost_summary` rows that
    cover at least `WINDOW_DAYS` before the first of them.

    `detail`: extra driver rows from `infra_detail` (cloud service, sub-account, region, k8s
    namespace); `budgets`: monthly budget per tenant id, for the impact threshold;
    `infra_through`: per late source (`cloud`, `k8s`), the newest day with its rows in the
    warehouse (by default the newest in `daily`), which says whether a day's rows of it may
    still be arriving.
    """
    days = list(pd.date_range(min(score_on) - timedelta(days=WINDOW_DAYS), max(score_on)).date)
    if daily.empty:
        daily = pd.DataFrame(columns=["day", "tenant_id", "cost_category", "cost_usd"])
    panel = driver_panel(daily, days, detail=detail)
    if tenants is not None:
        missing = sorted(set(tenants) - set(panel.index.get_level_values("tenant_id")))
        extra = pd.MultiIndex.from_tuples(
            [(t, "tenant") for t in missing], names=["tenant_id", "driver"]
        )
        panel = pd.concat([panel, pd.DataFrame(0.0, index=extra, columns=days)]).sort_index()
    targets = np.array([days.index(d) for d in sorted(score_on)])
    tenant_of = panel.index.get_level_values("tenant_id")
    driver = panel.index.get_level_values("driver")
    values = _started(panel.to_numpy(), np.asarray(tenant_of))
    base = robust_baseline(values, targets, params.tail_quantile)
    actual = np.nan_to_num(values[:, targets])
    expected = np.nan_to_num(base["expected"])
    is_total = np.asarray(driver == "tenant")
    usual_total = pd.DataFrame(np.where(is_total[:, None], expected, 0.0))
    usual_total = usual_total.groupby(np.asarray(tenant_of)).transform("sum").to_numpy()
    min_excess = np.maximum(params.min_excess_share * usual_total, params.min_excess_usd)
    code, ratio, z = severity_codes(
        actual,
        base["expected"],
        base["sigma"],
        min_excess,
        params,
        min_ratio=np.exp(params.tail_mult * base["tail"]),
    )
    # Without the series' own tail: for a series whose calls are tested too (below).
    code_untailed, _, _ = severity_codes(
        actual, base["expected"], base["sigma"], min_excess, params
    )
    enough = base["history"] >= params.min_history_days
    req_values: np.ndarray | None = None
    shift_gated = np.zeros(code.shape, dtype=bool)
    if "requests" in daily and len(daily):
        req = driver_panel(daily, days, "requests").reindex(panel.index, fill_value=0.0)
        req_values = _started(req.to_numpy(), np.asarray(tenant_of))
        # Calls in each target's own window only: a range scores each day as it would alone.
        calls = np.nancumsum(np.nan_to_num(req_values), axis=1)
        before = np.where(targets > WINDOW_DAYS, targets - WINDOW_DAYS - 1, -1)
        in_window = calls[:, targets] - np.where(before >= 0, calls[:, np.maximum(before, 0)], 0.0)
        has_requests = in_window > 0
        rb = robust_baseline(req_values, targets, params.tail_quantile)
        # Counts are Poisson-like: a driver usually making 4 calls may well make 9.
        poisson = np.sqrt(np.nan_to_num(rb["expected"])) + 1.0
        req_code, _, _ = severity_codes(
            np.nan_to_num(req_values[:, targets]),
            rb["expected"],
            np.fmax(rb["sigma"], poisson),
            1.0,
            params,
            thresholds=params.request_thresholds,
            min_ratio=np.exp(params.tail_mult * rb["tail"]),
        )
        # The gate applies to series with calls only. For the tenant total: not when most of
        # its excess is cost without calls (cloud, Kubernetes).
        no_req_cost = daily[daily["cost_category"].isin(["cloud", "k8s", "unattributed"])]
        infra = driver_panel(no_req_cost, days).reindex(panel.index, fill_value=0.0)
        infra_values = _started(infra.to_numpy(), np.asarray(tenant_of))
        ib = robust_baseline(infra_values, targets)
        infra_excess = np.nan_to_num(infra_values[:, targets]) - np.nan_to_num(ib["expected"])
        excess = actual - expected
        infra_driven = is_total[:, None] & (infra_excess >= 0.5 * np.maximum(excess, 1e-12))
        gated = has_requests & ~infra_driven
        # A shift of the tenant total is gated by its calls unless most of its usual cost has
        # none.
        mostly_infra = is_total[:, None] & (
            np.nan_to_num(ib["level"]) >= 0.5 * np.nan_to_num(base["level"])
        )
        shift_gated = has_requests & ~mostly_infra
        # A driver new to the tenant has no usual call count to compare with: its cost share
        # (min_new_driver_share of the tenant's usual day) has to speak for it.
        prior = sum(np.nan_to_num(_lagged(req_values, targets, lag)) for lag in range(1, 29))
        new_driver = (prior == 0) & has_requests
        new_ok = (excess >= params.min_new_driver_share * usual_total) & (
            np.nan_to_num(req_values[:, targets]) >= params.min_new_driver_requests
        )
        # Cost and calls each have to pass their own tail, and cost is calls x cost per call:
        # when the calls are past theirs, the cost's tail (a day of a few expensive calls) has
        # nothing left to explain.
        code = np.where(
            new_driver & ~is_total[:, None],
            np.where(new_ok, code, 0),
            np.where(gated, np.minimum(code_untailed, req_code), code),
        )
    code = np.where(enough, code, 0)
    since = _since(values, base, targets, params.thresholds[0][0])
    kind = np.where(code > 0, "spike", None).astype(object)

    # Sustained steps and drops: the level since the shift vs the level before it.
    dows = np.array([d.weekday() for d in days])
    # NaN before the tenant started: days before the data began are not a level of zero.
    shifts = _shift_scan(values, dows, targets, params)
    shift_days = np.where(shifts["start"] >= 0, targets[None, :] - shifts["start"] + 1, 0)
    # Impact of a shift: (level after - level before) x days since it started (weekday-adjusted
    # medians, so one expensive day does not turn a drop into a rise).
    shift_usd = (shifts["after"] - shifts["before"]) * shift_days
    # A shift from (almost) nothing is a new driver, not a step: its spike row says so.
    is_shift = (shifts["start"] >= 0) & enough & (code == 0) & (shifts["before"] >= min_excess)
    if req_values is not None and (is_shift & shift_gated).any():
        # LLM spend is calls x cost per call. A driver making a few expensive calls a day has a
        # median day that jumps with the count of its calls (and is zero on quiet days), so a
        # shift in its cost stands only when its calls, or its cost per call, shifted the same
        # way, each tested with the noise it has.
        up = shifts["ratio"] > 1
        c_ratio, c_z = count_shift(req_values, shifts["start"], targets, dows, params.shift)
        calls_moved = (
            np.where(up, c_ratio >= params.shift.min_ratio, c_ratio <= 1 / params.shift.min_ratio)
            & (np.abs(c_z) >= params.shift.min_z)
            & (np.sign(c_z) == np.where(up, 1, -1))
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            per_call = np.where(req_values > 0, values / req_values, np.nan)
        pc = _shift_scan(per_call, dows, targets, params)
        price_moved = (pc["start"] >= 0) & ((pc["ratio"] > 1) == up)
        is_shift &= ~shift_gated | calls_moved | price_moved
    # A shift is reported while it lasts: the scored day itself is nearer the new level than the
    # old one (weekday-adjusted). A series that is back is no longer shifted, whatever the median
    # of the days since the start says.
    f_today = np.where(base["factors"][0] > 0, base["factors"][0], 1.0)
    today = actual / f_today
    is_shift &= np.abs(today - shifts["after"]) < np.abs(today - shifts["before"])
    drop = is_shift & (shifts["ratio"] < 1)
    step = is_shift & (shifts["ratio"] > 1)
    kind = np.where(step, "step", np.where(drop, "drop", kind))
    code = np.where(step | drop, RANK["high"], code)
    since = np.where(step | drop, shift_days - 1, since)

    # One-day dips of the tenant total (kind "drop" too, detector "robust"): spend under half its
    # usual value for the weekday, past the series' own lower tail.
    dip_ratio, dip_z = params.dip_threshold
    r_dip = np.minimum(dip_ratio, np.exp(-params.tail_mult * base["tail_down"]))
    dip = (
        is_total[:, None]
        & enough
        & (code == 0)
        & (expected > 0)
        & (actual < r_dip * expected)
        & (np.nan_to_num(z) <= dip_z)
        & (expected - actual >= min_excess)
    )
    # Credits and refunds (negative cost rows) lower a day's total with no fall in usage: a dip
    # they make at least half of is none.
    target_days = [days[t] for t in targets]
    credit = _credits(daily, tenant_of, target_days)
    dip &= credit < 0.5 * (expected - actual)
    # A tenant with no cost at all on the day: its rows are more likely missing (a late or
    # failed export) than all its spend stopped. Kept at `low`, with that reason; an empty
    # stretch that lasts is the level-shift test's drop after a week.
    empty = dip & (actual == 0)
    # A dip mostly of cloud (or Kubernetes) rows on a day the source may still be filling in:
    # kept at `low` until `infra_settle_days` later days have its rows (the daily close and the
    # late-data sensor score the day again as they land). `arriving` names the source.
    arriving = np.full(code.shape, "", dtype=object)
    for source in LATE_SOURCES:
        through = (infra_through or {}).get(source)
        unsettled = _unsettled(daily, target_days, source, through, params.infra_settle_days)
        if not (dip & unsettled[None, :]).any():
            continue  # no dip on a day the source may still be filling in: nothing to weigh
        short = -_source_excess(daily, days, targets, tenant_of, source)
        late = dip & unsettled[None, :] & (short >= 0.5 * (expected - actual))
        arriving = np.where(late & (arriving == ""), source, arriving)
    held = arriving != ""
    kind = np.where(dip, "drop", kind)
    code = np.where(dip, np.where(empty | held, RANK["low"], RANK["high"]), code)
    # Low since: the days before at or under 1 / the lowest spike ratio (1.5x) of their usual
    # value, as a spike is elevated since the days above 1.5x.
    since = np.where(dip, _since(values, base, targets, 1 / params.thresholds[0][0]), since)

    # Dollar impact since the start: excess over the usual level on each of those days.
    impact = np.zeros(code.shape)
    for lag in range(0, 15):
        past = np.nan_to_num(_lagged(values, targets, lag))
        usual = np.nan_to_num(base["level"] * base["factors"][(-lag) % 7])
        impact += np.where(lag <= since, past - usual, 0.0)
    impact = np.where(step | drop, shift_usd, impact)
    budgets = budgets or {}
    budget = np.array([budgets.get(t) or np.nan for t in tenant_of], dtype=float)
    # Without a budget, the usual month is 30 weekday-neutral usual days of the tenant total:
    # today's weekday expectation would halve the threshold on every weekend.
    usual_level = pd.DataFrame(np.where(is_total[:, None], np.nan_to_num(base["level"]), 0.0))
    usual_level = usual_level.groupby(np.asarray(tenant_of)).transform("sum").to_numpy()
    month = np.where(np.isnan(budget)[:, None], 30.0 * usual_level, budget[:, None])
    threshold = impact_threshold(month, params)
    small = (code >= RANK["high"]) & (np.abs(impact) < threshold)
    code = np.where(small, RANK["low"], code)
    # Only a spike of the tenant's own total can be "critical" by ratio; a step or a drop is
    # critical when its impact is ten times the threshold.
    big_shift = (step | drop) & (np.abs(impact) >= 10 * threshold)
    code = np.where(big_shift, RANK["critical"], code)
    kind = np.where(code > 0, kind, None)
    impact = np.where(code > 0, impact, np.nan)

    # A driver is scored from its first non-zero day on (its tenant's total always), so a day
    # scored within a range has the rows it has when scored alone.
    nonzero = np.nan_to_num(values) != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), values.shape[1])
    scored = is_total[:, None] | (first[:, None] <= targets[None, :])
    n, m = code.shape
    out = pd.DataFrame(
        {
            "day": np.tile(np.array(days, dtype=object)[targets], n),
            "tenant_id": np.repeat(np.asarray(tenant_of), m),
            "driver": np.repeat(np.asarray(driver), m),
            "actual_usd": actual.ravel(),
            "expected_usd": base["expected"].ravel(),
            "ratio": ratio.ravel(),
            "score": z.ravel(),
            "multivariate_score": np.nan,
            "severity": np.array(SEVERITIES)[code.ravel()],
            "detector": np.where(code > 0, "robust", None).astype(object).ravel(),
            "kind": kind.ravel(),
            "impact_usd": impact.ravel(),
            "shift_ratio": shifts["ratio"].ravel(),
            "since_n": since.ravel(),
            "history_n": base["history"].ravel(),
            "enough_": enough.ravel(),
            "demoted_": small.ravel(),
            "threshold_": threshold.ravel(),
            "dip_": dip.ravel(),
            "arriving_": arriving.ravel(),
        }
    )
    out = out[scored.ravel()].reset_index(drop=True)
    shifted = out["kind"].isin(["step", "drop"]) & ~out["dip_"]
    out["detector"] = np.where(shifted, "level_shift", out["detector"])
    out["since_day"] = [
        d - timedelta(days=int(k)) if s != "none" else None
        for d, k, s in zip(out["day"], out["since_n"], out["severity"], strict=True)
    ]
    out["reason"] = _reasons(out, params)
    # A new driver's ratio is unbounded: stored as null, the reason says "new".
    out["ratio"] = out["ratio"].replace([np.inf, -np.inf], np.nan)
    drop_cols = ["since_n", "history_n", "enough_", "shift_ratio", "demoted_", "threshold_"]
    drop_cols += ["dip_", "arriving_"]
    return ANOMALY_SCORES.conform(out.drop(columns=drop_cols))


COARSE_DRIVERS = {"provider": 2, "category": 2, "cluster": 2, "region": 1, "sub_account": 1}
TENANT_RANK = 3


def driver_rank(drivers: pd.Series) -> pd.Series:
    """How broad each driver is: 0 a service, namespace, agent or model; 1 a region or account;
    2 a provider, service category or cluster; 3 the tenant total."""
    rank = drivers.str.extract(r"^([a-z_]+):", expand=False).map(COARSE_DRIVERS).fillna(0)
    return rank.where(drivers != "tenant", TENANT_RANK).astype(int)


def episode_speakers(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per group of `keys` (a tenant's drivers flagged from the same start): of those
    with at least half the group's largest dollar impact, the most specific driver, then the
    largest impact. A namespace that makes most of its cluster's jump speaks for it, so the
    alert names the namespace first."""
    size = scores["impact_usd"].abs().fillna(0)
    largest = size.groupby([scores[k] for k in keys]).transform("max")
    ranked = scores.assign(_rank=driver_rank(scores["driver"]), _size=size)
    ranked = ranked[size >= 0.5 * largest]
    ranked = ranked.sort_values(["_rank", "_size"], ascending=[True, False])
    return ranked.drop_duplicates(keys).drop(columns=["_rank", "_size"])


def _reasons(out: pd.DataFrame, params: AnomalyParams) -> list[str]:
    flagged = out["severity"] != "none"
    # The largest driver: among those with at least half the largest excess, the most specific
    # (a service, namespace, agent or model before a region or account, before a provider,
    # service category or cluster).
    coarse = driver_rank(out["driver"])
    cand = out[flagged & (out["driver"] != "tenant")].assign(
        excess=lambda f: (f["actual_usd"] - f["expected_usd"]).abs(),
        coarse=coarse,
    )
    largest = cand.groupby(["tenant_id", "day"])["excess"].transform("max")
    top = (
        cand[cand["excess"] >= 0.5 * largest]
        .assign(excess=lambda f: f["actual_usd"] - f["expected_usd"])
        .sort_values(["coarse", "excess"], ascending=[True, False])
        .drop_duplicates(["tenant_id", "day"])
        .set_index(["tenant_id", "day"])
    )
    # Behind a dip of the tenant total (no driver of it is flagged): the most specific of the
    # drivers with at least half the largest shortfall.
    dip_days = out.loc[out["dip_"], ["tenant_id", "day"]].drop_duplicates()
    fell = out[out["driver"] != "tenant"].merge(dip_days, on=["tenant_id", "day"])
    fell = fell.assign(
        excess=fell["actual_usd"] - fell["expected_usd"], coarse=driver_rank(fell["driver"])
    )
    fell = fell[fell["excess"] < 0]
    deepest = fell.groupby(["tenant_id", "day"])["excess"].transform("min")
    top_down = (
        fell[fell["excess"] <= 0.5 * deepest]
        .sort_values(["coarse", "excess"])
        .drop_duplicates(["tenant_id", "day"])
        .set_index(["tenant_id", "day"])
    )
    reasons = []
    rank = dict(zip(out.index, coarse, strict=True))
    for i, row in zip(out.index, out.itertuples(index=False), strict=True):
        if not row.enough_:
            reasons.append(
                f"not enough history to score ({row.history_n} of {params.min_history_days} "
                "days needed in the last 28)"
            )
            continue
        if row.severity == "none":
            reasons.append("within the usual range")
            continue
        prefix = f"below the alert impact of ${row.threshold_:,.2f}: " if row.demoted_ else ""
        weekday = WEEKDAYS[row.day.weekday()]
        if row.dip_ and row.actual_usd == 0:
            text = (
                f"{row.driver} has no cost on {weekday} {row.day} "
                f"(usual ${row.expected_usd:,.2f}): "
                "the day's rows may be missing, so it is not alerted as a drop"
            )
        elif row.arriving_:
            text = (
                f"{row.driver} cost ${row.actual_usd:,.2f} fell to {row.ratio:.2f}x its usual "
                f"${row.expected_usd:,.2f} for a {weekday}, mostly in its {row.arriving_} rows, "
                f"which may still be arriving (fewer than {params.infra_settle_days} later days "
                f"of {LATE_SOURCES[row.arriving_]}): not alerted until they settle"
            )
        elif row.dip_:
            text = (
                f"{row.driver} cost ${row.actual_usd:,.2f} fell to {row.ratio:.2f}x its usual "
                f"${row.expected_usd:,.2f} for a {weekday} "
                f"(-${row.expected_usd - row.actual_usd:,.2f}), low since {row.since_day}; "
                f"impact so far ${row.impact_usd:+,.2f}"
            )
        elif row.kind in ("step", "drop"):
            word = "rose" if row.kind == "step" else "dropped"
            text = (
                f"{row.driver} {word} to {row.shift_ratio:.2f}x its usual level since "
                f"{row.since_day} and stayed there: ${row.actual_usd:,.2f} on {weekday} "
                f"vs usual ${row.expected_usd:,.2f}; impact so far ${row.impact_usd:+,.2f}"
            )
        elif np.isinf(row.ratio):
            text = (
                f"{row.driver} is new for this tenant: ${row.actual_usd:,.2f} on {weekday} "
                f"{row.day} with no spend in the weeks before, since {row.since_day}"
            )
        elif np.isfinite(row.ratio) and row.ratio >= params.thresholds[0][0]:
            text = (
                f"{row.driver} cost ${row.actual_usd:,.2f} is {row.ratio:.1f}x its usual "
                f"${row.expected_usd:,.2f} for a {weekday} "
                f"(+${row.actual_usd - row.expected_usd:,.2f}), elevated since {row.since_day}; "
                f"impact so far ${row.impact_usd:+,.2f}"
            )
        else:
            text = (
                f"{row.driver} cost ${row.actual_usd:,.2f} vs usual ${row.expected_usd:,.2f} "
                f"for a {weekday}, since {row.since_day}; impact so far ${row.impact_usd:+,.2f}"
            )
        key = (row.tenant_id, row.day)
        if row.dip_ and key in top_down.index:
            t = top_down.loc[key]
            text += f"; largest driver {t['driver']} (-${-t['excess']:,.2f}, {t['ratio']:.2f}x)"
            reasons.append(prefix + text)
            continue
        # The tenant total and a coarse driver (provider, category, cluster, region, account)
        # name the most specific driver behind them: the service, namespace, agent or model.
        if key in top.index and (row.driver == "tenant" or rank[i] > 0):
            t = top.loc[key]
            if t["driver"] != row.driver and (row.driver == "tenant" or t["coarse"] < rank[i]):
                text += f"; largest driver {t['driver']} (+${t['excess']:,.2f}, {t['ratio']:.1f}x)"
        reasons.append(prefix + text)
    return reasons
