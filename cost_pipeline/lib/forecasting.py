"""Month-end spend forecasts per tenant and for the company, with 80 % and 95 % intervals.

How a forecast is made (all series at once, as one matrix of days x series):

1. Pooled model (the default). The tenants' spend is pooled (tenants present from the start
   only, so a newcomer does not read as everyone's growth) and a reference curve is fitted to
   it: scikit-learn `HuberRegressor` of log(pool) on day-of-week dummies and a time trend, so
   weekly seasonality and growth come from thousands of calls a day, robust to the pool's own
   incidents (`reference_curve`). Each series is its level x that curve. The level is its
   spend / curve over up to `level_days` days (dense series' days above `spike_cap` x the level
   capped, so a past incident is not projected), moved toward its last `recent_days` level by
   the evidence of a change (empirical-Bayes / positive-part James-Stein shrinkage with
   compound-Poisson noise estimated from the series itself). A small tenant with a few
   heavy-tailed calls a week is thus forecast from months of its history, not from its last
   lucky or quiet week; a real step change is followed within days.
2. Own-series models: `dow_level_7` / `dow_level_28` (mean of the last 7 / 28 days times the
   series' own day-of-week factors) and `dow_trend_56` (scikit-learn `LinearRegression` on time
   + day-of-week dummies over the last 56 days, one multi-output fit for all series).
3. Model choice per series: a rolling-origin backtest on the series' own history (origins 7 to
   42 days before the as-of day, horizon = the days left in the month). An own-series model
   replaces the pooled one only when it is clearly better (below `own_model_margin` x or
   `own_model_abs_margin` below the pooled error) and the series is dense: on a sparse series
   the backtest measures call-level noise, and picking its winner adds that noise.
4. Intervals on the remaining spend, lognormal (right-skewed like a sum of few heavy-tailed
   calls) with the mean of the forecast. Pooled: variance = compound-Poisson noise of the
   remaining days + the level's estimation error + a relative floor; own models: their backtest
   error and daily residual noise. Scaled by `interval_scale` / `own_interval_scale`
   (calibrated on tuning seeds by `make eval`); never below the spend already incurred.

Fallbacks: a series with fewer than `min_history_days` days since its first non-zero day
(a tenant that started this week) gets `short_history`: the mean of its active days times the
days left, with a wide `short_history_rel_sigma` interval. A series that is zero over the whole
window gets `zero`: spend to date, zero-width interval. The naive run-rate (spend to date / days
elapsed x days in month) is always computed and kept beside the forecast.
"""

from __future__ import annotations

import calendar
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import HuberRegressor, LinearRegression

from cost_pipeline.catalog import COST_FORECASTS
from cost_pipeline.lib.periods import COMPANY

Z80 = 1.2815515655446004
Z95 = 1.959963984540054
OWN_MODELS = ("dow_level_7", "dow_level_28", "dow_trend_56")
MODELS = ("pooled", *OWN_MODELS)
HISTORY_DAYS = 182


@dataclass(frozen=True)
class ForecastParams:
    min_history_days: int = 14
    # Pooled model: the reference curve is fitted on this many days of the pool.
    pool_fit_days: int = 119
    min_pool_days: int = 21
    # Level over this many started days; the recent level over `recent_days` replaces it in
    # proportion to the evidence of a change (positive-part James-Stein, `shrink_strength`).
    level_days: int = 182
    recent_days: int = 7
    shrink_strength: float = 16.0
    # Dense series (few zero days, low relative noise): days above `spike_cap` x the level
    # are capped, so an incident in the history is not projected.
    spike_cap: float = 3.0
    dense_max_zero_share: float = 0.05
    dense_max_rel_noise: float = 0.5
    # An own-series model replaces the pooled one only if its backtest error (mean absolute
    # relative error of the horizon sum) is below `own_model_margin` x the pooled model's or
    # `own_model_abs_margin` below it.
    backtest_origins: tuple[int, ...] = (7, 14, 21, 28, 35, 42)
    own_model_margin: float = 0.3
    own_model_abs_margin: float = 0.1
    interval_scale: float = 1.2
    own_interval_scale: float = 2.0
    rel_sigma_floor: float = 0.03
    min_rel_sigma: float = 0.02
    short_history_rel_sigma: float = 0.5


