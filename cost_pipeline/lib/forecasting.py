"""Month-end spend forecasts per tenant and for the company, with 80 % and 95 % intervals.

How a forecast is made (all series at once, as one matrix of days x series):

1. History: each series' daily cost up to the as-of day. Spikes are capped at `spike_cap` x the
   series' trailing 28-day median before fitting, so a one-day incident does not get projected
   over the rest of the month (the naive run-rate does exactly that).
2. Candidate models, each predicting the remaining days of the month:
   `dow_level_7` / `dow_level_28` (mean of the last 7 / 28 days times day-of-week factors from
   the last 8 weeks) and `dow_trend_56` (scikit-learn `LinearRegression` on time + day-of-week
   dummies over the last 56 days, fitted for all series in one multi-output call).
3. Model choice per series: a rolling-origin backtest on the series' own history (origins 7, 14,
   21 and 28 days before the as-of day, horizon = the days left in the month); the model with the
   lowest mean absolute error of the horizon sum wins.
4. Intervals: the chosen model's backtest error and its daily residual noise, scaled by
   `interval_scale` (calibrated on tuning seeds by `make eval`), as a normal interval on the
   remaining spend; never below the spend already incurred.

Fallbacks: a series with fewer than `min_history_days` days since its first non-zero day
(a tenant that started this week) gets `short_history`: the mean of its active days times the
days left, with a wide +/- `short_history_rel_sigma` interval. A series that is zero over the whole
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
from sklearn.linear_model import LinearRegression

from cost_pipeline.lib import schemas
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.lib.schemas import TableSchema, col, money

COST_FORECASTS = schemas.register(
    TableSchema(
        name="cost_forecasts",
        columns=(
            col("day", "date", nullable=False),
            col("tenant_id", "str", nullable=False),
            col("month", "date", nullable=False),
            col("days_elapsed", "int", nullable=False, min_value=1),
            col("days_in_month", "int", nullable=False, min_value=28),
            money("spend_to_date_usd", signed=True),
            money("forecast_usd", signed=True),
            money("lower_80_usd", signed=True),
            money("upper_80_usd", signed=True),
            money("lower_95_usd", signed=True),
            money("upper_95_usd", signed=True),
            money("naive_run_rate_usd", signed=True),
            money("budget_usd", nullable=True),
            col("model", "str", nullable=False),
            col("backtest_error_pct", "float"),
            col("history_days", "int", min_value=0),
        ),
        indexes=(("day",), ("tenant_id", "day")),
        doc="Per as-of day and tenant (and the company, tenant_id '__company__'): projected "
        "month-end spend with 80/95 % intervals, spend to date, naive run-rate, model used.",
    )
)

Z80 = 1.2815515655446004
Z95 = 1.959963984540054
MODELS = ("dow_level_7", "dow_level_28", "dow_trend_56")
HISTORY_DAYS = 120


@dataclass(frozen=True)
class ForecastParams:
    min_history_days: int = 14
    spike_cap: float = 3.0
    backtest_origins: tuple[int, ...] = (7, 14, 21, 28)
    interval_scale: float = 2.0
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
    """Daily predictions (n, h) of `model` from history `y` (n, t; NaN before a series starts)."""
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
    """Cap each day at `cap` x the trailing 28-day median of the days since the series started
    (NaN before); days with fewer than 7 started days behind them are left as they are."""
    median = pd.DataFrame(values.T).rolling(28, min_periods=7).median().to_numpy().T
    limit = np.where(np.isnan(median), np.inf, np.maximum(median * cap, 0.0))
    return np.minimum(values, limit)


def forecast_matrix(
    values: np.ndarray, days: list[date], params: ForecastParams = ForecastParams()
) -> dict[str, np.ndarray]:
    """Month-end forecasts for each row of `values` (n series x days, the last day is as-of)."""
    with warnings.catch_warnings():
        # All-NaN rows (series not started yet) are expected; their NaNs are handled below.
        warnings.simplefilter("ignore", RuntimeWarning)
        return _forecast_matrix(values, days, params)


def _forecast_matrix(
    values: np.ndarray, days: list[date], params: ForecastParams
) -> dict[str, np.ndarray]:
    as_of = days[-1]
    n_in_month = calendar.monthrange(as_of.year, as_of.month)[1]
    elapsed = as_of.day
    remaining = n_in_month - elapsed
    values = np.asarray(values, dtype=float)
    n, t = values.shape
    dows = np.array([d.weekday() for d in days])
    future_dows = np.array(
        [(as_of + timedelta(days=i)).weekday() for i in range(1, remaining + 1)], dtype=int
    )
    spend_to_date = values[:, t - elapsed :].sum(axis=1)
    naive = spend_to_date / elapsed * n_in_month

    nonzero = values != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), t)
    history_days = t - first
    started = np.arange(t)[None, :] >= first[:, None]
    y = _cap_spikes(np.where(started, values, np.nan), params.spike_cap)

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
            pred = _predict(m, y[:, :o], dows[:o], dows[o : o + h]).sum(axis=1)
            errors[m] += np.where(usable, np.abs(pred - actual) / denom, 0.0)
        counts += usable
    err = np.column_stack([errors[m] / np.maximum(counts, 1) for m in MODELS])
    # The trend model needs two months to be trusted; without them it never wins.
    err[history_days < 56 + 7, MODELS.index("dow_trend_56")] = np.inf
    best = np.argmin(err, axis=1)
    best[counts == 0] = 0
    best_err = np.where(counts > 0, err[np.arange(n), best], np.nan)

    remaining_pred = np.zeros(n)
    noise = np.zeros(n)
    for i, m in enumerate(MODELS):
        rows = best == i
        if not rows.any() or remaining == 0:
            continue
        remaining_pred[rows] = _predict(m, y[rows], dows, future_dows).sum(axis=1)
        fitted = _predict(m, y[rows, :-28], dows[:-28], dows[-28:])
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = (values[rows, -28:] - fitted) / np.nanmean(fitted, axis=1, keepdims=True)
        mad = np.nanmedian(np.abs(rel - np.nanmedian(rel, axis=1, keepdims=True)), axis=1)
        noise[rows] = np.nan_to_num(1.4826 * mad, nan=0.0)

    rel_sigma = np.sqrt(np.nan_to_num(best_err) ** 2 + noise**2 / max(remaining, 1))
    rel_sigma = np.maximum(rel_sigma * params.interval_scale, params.min_rel_sigma)
    model = np.array(MODELS, dtype=object)[best]

    short = history_days < params.min_history_days
    if short.any() and remaining:
        active = np.where(started[short], values[short], np.nan)
        remaining_pred[short] = np.nanmean(active, axis=1) * remaining
        rel_sigma[short] = params.short_history_rel_sigma
        model[short] = "short_history"
    zero = ~nonzero.any(axis=1)
    remaining_pred[zero] = 0.0
    model[zero] = "zero"
    best_err[short | zero] = np.nan

    sigma = rel_sigma * remaining_pred
    forecast = spend_to_date + remaining_pred

    def bound(z: float, sign: int) -> np.ndarray:
        return np.maximum(forecast + sign * z * sigma, spend_to_date)

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
    result = forecast_matrix(wide.to_numpy(), list(wide.columns), params)
    out = pd.DataFrame(result)
    out.insert(0, "tenant_id", list(wide.index))
    out.insert(0, "day", as_of)
    out["month"] = as_of.replace(day=1)
    budgets = budgets or {}
    out["budget_usd"] = [budgets.get(t) for t in out["tenant_id"]]
    return COST_FORECASTS.conform(out)
