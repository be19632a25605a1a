"""Anomaly scores per tenant-day, on total cost and on its drivers (each agent, each model).

Robust, seasonality-aware baseline (all series at once, as matrices of series x days). For day t:

- weekday profile: for each weekday, the median of that weekday over the 8 weeks before t,
  normalised to mean 1 — a Saturday is compared with Saturdays;
- level: the median of the 14 days before t, each divided by its weekday factor;
- expected(t) = level x factor(weekday of t); spread = 1.4826 x MAD of the 28 deseasonalized
  days before t. Medians, not means: a spike cannot inflate the baseline it is measured against,
  and an incident must last more than a week before it starts to become "usual".

Severity needs three things at once: the ratio actual / expected, a robust z-score, and an
excess in dollars that matters for the tenant (a share of its usual daily total). A series with
fewer than `min_history_days` started days in the last 28 (a new tenant, agent or model) is
scored `none` with the reason "not enough history", so new tenants are not flagged for being new.

Multivariate view (tenant level): an `IsolationForest` over each tenant-day's deviations from its
own baseline — cost, requests, tokens per request, cost per request — plus the shift of its model
mix, trained on the previous 28 days of all tenants. It is reported as `multivariate_score` and
can raise a tenant's severity to at most `multivariate_max_severity` on its own.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from cost_pipeline.catalog import ANOMALY_SCORES

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
    # The excess must be at least this share of the tenant's usual daily total, and this much.
    min_excess_share: float = 0.02
    min_excess_usd: float = 0.05
    rel_sigma_floor: float = 0.10
    min_new_driver_share: float = 0.25
    min_new_driver_requests: int = 5
    multivariate: bool = True
    multivariate_quantile: float = 0.995
    multivariate_max_severity: str = "medium"


def _lagged(values: np.ndarray, targets: np.ndarray, lag: int) -> np.ndarray:
    idx = targets - lag
    out = values[:, np.clip(idx, 0, None)]
    out[:, idx < 0] = np.nan
    return out


def robust_baseline(values: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Expected value, spread and usable-history count for columns `targets` of `values`.

    `values` is (series x days) with NaN before each series starts; results are (series x m).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        profile = np.stack(
            [
                np.nanmedian(
                    np.stack([_lagged(values, targets, 7 * k - j) for k in range(1, 9)]), axis=0
                )
                for j in range(7)
            ]
        )  # (7, n, m): j = weekday offset from the target day
        mean = np.nanmean(profile, axis=0)
        factors = profile / np.where(mean > 1e-9, mean, np.nan)
        # A weekday that is usually empty must not make every other day "infinitely" busy.
        factors = np.clip(np.nan_to_num(factors, nan=1.0), 0.05, 7.0)
        deseason = np.stack(
            [_lagged(values, targets, lag) / factors[(-lag) % 7] for lag in range(1, 29)]
        )  # (28, n, m)
        # The median alone says "usually zero" for a driver used on a third of days; a mean of
        # the days under the 85th percentile still ignores an incident of up to four days.
        q85 = np.nanpercentile(deseason, 85, axis=0)
        trimmed = np.nanmean(np.where(deseason <= q85, deseason, np.nan), axis=0)
        level = np.fmax(np.nanmedian(deseason[:14], axis=0), trimmed)
        center = np.nanmedian(deseason, axis=0)
        mad = np.nanmedian(np.abs(deseason - center), axis=0)
        history = np.sum(~np.isnan(deseason), axis=0)
    return {
        "expected": level * factors[0],
        "level": level,
        "factors": factors,
        "sigma": 1.4826 * mad * factors[0],
        "history": history,
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(severity code 0-4, ratio, z) for arrays of the same shape.

    A driver with no usual value (a model or agent new to an established tenant) has ratio inf.
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
        hit = excess_ok & (np.nan_to_num(ratio) >= r_min) & (np.nan_to_num(z) >= z_min)
        code = np.where(hit, level, code)
    return code, ratio, z


def driver_panel(daily: pd.DataFrame, days: list[date], value: str = "cost_usd") -> pd.DataFrame:
    """Series (tenant_id, driver) x days of `value`: the tenant total, each agent, each model."""
    frame = daily[(daily["day"] >= days[0]) & (daily["day"] <= days[-1])]
    parts = [frame.assign(driver="tenant")]
    if "agent_id" in frame:
        agents = frame[frame["agent_id"].notna()]
        parts.append(agents.assign(driver="agent:" + agents["agent_id"].astype(str)))
    if "model_or_service" in frame:
        llm = frame[(frame["cost_category"] == "llm") & frame["model_or_service"].notna()]
        parts.append(llm.assign(driver="model:" + llm["model_or_service"].astype(str)))
    long = pd.concat(parts, ignore_index=True)
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


def _since(values: np.ndarray, base: dict[str, np.ndarray], targets: np.ndarray, r_min: float):
    """Days (0-13) the series was already elevated before each target, consecutively."""
    run = np.ones(values.shape[0:1] + targets.shape, dtype=bool)
    count = np.zeros(run.shape, dtype=int)
    for lag in range(1, 15):
        past = _lagged(values, targets, lag)
        usual = base["level"] * base["factors"][(-lag) % 7]
        with np.errstate(invalid="ignore"):
            run &= np.nan_to_num(past) > r_min * np.nan_to_num(usual)
        count += run
    return count


def _multivariate(
    tenant_cost: pd.DataFrame,
    requests: pd.DataFrame,
    tokens: pd.DataFrame,
    mix_shift: np.ndarray,
    targets: np.ndarray,
    params: AnomalyParams,
) -> tuple[np.ndarray, np.ndarray]:
    """(score, severity code) per tenant x target from an IsolationForest on deviations."""
    cols = np.arange(max(targets.min() - 28, 0), targets.max() + 1)

    def dev(panel: pd.DataFrame) -> np.ndarray:
        v = _started(panel.to_numpy())
        b = robust_baseline(v, cols)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log1p(v[:, cols]) - np.log1p(np.nan_to_num(b["expected"]))

    d_cost, d_req, d_tok = dev(tenant_cost), dev(requests), dev(tokens)
    feats = np.stack([d_cost, d_req, d_tok - d_req, d_cost - d_req, mix_shift[:, cols]], axis=-1)
    feats = np.nan_to_num(feats)
    score = np.full((feats.shape[0], len(targets)), np.nan)
    code = np.zeros(score.shape, dtype=int)
    col_of = {c: i for i, c in enumerate(cols)}
    ok = np.isfinite(tenant_cost.to_numpy()).all()
    for start in range(0, len(targets), 7):
        block = targets[start : start + 7]
        train_cols = [col_of[c] for c in range(block[0] - 28, block[0]) if c in col_of]
        if len(train_cols) < 7 or feats.shape[0] < 2 or not ok:
            continue
        train = feats[:, train_cols].reshape(-1, feats.shape[-1])
        forest = IsolationForest(n_estimators=100, random_state=0, n_jobs=1).fit(train)
        cut = np.quantile(-forest.score_samples(train), params.multivariate_quantile)
        for i, t in enumerate(block, start=start):
            s = -forest.score_samples(feats[:, col_of[t]])
            score[:, i] = s
            code[:, i] = np.where(s > cut, RANK[params.multivariate_max_severity], 0)
    return score, code


def _mix_shift(daily: pd.DataFrame, days: list[date], tenants: pd.Index) -> np.ndarray:
    """Per tenant and day: half the L1 distance between the day's model cost shares and the
    shares over the 14 days before it (0 = same mix, 1 = entirely different models)."""
    panel = driver_panel(daily, days)
    models = panel[panel.index.get_level_values("driver").str.startswith("model:")]
    out = np.zeros((len(tenants), len(days)))
    if models.empty:
        return out
    v = models.to_numpy()
    trailing = pd.DataFrame(v.T).rolling(14, min_periods=1).sum().shift(1).to_numpy().T
    tenant_of = models.index.get_level_values("tenant_id")
    by_tenant = pd.DataFrame(v).groupby(np.asarray(tenant_of)).transform("sum").to_numpy()
    trail_tot = pd.DataFrame(trailing).groupby(np.asarray(tenant_of)).transform("sum").to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(v / by_tenant - trailing / trail_tot)
    diff = pd.DataFrame(np.nan_to_num(diff)).groupby(np.asarray(tenant_of)).sum() / 2
    return diff.reindex(tenants, fill_value=0.0).to_numpy()


def score_days(
    daily: pd.DataFrame,
    score_on: list[date],
    *,
    tenants: list[str] | None = None,
    params: AnomalyParams = AnomalyParams(),
) -> pd.DataFrame:
    """`anomaly_scores` rows for each day in `score_on`, from `daily_cost_summary` rows that
    cover at least `WINDOW_DAYS` before the first of them."""
    days = list(pd.date_range(min(score_on) - timedelta(days=WINDOW_DAYS), max(score_on)).date)
    if daily.empty:
        daily = pd.DataFrame(columns=["day", "tenant_id", "cost_category", "cost_usd"])
    panel = driver_panel(daily, days)
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
    base = robust_baseline(values, targets)
    actual = np.nan_to_num(values[:, targets])
    is_total = np.asarray(driver == "tenant")
    usual_total = pd.DataFrame(np.where(is_total[:, None], np.nan_to_num(base["expected"]), 0.0))
    usual_total = usual_total.groupby(np.asarray(tenant_of)).transform("sum").to_numpy()
    min_excess = np.maximum(params.min_excess_share * usual_total, params.min_excess_usd)
    code, ratio, z = severity_codes(actual, base["expected"], base["sigma"], min_excess, params)
    enough = base["history"] >= params.min_history_days
    if "requests" in daily:
        req = driver_panel(daily, days, "requests").reindex(panel.index, fill_value=0.0)
        req_values = _started(req.to_numpy(), np.asarray(tenant_of))
        rb = robust_baseline(req_values, targets)
        # Counts are Poisson-like: a driver usually making 4 calls may well make 9.
        poisson = np.sqrt(np.nan_to_num(rb["expected"])) + 1.0
        req_code, _, _ = severity_codes(
            np.nan_to_num(req_values[:, targets]),
            rb["expected"],
            np.fmax(rb["sigma"], poisson),
            1.0,
            params,
            thresholds=params.request_thresholds,
        )
        # A driver new to the tenant has no usual call count to compare with: its cost share
        # (min_new_driver_share of the tenant's usual day) has to speak for it.
        prior = sum(np.nan_to_num(_lagged(req_values, targets, lag)) for lag in range(1, 29))
        new_driver = prior == 0
        new_ok = (
            (actual - np.nan_to_num(base["expected"])) >= params.min_new_driver_share * usual_total
        ) & (np.nan_to_num(req_values[:, targets]) >= params.min_new_driver_requests)
        code = np.where(
            new_driver & ~is_total[:, None], np.where(new_ok, code, 0), np.minimum(code, req_code)
        )
    code = np.where(enough, code, 0)
    since = _since(values, base, targets, params.thresholds[0][0])

    mv_score = np.full(code.shape, np.nan)
    detector = np.where(code > 0, "robust", None).astype(object)
    if params.multivariate and "requests" in daily:
        totals = panel[is_total]
        tenant_ids = totals.index.get_level_values("tenant_id")
        req = driver_panel(daily, days, "requests").xs("tenant", level="driver")
        tok = daily.assign(tokens=daily["input_tokens"] + daily["output_tokens"])
        tok = driver_panel(tok, days, "tokens").xs("tenant", level="driver")
        shift = _mix_shift(daily, days, tenant_ids)
        s, c = _multivariate(
            totals.droplevel("driver"),
            req.reindex(tenant_ids, fill_value=0.0),
            tok.reindex(tenant_ids, fill_value=0.0),
            shift,
            targets,
            params,
        )
        c = np.where(enough[is_total], c, 0)
        mv_score[is_total] = s
        robust = code[is_total]
        detector[is_total] = np.select(
            [(robust > 0) & (c > 0), c > robust, robust > 0],
            ["robust+multivariate", "multivariate", "robust"],
            None,
        )
        code[is_total] = np.maximum(robust, c)

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
            "multivariate_score": mv_score.ravel(),
            "severity": np.array(SEVERITIES)[code.ravel()],
            "detector": detector.ravel(),
            "since_n": since.ravel(),
            "history_n": base["history"].ravel(),
            "enough_": enough.ravel(),
        }
    )
    out["since_day"] = [
        d - timedelta(days=int(k)) if s != "none" else None
        for d, k, s in zip(out["day"], out["since_n"], out["severity"], strict=True)
    ]
    out["reason"] = _reasons(out, params)
    # A new driver's ratio is unbounded: stored as null, the reason says "new".
    out["ratio"] = out["ratio"].replace([np.inf, -np.inf], np.nan)
    return ANOMALY_SCORES.conform(out.drop(columns=["since_n", "history_n", "enough_"]))


def _reasons(out: pd.DataFrame, params: AnomalyParams) -> list[str]:
    flagged = out["severity"] != "none"
    top = (
        out[flagged & (out["driver"] != "tenant")]
        .assign(excess=lambda f: f["actual_usd"] - f["expected_usd"])
        .sort_values("excess", ascending=False)
        .drop_duplicates(["tenant_id", "day"])
        .set_index(["tenant_id", "day"])
    )
    reasons = []
    for row in out.itertuples(index=False):
        if not row.enough_:
            reasons.append(
                f"not enough history to score ({row.history_n} of {params.min_history_days} "
                "days needed in the last 28)"
            )
            continue
        if row.severity == "none":
            reasons.append("within the usual range")
            continue
        weekday = WEEKDAYS[row.day.weekday()]
        if np.isinf(row.ratio):
            text = (
                f"{row.driver} is new for this tenant: ${row.actual_usd:,.2f} on {weekday} "
                f"{row.day} with no spend in the weeks before, since {row.since_day}"
            )
        elif np.isfinite(row.ratio) and row.ratio >= params.thresholds[0][0]:
            text = (
                f"{row.driver} cost ${row.actual_usd:,.2f} is {row.ratio:.1f}x its usual "
                f"${row.expected_usd:,.2f} for a {weekday} "
                f"(+${row.actual_usd - row.expected_usd:,.2f}), elevated since {row.since_day}"
            )
        else:
            text = (
                f"{row.driver}: unusual mix of cost, requests, tokens per request and models "
                f"(multivariate score {row.multivariate_score:.2f}); cost ${row.actual_usd:,.2f} "
                f"vs usual ${row.expected_usd:,.2f}"
            )
        key = (row.tenant_id, row.day)
        if row.driver == "tenant" and key in top.index:
            t = top.loc[key]
            text += f"; largest driver {t['driver']} (+${t['excess']:,.2f}, {t['ratio']:.1f}x)"
        reasons.append(text)
    return reasons