def daily_matrix(
    daily: pd.DataFrame, start: date, end: date, *, key: str = "tenant_id"
) -> pd.DataFrame:
    """Cost per day (columns, every day from start to end) and series (rows), zeros filled."""
    days = pd.date_range(start, end, freq="D").date
    if daily.empty:
        return pd.DataFrame(columns=days, dtype="float64")
    frame = daily[(daily["day"] >= start) & (daily["day"] <= end)]
    wide = frame.pivot_table(index=key, columns="day", values="cost_usd", aggfunc="sum")
    return wide.reindex(columns=days, fill_value=0.0).fillna(0.0).astype("float64")


def _dow_factors(y: np.ndarray, dows: np.ndarray) -> np.ndarray:
    """Per series and weekday (n, 7): mean of that weekday over the window / overall mean."""
    overall = np.nanmean(y, axis=1, keepdims=True)
    out = np.ones((y.shape[0], 7))
    for d in range(7):
        cols = dows == d
        if cols.any():
            out[:, d] = np.nanmean(y[:, cols], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / overall
    out[~np.isfinite(out)] = 1.0
    return out


def _predict(model: str, y: np.ndarray, dows: np.ndarray, future_dows: np.ndarray) -> np.ndarray:
    """Daily predictions (n, h) of an own-series model from history `y` (n, t; NaN before a
    series starts)."""
    n, h = y.shape[0], len(future_dows)
    if h == 0:
        return np.zeros((n, 0))
    window = y[:, -56:]
    factors = _dow_factors(window, dows[-56:])
    with np.errstate(invalid="ignore"):
        if model in ("dow_level_7", "dow_level_28"):
            k = 7 if model == "dow_level_7" else 28
            recent, recent_dows = y[:, -k:], dows[-k:]
            # Deseasonalize before averaging so a partial week does not bias the level.
            level = np.nanmean(recent / factors[:, recent_dows], axis=1)
            pred = level[:, None] * factors[:, future_dows]
        else:
            t = np.arange(window.shape[1], dtype=float)
            x = np.column_stack([t, np.eye(7)[dows[-56:]][:, 1:]])
            target = np.nan_to_num(window).T
            reg = LinearRegression().fit(x, target)
            tf = np.arange(window.shape[1], window.shape[1] + h, dtype=float)
            xf = np.column_stack([tf, np.eye(7)[future_dows][:, 1:]])
            pred = reg.predict(xf).T
    pred = np.nan_to_num(pred, nan=0.0)
    return np.clip(pred, 0.0, None)


def _cap_spikes(values: np.ndarray, cap: float) -> np.ndarray:
    """Cap each day at `cap` x the trailing 28-day 90th percentile of the days since the series
    started (NaN before; a percentile, not the median, so the busy days of a series busy on two
    days a week are not capped); days with fewer than 7 started days behind them, or a
    percentile of zero, are left as they are."""
    q90 = pd.DataFrame(values.T).rolling(28, min_periods=7).quantile(0.9).to_numpy().T
    limit = np.where(np.isnan(q90) | (q90 <= 0), np.inf, q90 * cap)
    return np.minimum(values, limit)


def reference_curve(
    pool: np.ndarray, dows: np.ndarray, future_dows: np.ndarray, params: ForecastParams
) -> tuple[np.ndarray, np.ndarray]:
    """(curve over the history days, curve over the future days) of the pooled spend.

    A robust (scikit-learn `HuberRegressor`) fit of log(pool) on day-of-week dummies and, with
    six weeks or more of pool, a linear time trend (= exponential growth), over the last
    `pool_fit_days` days with spend. With fewer than `min_pool_days` such days the curve is
    flat (1.0), which turns the pooled model into a plain mean of the series' own days.
    """
    t = len(pool)
    idx = np.flatnonzero(pool > 0)
    idx = idx[idx >= t - params.pool_fit_days]
    if len(idx) < params.min_pool_days:
        return np.ones(t), np.ones(len(future_dows))

    def design(steps: np.ndarray, weekdays: np.ndarray) -> np.ndarray:
        cols = [np.eye(7)[weekdays][:, 1:]]
        if idx[-1] - idx[0] >= 42:
            cols.insert(0, (steps - t)[:, None] / 28.0)
        return np.column_stack(cols)

    steps = np.arange(t + len(future_dows), dtype=float)
    reg = HuberRegressor(alpha=0.0, max_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(design(steps[idx], dows[idx]), np.log(pool[idx]))
    curve = np.exp(reg.predict(design(steps, np.concatenate([dows, future_dows]))))
    return curve[:t], curve[t:]


def _pooled(
    y: np.ndarray,
    pool: np.ndarray,
    dows: np.ndarray,
    future_dows: np.ndarray,
    params: ForecastParams,
) -> dict[str, np.ndarray]:
    """The pooled model: each series is its level x the reference curve of the pool.

    level = (capped) spend / curve over the series' last `level_days` started days, moved toward
    the level of its last `recent_days` by the evidence of a change: w = max(0, 1 - c / z^2),
    z the change over its standard error under compound-Poisson noise (variance = phi x mean,
    phi estimated from the series' own days). Sparse series (a few calls a week) thus keep
    their long-run level; a real step change is followed within days.
    """
    curve, future = reference_curve(pool, dows, future_dows, params)
    t = y.shape[1]
    window = ~np.isnan(y) & (np.arange(t) >= t - params.level_days)[None, :]
    x = np.where(window, y, 0.0)
    sum_curve = np.where(window, curve[None, :], 0.0).sum(axis=1)
    tiny = 1e-12
    level = x.sum(axis=1) / np.maximum(sum_curve, tiny)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(window, y / curve[None, :], np.nan) / level[:, None]
        med = np.nanmedian(ratio, axis=1)
        rel_noise = 1.4826 * np.nanmedian(np.abs(ratio - med[:, None]), axis=1)
    days_in = np.maximum(window.sum(axis=1), 1)
    zero_share = ((x == 0) & window).sum(axis=1) / days_in
    dense = (zero_share <= params.dense_max_zero_share) & (
        np.nan_to_num(rel_noise, nan=np.inf) <= params.dense_max_rel_noise
    )
    for _ in range(2):
        limit = np.where(dense[:, None], params.spike_cap * level[:, None] * curve[None, :], np.inf)
        x = np.minimum(np.where(window, y, 0.0), limit)
        level = x.sum(axis=1) / np.maximum(sum_curve, tiny)
    expected = level[:, None] * curve[None, :]
    phi = np.where(window, (x - expected) ** 2, 0.0).sum(axis=1) / np.maximum(
        np.where(window, expected, 0.0).sum(axis=1), tiny
    )

    recent = window & (np.arange(t) >= t - params.recent_days)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        r_ratio = np.where(recent, y / curve[None, :], np.nan)
        r_med = np.nanmedian(r_ratio, axis=1)
    # One spike day among the recent ones is not a new level: dense series' recent days are
    # capped at twice their median.
    r_limit = np.where(dense, 2 * np.nan_to_num(r_med), np.inf)[:, None] * curve[None, :]
    r_x = np.where(recent, np.minimum(np.nan_to_num(y), r_limit), 0.0)
    r_curve = np.where(recent, curve[None, :], 0.0).sum(axis=1)
    r_level = r_x.sum(axis=1) / np.maximum(r_curve, tiny)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_diff = phi * level * (1 / r_curve - 1 / sum_curve)
        z2 = (r_level - level) ** 2 / var_diff
        w = np.clip(1 - params.shrink_strength / z2, 0.0, 1.0)
    w = np.where((r_curve > 0) & (sum_curve > r_curve) & np.isfinite(w), w, 0.0)
    w = np.where((var_diff <= 0) & (r_curve > 0) & (r_level != level), 1.0, w)
    final = level + w * (r_level - level)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_level = phi * final * (1 / np.maximum(sum_curve, tiny) + w**2 / r_curve)
    return {
        "pred": np.clip(final, 0.0, None)[:, None] * future[None, :],
        "phi": np.nan_to_num(phi),
        "var_level": np.nan_to_num(var_level),
        "future_curve": future,
        "shrink": w,
        "dense": dense,
    }


def forecast_matrix(
    values: np.ndarray,
    days: list[date],
    params: ForecastParams = ForecastParams(),
    *,
    pool_rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Month-end forecasts for each row of `values` (n series x days, the last day is as-of).

    `pool_rows` (boolean per row) says which series make the pool the pooled model's reference
    curve is fitted on (default: all); pass the tenants, not a total of them.
    """
    with warnings.catch_warnings():
        # All-NaN rows (series not started yet) are expected; their NaNs are handled below.
        warnings.simplefilter("ignore", RuntimeWarning)
        return _forecast_matrix(values, days, params, pool_rows)


def _make_pool(y: np.ndarray, first: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Sum of the rows in `rows` that were there from the start (a tenant that arrives later
    would read as growth of everyone else); all of `rows` if none was."""
    t0 = first[rows].min() if rows.any() else 0
    established = rows & (first <= t0 + 7)
    use = established if established.any() else rows
    return np.nansum(y[use], axis=0)


def _lognormal_bounds(mean: np.ndarray, cv: np.ndarray, z: float, sign: int) -> np.ndarray:
    """Quantile of a lognormal with this mean and coefficient of variation (right-skewed like
    a sum of a few heavy-tailed calls)."""
    s = np.sqrt(np.log1p(np.asarray(cv, dtype=float) ** 2))
    return mean * np.exp(-(s**2) / 2 + sign * z * s)


def _forecast_matrix(
    values: np.ndarray, days: list[date], params: ForecastParams, pool_rows: np.ndarray | None
) -> dict[str, np.ndarray]:
    as_of = days[-1]
    n_in_month = calendar.monthrange(as_of.year, as_of.month)[1]
    elapsed = as_of.day
    remaining = n_in_month - elapsed
    values = np.asarray(values, dtype=float)
    n, t = values.shape
    dows = np.array([d.weekday() for d in days], dtype=int)
    future_dows = np.array(
        [(as_of + timedelta(days=i)).weekday() for i in range(1, remaining + 1)], dtype=int
    )
    spend_to_date = values[:, t - elapsed :].sum(axis=1)
    naive = spend_to_date / elapsed * n_in_month

    nonzero = values != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), t)
    history_days = t - first
    started = np.arange(t)[None, :] >= first[:, None]
    y = np.where(started, values, np.nan)
    y_own = _cap_spikes(y, params.spike_cap)
    rows = np.ones(n, dtype=bool) if pool_rows is None else np.asarray(pool_rows, dtype=bool)
    pool = _make_pool(y, first, rows)

    # Rolling-origin backtest: each model forecasts the next `horizon` days from each origin.
    horizon = max(remaining, 7)
    errors = {m: np.zeros(n) for m in MODELS}
    counts = np.zeros(n)
    for back in params.backtest_origins:
        o = t - back
        if o < 14:
            continue
        h = min(back, horizon)
        actual = values[:, o : o + h].sum(axis=1)
        usable = history_days - back >= params.min_history_days
        denom = np.maximum(np.abs(actual), 1e-9)
        for m in MODELS:
            if m == "pooled":
                pred = _pooled(y[:, :o], pool[:o], dows[:o], dows[o : o + h], params)["pred"]
            else:
                pred = _predict(m, y_own[:, :o], dows[:o], dows[o : o + h])
            errors[m] += np.where(usable, np.abs(pred.sum(axis=1) - actual) / denom, 0.0)
        counts += usable
    err = np.column_stack([errors[m] / np.maximum(counts, 1) for m in MODELS])
    # The trend model needs two months to be trusted; without them it never wins.
    err[history_days < 56 + 7, MODELS.index("dow_trend_56")] = np.inf
    # An own-series model must beat the pooled one clearly: on a noisy series the backtest
    # winner is mostly luck, and the pooled level rests on far more days.
    # Only dense series are eligible: on a sparse one the backtest measures call-level noise.
    pooled = _pooled(y, pool, dows, future_dows, params)
    own = err[:, 1:].min(axis=1)
    clearly_better = (own < params.own_model_margin * err[:, 0]) | (
        own < err[:, 0] - params.own_model_abs_margin
    )
    best = np.where(clearly_better, 1 + np.argmin(err[:, 1:], axis=1), 0)
    best[(counts == 0) | ~pooled["dense"]] = 0
    best_err = np.where(counts > 0, err[np.arange(n), best], np.nan)

    remaining_pred = pooled["pred"].sum(axis=1)
    future_sq = (pooled["future_curve"] ** 2).sum()
    var = pooled["phi"] * remaining_pred + future_sq * pooled["var_level"]
    with np.errstate(invalid="ignore", divide="ignore"):
        cv = np.sqrt(var) / remaining_pred
    cv = np.sqrt(np.nan_to_num(cv) ** 2 + params.rel_sigma_floor**2) * params.interval_scale
    for i, m in enumerate(MODELS[1:], start=1):
        sel = best == i
        if not sel.any() or remaining == 0:
            continue
        remaining_pred[sel] = _predict(m, y_own[sel], dows, future_dows).sum(axis=1)
        fitted = _predict(m, y_own[sel, :-28], dows[:-28], dows[-28:])
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = (values[sel, -28:] - fitted) / np.nanmean(fitted, axis=1, keepdims=True)
        mad = np.nanmedian(np.abs(rel - np.nanmedian(rel, axis=1, keepdims=True)), axis=1)
        noise = np.nan_to_num(1.4826 * mad, nan=0.0)
        cv[sel] = np.sqrt(best_err[sel] ** 2 + noise**2 / max(remaining, 1))
        cv[sel] *= params.own_interval_scale
    cv = np.maximum(cv, params.min_rel_sigma)
    model = np.array(MODELS, dtype=object)[best]

    short = history_days < params.min_history_days
    if short.any() and remaining:
        active = np.where(started[short], values[short], np.nan)
        remaining_pred[short] = np.nanmean(active, axis=1) * remaining
        cv[short] = params.short_history_rel_sigma
        model[short] = "short_history"
    zero = ~nonzero.any(axis=1)
    remaining_pred[zero] = 0.0
    model[zero] = "zero"
    best_err[short | zero] = np.nan
    if remaining == 0:
        remaining_pred[:] = 0.0

    forecast = spend_to_date + remaining_pred

    def bound(z: float, sign: int) -> np.ndarray:
        return spend_to_date + _lognormal_bounds(remaining_pred, cv, z, sign)

    return {
        "spend_to_date_usd": spend_to_date,
        "forecast_usd": forecast,
        "lower_80_usd": bound(Z80, -1),
        "upper_80_usd": bound(Z80, 1),
        "lower_95_usd": bound(Z95, -1),
        "upper_95_usd": bound(Z95, 1),
        "naive_run_rate_usd": naive,
        "model": model,
        "backtest_error_pct": best_err * 100,
        "history_days": history_days,
        "days_elapsed": np.full(n, elapsed),
        "days_in_month": np.full(n, n_in_month),
    }


def forecast_month_end(
    daily: pd.DataFrame,
    as_of: date,
    *,
    tenants: list[str] | None = None,
    budgets: Mapping[str, float | None] | None = None,
    params: ForecastParams = ForecastParams(),
    history_days: int = HISTORY_DAYS,
) -> pd.DataFrame:
    """`cost_forecasts` rows for as-of day `as_of`: one per tenant plus one for the company.

    `daily` has at least `day`, `tenant_id`, `cost_usd` (any finer grain is summed). Tenants in
    `tenants` without rows are forecast as zero; `budgets` maps tenant id (or `__company__`) to
    the monthly budget in USD.
    """
    start = as_of - timedelta(days=history_days - 1)
    wide = daily_matrix(daily, start, as_of)
    if tenants is not None:
        wide = wide.reindex(sorted(set(tenants) | set(wide.index)), fill_value=0.0)
    wide.loc[COMPANY] = wide.sum(axis=0)
    pool_rows = np.asarray(wide.index != COMPANY)
    result = forecast_matrix(wide.to_numpy(), list(wide.columns), params, pool_rows=pool_rows)
    out = pd.DataFrame(result)
    out.insert(0, "tenant_id", list(wide.index))
    out.insert(0, "day", as_of)
    out["month"] = as_of.replace(day=1)
    budgets = budgets or {}
    out["budget_usd"] = [budgets.get(t) for t in out["tenant_id"]]
    return COST_FORECASTS.conform(out)
