"""Month-end spend forecasts per tenant and for the company, with 80 % and 95 % intervals.

A month total = spend to date + the usage of the remaining days + known charges.

1. **Charge types.** Rows whose `charge_category` (FOCUS ChargeCategory) is not `Usage` —
   credits, refunds (`Adjustment`), commitments and fees (`Purchase`), `Tax` — are *known
   amounts*: counted in the spend to date, never extrapolated. A non-usage charge that recurs
   (`charge_frequency` `Recurring`, or seen in the previous month) and fell on a later day of
   last month is expected again on that day (`known_remaining_usd`). Negative usage days
   without a label are treated as credits the same way.
2. **Fallbacks.** `zero` (no spend in the window), `short_history` (fewer than
   `min_history_days` since the first spend: mean of the active days, wide interval),
   `churned` (no usage for `churn_days` days after having some: nothing more is expected).
3. **Candidates** (statsforecast, fitted on the usage history with one-day spikes capped at
   `spike_cap` x the trailing 28-day 90th percentile, so an incident or an unlabelled fee is
   not projected; for the forecast itself, the last `recent_days` are also capped at
   `recent_cap` x the largest same weekday of the 4 weeks before, since no backtest has seen
   what follows a jump of the last days): the run-rate (mean of the month's usage days to
   date), the *annual* run-rate (the run-rate x how the same days a year (52 weeks) ago
   compared with the days before them: holidays, seasons), `SeasonalNaive(7)`,
   `SeasonalWindowAverage(7, 4)`, `WindowAverage(28)`, `IMAPA`, `ADIDA`, `CrostonSBA` for every
   series and, for the `expensive_top_n` largest dense series only, `AutoTheta(7)` on their
   last `expensive_train_days` (an AutoETS fit costs ~0.2 s a series; Theta gives the trend
   at a tenth of that).
4. **Selection** per series by a rolling-origin backtest on its own history
   (`StatsForecast.cross_validation`, horizon = the days left in the month), scored on the
   error of the *month total* the origin would have predicted (the trailing `elapsed` days +
   the horizon). Origins are a week apart, as many as the series' history allows up to
   `backtest_windows` (a year: enough errors to calibrate a 95 % interval and to see last
   year's seasons), `expensive_windows` for AutoTheta. Errors are weighted by recency (halved
   every `recency_half_life` windows back). The forecast is the mean of the (at most)
   `combine_top` candidates with the smallest error that are within `COMBINE_WITHIN` x the
   best's (a combination is steadier than the single winner of a noisy backtest); `model`
   names them, e.g. `SeasWA+AutoTheta`. It is the run-rate alone unless the best candidate's
   error is below `selection_margin` x the run-rate's.
5. **Level shifts.** A backtest cannot see a step (a collapse, a new customer) that happened
   after its last origin. When `changepoints.level_shift` finds one in the last 28 days, the
   forecast is the level since the shift x the weekday factors (`level_shift` model) — unless
   the series is still rising since the shift (a ramp, not a step): then the trend model
   (AutoTheta, where it was backtested) follows it, since a flat level, and the windows from
   before the ramp, would lag it.
6. **Intervals** are split-conformal on the month-total errors of the backtest, at the same
   horizon (the days left in the month) and elapsed days as the forecast:
   - the errors are *honest* about selection: at each backtest window, the error of the
     combination the selection rule picks from the other windows (the chosen models' own
     errors are optimistic: they won for having small ones);
   - they are errors of the month as billed: one-off non-usage charges (credits, refunds, one-time
     purchases: `surprises`) are not forecast, but a series that has had them has them in its
     backtest months, so its interval makes room for them;
   - they are drawn as shares of the forecast month (actual / forecast - 1), the scale the
     interval is laid on: as shares of the actual month they cannot pass 1, and a sparse
     tenant's month at 3x its forecast would never fit;
   - each series' scale is the RMS of its own errors, shrunk toward its group's (dense / sparse)
     median; each error is normalized by a scale that saw neither it nor its neighbouring
     windows (their horizons overlap), and the quantiles of these normalized errors pooled over
     the group give the 80 % and 95 % bounds (finite-sample conformal quantiles);
   - series too young for a backtest use the group's median scale x `no_backtest_widen`.
   (statsforecast's `ConformalIntervals` calibrates each forecast *day*; daily intervals do not
   add up to an interval for a sum, so the calibration is done on sums here.)

The naive run-rate (spend to date / days elapsed x days in month) is always kept beside.
"""

from __future__ import annotations

import calendar
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy.special import stdtrit

from cost_pipeline.catalog import COST_FORECASTS
from cost_pipeline.lib.changepoints import ShiftParams, level_shift
from cost_pipeline.lib.periods import COMPANY

os.environ.setdefault("NIXTLA_ID_AS_COL", "1")

Z80 = 1.2815515655446004
Z95 = 1.959963984540054
# Days of history read: up to a year of weekly backtest origins, each with the year behind it
# that the annual run-rate compares with.
HISTORY_DAYS = 800
CHEAP_MODELS = ("SeasonalNaive", "SeasWA", "WindowAverage", "IMAPA", "ADIDA", "CrostonSBA")
EXPENSIVE_MODELS = ("AutoTheta",)
MODELS = ("run_rate", "annual", *CHEAP_MODELS, *EXPENSIVE_MODELS, "level_shift")
FALLBACKS = ("zero", "short_history", "churned")
# A model joins the combination only if its backtest error is within this factor of the best's.
COMBINE_WITHIN = 1.25
# A backtest month that came in at more than (1 + this) x its forecast counts as that much
# for the interval (a month from almost nothing would make it infinite).
MAX_UNDER_FORECAST = 9.0
USAGE = "usage"
RECURRING = "recurring"


@dataclass(frozen=True)
class ForecastParams:
    min_history_days: int = 14
    churn_days: int = 14
    spike_cap: float = 3.0
    recent_days: int = 7
    recent_cap: float = 1.5
    min_backtest_windows: int = 6
    backtest_windows: int = 52
    backtest_step: int = 7
    min_train_days: int = 28
    selection_margin: float = 0.9
    expensive_top_n: int = 40
    expensive_windows: int = 12
    expensive_train_days: int = 182
    combine_top: int = 3
    recency_half_life: float = 8.0
    annual_lag: int = 364
    dense_max_zero_share: float = 0.1
    # Conformal: a series' own error scale is shrunk toward its group's with this weight (in
    # backtest windows); groups with fewer errors than `min_pooled_errors` use all series.
    scale_prior_windows: float = 3.0
    min_pooled_errors: int = 30
    min_rel_scale: float = 0.01
    fallback_rel_sigma: float = 0.3
    short_history_rel_sigma: float = 0.5
    no_backtest_widen: float = 1.5
    # Stricter than the anomaly scorer's: a forecast leaves its backtest only on strong evidence.
    shift: ShiftParams = field(default_factory=lambda: ShiftParams(min_ratio=1.5, min_z=6.0))


def daily_matrix(
    daily: pd.DataFrame, start: date, end: date, *, key: str = "tenant_id", value: str = "cost_usd"
) -> pd.DataFrame:
    """Cost per day (columns, every day from start to end) and series (rows), zeros filled."""
    days = pd.date_range(start, end, freq="D").date
    if daily.empty:
        return pd.DataFrame(columns=days, dtype="float64")
    frame = daily[(daily["day"] >= start) & (daily["day"] <= end)]
    wide = frame.pivot_table(index=key, columns="day", values=value, aggfunc="sum")
    return wide.reindex(columns=days, fill_value=0.0).fillna(0.0).astype("float64")


def charge_kind(daily: pd.DataFrame) -> pd.Series:
    """`usage`, `recurring` or `one_off` per row, from FOCUS `charge_category` (missing or
    `Usage` = usage) and `charge_frequency` (`Recurring`)."""
    if "charge_category" not in daily:
        return pd.Series(USAGE, index=daily.index)
    cat = daily["charge_category"].fillna("Usage").astype(str).str.lower()
    freq = (
        daily["charge_frequency"].fillna("").astype(str).str.lower()
        if "charge_frequency" in daily
        else pd.Series("", index=daily.index)
    )
    return pd.Series(
        np.where(cat == "usage", USAGE, np.where(freq == "recurring", RECURRING, "one_off")),
        index=daily.index,
    )


def _cap_spikes(values: np.ndarray, cap: float) -> np.ndarray:
    """Cap each day at `cap` x the trailing 28-day 90th percentile of the days before it
    (NaN before a series starts; days with fewer than 7 days behind them are left alone)."""
    q90 = pd.DataFrame(values.T).rolling(28, min_periods=7).quantile(0.9).shift(1)
    q90 = q90.to_numpy().T
    limit = np.where(np.isnan(q90) | (q90 <= 0), np.inf, q90 * cap)
    return np.minimum(values, limit)


def _cap_recent(values: np.ndarray, days: int, cap: float) -> np.ndarray:
    """`values` with each of its last `days` days (at most 7) capped at `cap` x the largest of
    the same weekday in the 4 weeks before: what the models are fitted on for the forecast. A
    jump in the last few days cannot be told from a one-off by any backtest (no origin has seen
    its sequel yet), and a model that follows its last values (seasonal naive, theta's level)
    would project it over the month; a step that lasts becomes a level shift after a week."""
    t = values.shape[1]
    days = min(days, 7)
    if t < days + 28:
        return values
    out = values.copy()
    for c in range(t - days, t):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            usual = np.nanmax(values[:, [c - 7, c - 14, c - 21, c - 28]], axis=1)
        limit = np.where(np.isfinite(usual) & (usual > 0), cap * usual, np.inf)
        out[:, c] = np.minimum(values[:, c], limit)
    return out


def _sf_models(names: tuple[str, ...]) -> list:
    from statsforecast.models import (
        ADIDA,
        IMAPA,
        AutoTheta,
        CrostonSBA,
        SeasonalNaive,
        SeasonalWindowAverage,
        WindowAverage,
    )

    make = {
        "SeasonalNaive": lambda: SeasonalNaive(season_length=7),
        "SeasWA": lambda: SeasonalWindowAverage(season_length=7, window_size=4),
        "WindowAverage": lambda: WindowAverage(window_size=28),
        "IMAPA": IMAPA,
        "ADIDA": ADIDA,
        "CrostonSBA": CrostonSBA,
        "AutoTheta": lambda: AutoTheta(season_length=7),
    }
    return [make[n]() for n in names]


def _long(values: np.ndarray, rows: np.ndarray, first: np.ndarray) -> pd.DataFrame:
    """statsforecast's long frame (unique_id, ds, y) of `rows`, each from its first day."""
    ids, ds, ys = [], [], []
    for r in rows:
        cols = np.arange(first[r], values.shape[1])
        ids.append(np.full(len(cols), r))
        ds.append(cols)
        ys.append(values[r, cols])
    if not ids:
        return pd.DataFrame({"unique_id": [], "ds": [], "y": []})
    return pd.DataFrame(
        {"unique_id": np.concatenate(ids), "ds": np.concatenate(ds), "y": np.concatenate(ys)}
    )


def _sf_run(kind: str, df: pd.DataFrame, names: tuple[str, ...], h: int, **kw) -> pd.DataFrame:
    from statsforecast import StatsForecast

    sf = StatsForecast(models=_sf_models(names), freq=1, n_jobs=1)
    logging.getLogger("statsforecast").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "cv":
            return sf.cross_validation(df=df, h=h, **kw)
        return sf.forecast(df=df, h=h)


@dataclass
class _Backtest:
    rows: np.ndarray  # series indexes
    errors: dict[str, np.ndarray]  # model -> (len(rows), width) signed (actual - pred) / total


def window_counts(history_days: np.ndarray, h: int, params: ForecastParams) -> np.ndarray:
    """Backtest windows per series: as many weekly origins as its history allows (each needs
    `min_train_days` before it and `h` days after), rounded down to one of a few counts (one
    `cross_validation` call per count), at most `backtest_windows`; 0 below
    `min_backtest_windows`."""
    possible = (history_days - h - params.min_train_days) // params.backtest_step + 1
    counts = np.array(_window_steps(params), dtype=int)
    idx = np.searchsorted(counts, possible, side="right") - 1
    return np.where(idx >= 0, counts[np.clip(idx, 0, None)], 0)


def _window_steps(params: ForecastParams) -> list[int]:
    lo, hi = params.min_backtest_windows, params.backtest_windows
    steps, w = [], float(lo)
    while round(w) < hi:
        steps.append(round(w))
        w *= 1.5
    return sorted(set(steps) | {hi})


def _annual_ratio(
    csum: np.ndarray,
    rows: np.ndarray,
    end: np.ndarray,
    elapsed: int,
    h: int,
    first: np.ndarray,
    lag: int,
) -> np.ndarray:
    """Per (row, origin `end`, exclusive): the mean day of the `h` days after the origin a year
    (`lag` days, whole weeks) earlier over the mean of the `elapsed` days before it; NaN when
    that year-ago stretch is not all inside the series' history or was empty."""
    a0 = end - lag - elapsed
    ok = a0 >= first[rows]
    a0 = np.clip(a0, 0, None)
    a1 = np.clip(end - lag, 0, None)
    b1 = np.clip(end - lag + h, 0, None)
    before = (csum[rows, a1] - csum[rows, a0]) / elapsed
    after = (csum[rows, b1] - csum[rows, a1]) / max(h, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = after / before
    return np.where(ok & (before > 0), np.clip(ratio, 0.2, 5.0), np.nan)


def _backtest(
    clean: np.ndarray,
    raw: np.ndarray,
    rows: np.ndarray,
    first: np.ndarray,
    names: tuple[str, ...],
    h: int,
    elapsed: int,
    windows: int,
    width: int,
    params: ForecastParams,
) -> _Backtest:
    """Month-total errors of `names`, the run-rate and the annual run-rate at `windows` weekly
    origins, in the last `windows` of `width` columns (older windows NaN)."""
    w = windows
    cv = _sf_run(
        "cv",
        _long(clean, rows, first),
        names,
        h,
        n_windows=w,
        step_size=params.backtest_step,
    )
    cv = cv.sort_values(["unique_id", "cutoff", "ds"])
    sums = cv.groupby(["unique_id", "cutoff"], sort=True)[list(names)].sum()
    uid = sums.index.get_level_values("unique_id").to_numpy()
    cutoff = sums.index.get_level_values("cutoff").to_numpy().astype(int)
    pos = {r: i for i, r in enumerate(rows)}
    row_idx = np.array([pos[u] for u in uid])
    # windows in cutoff order per series, the newest in the last column
    order = pd.Series(cutoff).groupby(uid).rank(method="first").to_numpy().astype(int) - 1
    win_idx = order + (width - w)
    t = raw.shape[1]
    csum_raw = np.concatenate([np.zeros((raw.shape[0], 1)), np.cumsum(raw, axis=1)], axis=1)
    csum_clean = np.concatenate(
        [np.zeros((clean.shape[0], 1)), np.cumsum(np.nan_to_num(clean), axis=1)], axis=1
    )
    r_all = rows[row_idx]
    end = cutoff + 1
    actual = csum_raw[r_all, np.minimum(end + h, t)] - csum_raw[r_all, end]
    before = csum_raw[r_all, end] - csum_raw[r_all, np.maximum(end - elapsed, 0)]
    rr = (csum_clean[r_all, end] - csum_clean[r_all, np.maximum(end - elapsed, 0)]) / elapsed * h
    annual = rr * _annual_ratio(csum_clean, r_all, end, elapsed, h, first, params.annual_lag)
    total = np.maximum(np.abs(before + actual), 1e-9)
    errors = {}
    preds = {"run_rate": rr, "annual": annual}
    preds.update({m: np.nan_to_num(sums[m].to_numpy()) for m in names})
    for m, p in preds.items():
        e = np.full((len(rows), width), np.nan)
        p = np.where(np.isnan(p), np.nan, np.clip(p, 0, None))
        e[row_idx, win_idx] = (actual - p) / total
        errors[m] = e
    return _Backtest(rows=rows, errors=errors)


def _leave_out_scale(
    e: np.ndarray, block: int, prior: float, k0: float, params: ForecastParams
) -> np.ndarray:
    """(n, windows) scale for each error of `e`: the RMS of the series' other errors, leaving
    out the `block` windows on each side too, shrunk toward `prior` with weight `k0`."""
    w = e.shape[1]
    sq = e**2
    out = np.empty_like(e)
    for j in range(w):
        keep = np.abs(np.arange(w) - j) > block
        kj = np.sum(~np.isnan(e[:, keep]), axis=1)
        ss = np.nansum(sq[:, keep], axis=1)
        out[:, j] = np.sqrt((ss + k0 * prior**2) / (kj + k0))
    return np.maximum(out, params.min_rel_scale)


def _recency_weights(windows: int, half_life: float) -> np.ndarray:
    """Weight of each backtest window (oldest first): halved every `half_life` windows back, so
    a model that has become better (a trend, a new pattern) wins without waiting for the old
    windows to leave the backtest, while every window still counts."""
    return 0.5 ** ((windows - 1 - np.arange(windows)) / half_life)


def _weighted_mae(a: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Recency-weighted mean over the last axis of absolute errors `a`, ignoring NaNs."""
    w = np.where(np.isnan(a), 0.0, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(a * w, axis=-1) / w.sum(axis=-1)


def _window_mae(
    errors: dict[str, np.ndarray], names: list[str], min_windows: int, half_life: float
) -> np.ndarray:
    """(n, models) recency-weighted mean absolute backtest error; inf for a model with fewer
    than `min_windows` windows of a series (the annual run-rate before a year of history)."""
    a = np.stack([np.abs(errors[m]) for m in names], axis=1)  # (n, models, windows)
    count = np.sum(~np.isnan(a), axis=2)
    mae = _weighted_mae(a, _recency_weights(a.shape[2], half_life))
    return np.where((count >= min_windows) & np.isfinite(mae), mae, np.inf)


def _honest_errors(
    errors: dict[str, np.ndarray],
    names: list[str],
    margin: float,
    min_windows: int,
    top: int,
    half_life: float,
) -> np.ndarray:
    """(n, windows) signed month-total errors for calibration, selection included: at each
    backtest window, the error of the model the selection rule picks from the *other* windows.

    The chosen model's own backtest errors are optimistic (it was chosen for having small ones,
    among several candidates on a handful of windows): intervals calibrated on them are too
    narrow. This is the nested (leave-one-window-out) version of the same selection."""
    e = np.stack([errors[m] for m in names])  # (models, n, windows)
    a = np.abs(e)
    n, w = e.shape[1], e.shape[2]
    rr = names.index("run_rate")
    recency = _recency_weights(w, half_life)
    out = np.full((n, w), np.nan)
    for j in range(w):
        others = np.delete(a, j, axis=2)  # (models, n, windows - 1)
        mae = _weighted_mae(others, np.delete(recency, j)).T  # (n, models)
        enough = min_windows <= np.sum(~np.isnan(others), axis=2).T
        # Only models with an error at this window (the expensive one has fewer windows).
        mae = np.where(enough & np.isfinite(mae) & ~np.isnan(e[:, :, j]).T, mae, np.inf)
        weights = _selection_weights(mae, rr, margin, top)  # (n, models)
        out[:, j] = np.einsum("nm,mn->n", weights, np.nan_to_num(e[:, :, j]))
        used_nan = np.einsum("nm,mn->n", weights, np.isnan(e[:, :, j]).astype(float)) > 0
        out[used_nan, j] = np.nan
    return out


def _per_forecast(e: np.ndarray, cap: float = MAX_UNDER_FORECAST) -> np.ndarray:
    """Month-total errors `e` = (actual - forecast) / actual as shares of the *forecast*
    (actual / forecast - 1 = e / (1 - e)), the scale the interval is drawn on.

    Shares of the actual are right for choosing a model (a miss of a busy month is not worse
    than a miss of a quiet one), but they cannot exceed 1: a month that came in at 3x its
    forecast reads +0.67, and an interval of forecast x (1 + 0.67 x ...) never reaches it. A
    sparse tenant's wet months are exactly such misses. `cap` bounds a month that came in
    from (almost) nothing."""
    e = np.minimum(e, 1 - 1 / (1 + cap))
    return e / (1 - e)


def _selection_weights(
    mae: np.ndarray, rr: int, margin: float, top: int, within: float = COMBINE_WITHIN
) -> np.ndarray:
    """(n, models) weights of the forecast: the mean of the (at most) `top` models with the
    smallest backtest error that are within `within` x the best's, or the run-rate alone when
    the best is not below `margin` x its error."""
    n, m = mae.shape
    order = np.argsort(mae, axis=1, kind="stable")[:, :top]
    ranked = np.take_along_axis(mae, order, axis=1)
    finite = np.isfinite(ranked) & (ranked <= within * ranked[:, :1])
    weights = np.zeros((n, m))
    np.put_along_axis(weights, order, finite.astype(float), axis=1)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1)
    best = mae[np.arange(n), order[:, 0]]
    fallback = ~(best < margin * mae[:, rr])
    weights[fallback] = 0.0
    weights[fallback, rr] = 1.0
    return weights


def _conformal_quantiles(u: np.ndarray, z_levels: tuple[float, ...]) -> dict[float, tuple]:
    """(lower, upper) quantile of normalized errors `u` per central coverage level.

    Split conformal needs at least 1/a - 1 errors for a tail of a = (1 - level) / 2 (9 for
    80 %, 39 for 95 %): with fewer, the rank it asks for is past the largest error, and taking
    the largest instead gives the sample's range for every level, an interval too narrow (80 %
    and 95 % the same, covering about 60 % on real series). Below that count the interval is
    the normal prediction interval of the errors, with Student's t for their small number."""
    u = u[np.isfinite(u)]
    out = {}
    for level in z_levels:
        a = (1 - level) / 2
        k = len(u)
        if k < 5:
            z = Z80 if level == 0.8 else Z95
            out[level] = (-z, z)
        elif np.ceil((1 - a) * (k + 1)) > k:
            half = stdtrit(k - 1, 1 - a) * np.std(u, ddof=1) * np.sqrt(1 + 1 / k)
            centre = float(np.mean(u))
            out[level] = (centre - half, centre + half)
        else:
            # The order statistics of split conformal (an interpolated quantile sits inside
            # them and under-covers on a few dozen errors).
            ranked = np.sort(u)
            lo_rank, hi_rank = int(np.floor(a * (k + 1))), int(np.ceil((1 - a) * (k + 1)))
            out[level] = (float(ranked[lo_rank - 1]), float(ranked[hi_rank - 1]))
    # A wider level never gives a narrower interval (a rank and a t bound can cross).
    inner = (np.inf, -np.inf)
    for level in sorted(out):
        inner = (min(inner[0], out[level][0]), max(inner[1], out[level][1]))
        out[level] = inner
    return out


def forecast_matrix(
    values: np.ndarray,
    days: list[date],
    params: ForecastParams = ForecastParams(),
    *,
    known_to_date: np.ndarray | None = None,
    known_remaining: np.ndarray | None = None,
    surprises: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Month-end forecasts for each row of `values` (n series x days of *usage* cost, the last
    day is as-of). `known_to_date` / `known_remaining`: non-usage charges of the month so far /
    expected for its remaining days, per row. `surprises`: the one-off non-usage charges per
    series and day (same shape as `values`): never forecast, but part of the month totals the
    backtest scores, so a series whose bills bring credits gets the wider interval it needs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _forecast_matrix(values, days, params, known_to_date, known_remaining, surprises)


def _forecast_matrix(
    values: np.ndarray,
    days: list[date],
    params: ForecastParams,
    known_to_date: np.ndarray | None,
    known_remaining: np.ndarray | None,
    surprises: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    as_of = days[-1]
    n_in_month = calendar.monthrange(as_of.year, as_of.month)[1]
    elapsed = as_of.day
    remaining = n_in_month - elapsed
    values = np.asarray(values, dtype=float)
    n, t = values.shape
    known_to_date = np.zeros(n) if known_to_date is None else np.asarray(known_to_date, float)
    known_remaining = np.zeros(n) if known_remaining is None else np.asarray(known_remaining, float)
    # Unlabelled negative days are credits: known, not usage.
    credits = np.clip(values, None, 0.0)
    # What the month totals of the backtest are: usage plus the charges no forecast knows of.
    billed = np.clip(values, 0.0, None) + credits
    if surprises is not None:
        billed = billed + np.nan_to_num(np.asarray(surprises, dtype=float))
    known_to_date = known_to_date + credits[:, t - elapsed :].sum(axis=1)
    usage = np.clip(values, 0.0, None)
    dows = np.array([d.weekday() for d in days], dtype=int)
    future_dows = np.array(
        [(as_of + timedelta(days=i)).weekday() for i in range(1, remaining + 1)], dtype=int
    )
    usage_to_date = usage[:, t - elapsed :].sum(axis=1)
    spend_to_date = usage_to_date + known_to_date
    naive = spend_to_date / elapsed * n_in_month

    nonzero = usage > 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), t)
    last = np.where(nonzero.any(axis=1), t - 1 - nonzero[:, ::-1].argmax(axis=1), -1)
    history_days = t - first
    started = np.arange(t)[None, :] >= first[:, None]
    y = np.where(started, usage, np.nan)
    clean = _cap_spikes(y, params.spike_cap)
    clean_filled = np.nan_to_num(clean)

    zero = ~nonzero.any(axis=1)
    short = ~zero & (history_days < params.min_history_days)
    churned = ~zero & ~short & (t - 1 - last >= params.churn_days)
    eligible = ~zero & ~short & ~churned

    # Run-rate on the capped usage days of the month: a one-day spike is not projected.
    rr_level = clean_filled[:, t - elapsed :].mean(axis=1)
    preds = {"run_rate": rr_level * remaining}
    model = np.array(["run_rate"] * n, dtype=object)
    best_err = np.full(n, np.nan)
    scale = np.full(n, np.nan)
    group_u: dict[bool, np.ndarray] = {}
    zero_share = np.where(started, usage == 0, False).sum(axis=1) / np.maximum(history_days, 1)
    dense = zero_share <= params.dense_max_zero_share

    has_cv = np.zeros(n, dtype=bool)
    if remaining > 0 and eligible.any():
        width = params.backtest_windows
        n_windows = np.where(eligible, window_counts(history_days, remaining, params), 0)
        fc_rows = np.flatnonzero(eligible)
        names = CHEAP_MODELS
        recent = _cap_recent(clean, params.recent_days, params.recent_cap)
        fut = _sf_run("forecast", _long(recent, fc_rows, first), names, remaining)
        fut_sums = fut.groupby("unique_id")[list(names)].sum()
        for m in names:
            p = np.zeros(n)
            p[fut_sums.index.to_numpy().astype(int)] = np.clip(fut_sums[m].to_numpy(), 0, None)
            preds[m] = p
        csum_clean = np.concatenate([np.zeros((n, 1)), np.cumsum(clean_filled, axis=1)], axis=1)
        ratio = _annual_ratio(
            csum_clean, np.arange(n), np.full(n, t), elapsed, remaining, first, params.annual_lag
        )
        preds["annual"] = preds["run_rate"] * np.nan_to_num(ratio, nan=1.0)
        # The expensive candidate only where the money is: the largest dense series.
        spend = usage[:, -28:].sum(axis=1)
        cand = np.flatnonzero((n_windows > 0) & dense)
        top = cand[np.argsort(-spend[cand])][: params.expensive_top_n]
        errors: dict[str, np.ndarray] = {}
        for w in sorted(set(n_windows[n_windows > 0].tolist())):
            rows = np.flatnonzero(n_windows == w)
            bt = _backtest(
                clean, billed, rows, first, CHEAP_MODELS, remaining, elapsed, w, width, params
            )
            for m, e in bt.errors.items():
                errors.setdefault(m, np.full((n, width), np.nan))[rows] = e
        # The expensive candidate on the newest `expensive_windows` windows only (each a fit),
        # and on the newest `expensive_train_days` of a series (a fit's cost grows with its length).
        exp_w = np.minimum(n_windows[top], params.expensive_windows)
        exp_first = np.maximum(first, t - params.expensive_train_days)
        for w in sorted(set(exp_w.tolist())):
            rows = top[exp_w == w]
            bt = _backtest(
                clean,
                billed,
                rows,
                exp_first,
                EXPENSIVE_MODELS,
                remaining,
                elapsed,
                w,
                width,
                params,
            )
            for m in EXPENSIVE_MODELS:
                errors.setdefault(m, np.full((n, width), np.nan))[rows] = bt.errors[m]
        if len(top):
            fut2 = _sf_run("forecast", _long(recent, top, exp_first), EXPENSIVE_MODELS, remaining)
            fut2_sums = fut2.groupby("unique_id")[list(EXPENSIVE_MODELS)].sum()
            for m in EXPENSIVE_MODELS:
                p = np.zeros(n)
                p[fut2_sums.index.to_numpy().astype(int)] = np.clip(
                    fut2_sums[m].to_numpy(), 0, None
                )
                preds[m] = p
        if errors:
            has_cv = n_windows > 0
            cand_names = [m for m in MODELS if m in errors]
            mae = _window_mae(
                errors, cand_names, params.min_backtest_windows, params.recency_half_life
            )
            rr_i = cand_names.index("run_rate")
            weights = _selection_weights(mae, rr_i, params.selection_margin, params.combine_top)
            combined = sum(
                weights[:, i] * np.nan_to_num(preds[m]) for i, m in enumerate(cand_names)
            )
            chosen = np.array(
                ["+".join(m for i, m in enumerate(cand_names) if wr[i] > 0) for wr in weights],
                dtype=object,
            )
            model = np.where(has_cv, chosen, model)
            preds["selected"] = combined
            cv_e = sum(
                np.where(weights[:, i, None] > 0, weights[:, i, None] * errors[m], 0.0)
                for i, m in enumerate(cand_names)
            )
            best_err = np.where(has_cv, np.nanmean(np.abs(cv_e), axis=1), np.nan)
            own_e = _honest_errors(
                errors,
                cand_names,
                params.selection_margin,
                params.min_backtest_windows - 1,
                params.combine_top,
                params.recency_half_life,
            )
            own_e[~has_cv] = np.nan
            own_e = _per_forecast(own_e)
            rms = np.sqrt(np.nanmean(own_e**2, axis=1))
            for g in (True, False):
                in_g = has_cv & (dense == g)
                if np.isfinite(own_e[in_g]).sum() < params.min_pooled_errors:
                    in_g = has_cv
                prior = float(np.nanmedian(rms[in_g])) if in_g.any() else np.nan
                k = np.sum(~np.isnan(own_e), axis=1)
                k0 = params.scale_prior_windows
                s = np.sqrt((k * np.nan_to_num(rms) ** 2 + k0 * prior**2) / (k + k0))
                s = np.maximum(s, params.min_rel_scale)
                target = has_cv & (dense == g)
                scale[target] = s[target]
                # Leave-out scale: each error is normalized by a scale that did not see it
                # (self-normalized errors are bounded and make intervals too narrow), nor the
                # windows next to it when their horizons overlap (their errors share days).
                block = -(-remaining // params.backtest_step) - 1
                u = own_e[in_g] / _leave_out_scale(own_e[in_g], block, prior, k0, params)
                group_u[g] = u.ravel()
                # Too short a history for a backtest: the group's scale, widened.
                no_cv = eligible & ~has_cv & (dense == g)
                widened = params.no_backtest_widen * max(prior, params.min_rel_scale)
                scale[no_cv] = widened if np.isfinite(prior) else np.nan

        # A recent step the backtest could not see: project the level since the shift.
        shift = level_shift(clean, dows, params.shift)
        # A flat level is projected only when the series has stayed flat since the shift: a
        # ramp up (the second half of the days since the start still rising) is left to the
        # trend model where it was backtested (the few windows since the ramp began cannot
        # outvote the flat ones before it), else to the backtest's choice.
        moving = _still_moving(clean, dows, shift)
        shifted = eligible & (shift["start"] >= 0) & ~moving
        ramp = eligible & (shift["start"] >= 0) & moving & (model != "run_rate")
        for m in EXPENSIVE_MODELS:
            trend = ramp & np.isin(np.arange(n), top) & (model != m)
            model = np.where(trend, m, model)
            if errors and m in cand_names:
                best_err = np.where(trend, mae[:, cand_names.index(m)], best_err)
        if shifted.any():
            lo = max(t - 56, 0)
            dw = _weekday_factors_before(clean_filled[:, lo:], dows[lo:], shift["start"] - lo)
            preds["level_shift"] = shift["after"] * dw[:, future_dows].sum(axis=1)
            model = np.where(shifted, "level_shift", model)
            scale = np.where(shifted, np.fmax(np.nan_to_num(scale), 0.1) * 1.5, scale)

    remaining_pred = np.where(has_cv, preds.get("selected", 0.0), 0.0)
    for m, p in preds.items():
        sel = model == m
        remaining_pred[sel] = p[sel]

    if short.any() and remaining:
        active = np.where(started[short], usage[short], np.nan)
        remaining_pred[short] = np.nanmean(active, axis=1) * remaining
    model[short] = "short_history"
    model[churned] = "churned"
    model[zero] = "zero"
    remaining_pred[zero | churned] = 0.0
    best_err[~eligible] = np.nan
    if remaining == 0:
        remaining_pred[:] = 0.0

    total_usage = usage_to_date + remaining_pred
    forecast = spend_to_date + remaining_pred + known_remaining
    bounds = {}
    for level in (0.8, 0.95):
        lo = np.zeros(n)
        hi = np.zeros(n)
        for g in (True, False):
            q_lo, q_hi = _conformal_quantiles(group_u.get(g, np.array([])), (0.8, 0.95))[level]
            sel = eligible & (dense == g) & np.isfinite(scale)
            lo[sel] = q_lo * scale[sel] * total_usage[sel]
            hi[sel] = q_hi * scale[sel] * total_usage[sel]
        z = Z80 if level == 0.8 else Z95
        # No backtest anywhere (a tiny population): a lognormal with a fixed relative sigma.
        rel = np.where(short, params.short_history_rel_sigma, params.fallback_rel_sigma)
        fb = (short | (eligible & ~np.isfinite(scale))) & (remaining_pred > 0)
        s = np.sqrt(np.log1p(rel**2))
        lo = np.where(fb, remaining_pred * (np.exp(-(s**2) / 2 - z * s) - 1), lo)
        hi = np.where(fb, remaining_pred * (np.exp(-(s**2) / 2 + z * s) - 1), hi)
        # Remaining usage cannot be negative.
        lo = np.maximum(lo, -remaining_pred)
        hi = np.maximum(hi, 0.0)
        if remaining == 0:
            lo[:] = 0.0
            hi[:] = 0.0
        bounds[level] = (forecast + lo, forecast + hi)

    return {
        "spend_to_date_usd": spend_to_date,
        "forecast_usd": forecast,
        "lower_80_usd": bounds[0.8][0],
        "upper_80_usd": bounds[0.8][1],
        "lower_95_usd": bounds[0.95][0],
        "upper_95_usd": bounds[0.95][1],
        "naive_run_rate_usd": naive,
        "known_remaining_usd": known_remaining,
        "model": model,
        "backtest_error_pct": best_err * 100,
        "history_days": history_days,
        "days_elapsed": np.full(n, elapsed),
        "days_in_month": np.full(n, n_in_month),
    }


def _still_moving(
    values: np.ndarray, dows: np.ndarray, shift: dict[str, np.ndarray], ratio: float = 1.2
) -> np.ndarray:
    """Per series with a shift *up*: the days since its start (at least 6) split in halves,
    the later half's median is `ratio` x the earlier's (a ramp, not a step). A drop is always
    projected flat: whatever follows a collapse, the old level is the worst guess.
    Medians of the days as they are: a weekly pattern tilts halves of a few days by less than
    `ratio`."""
    n, t = values.shape
    out = np.zeros(n, dtype=bool)
    for i in np.flatnonzero((shift["start"] >= 0) & (shift["ratio"] > 1)):
        days = t - int(shift["start"][i])
        if days < 6:
            continue
        half = days // 2
        first = np.nanmedian(values[i, t - days : t - days + half])
        last = np.nanmedian(values[i, t - half :])
        if not (np.isfinite(first) and np.isfinite(last)) or first <= 0:
            continue
        out[i] = last / first >= ratio
    return out


def _weekday_factors_before(values: np.ndarray, dows: np.ndarray, upto: np.ndarray) -> np.ndarray:
    """(n, 7) weekday factors (mean 1) of each series over its columns before `upto`."""
    n, t = values.shape
    mask = np.arange(t)[None, :] < np.clip(upto, 7, t)[:, None]
    v = np.where(mask, values, np.nan)
    overall = np.nanmean(v, axis=1, keepdims=True)
    out = np.ones((n, 7))
    for d in range(7):
        cols = dows == d
        if cols.any():
            out[:, d] = np.nanmean(v[:, cols], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / overall
    out[~np.isfinite(out)] = 1.0
    return out


def known_charges(
    daily: pd.DataFrame, as_of: date, index: pd.Index, key: str = "tenant_id"
) -> tuple[np.ndarray, np.ndarray]:
    """(known charges of the month to date, expected recurring charges for its remaining days)
    per series in `index`, from the non-usage rows of `daily` (see `charge_kind`).

    A charge is expected again when it is `recurring`, or when the same series had a non-usage
    charge of the same kind in the previous month: on the same day of the month, if that day is
    still to come, with last month's amount."""
    month = as_of.replace(day=1)
    kind = charge_kind(daily)
    other = daily[kind != USAGE].assign(kind=kind[kind != USAGE])
    to_date = other[(other["day"] >= month) & (other["day"] <= as_of)]
    to_date_sum = to_date.groupby(key)["cost_usd"].sum().reindex(index, fill_value=0.0)
    prev_start = (month - timedelta(days=1)).replace(day=1)
    prev = other[(other["day"] >= prev_start) & (other["day"] < month)]
    n_days = calendar.monthrange(as_of.year, as_of.month)[1]
    later = np.array([as_of.day < d.day <= n_days for d in prev["day"]], dtype=bool)
    prev = prev[later]
    # Recurring: the label, or a fee (positive) seen last month; credits are not assumed again.
    prev = prev[(prev["kind"] == RECURRING) | (prev["cost_usd"] > 0)]
    # Already billed this month on or before that day-of-month: not expected twice.
    expected = prev.groupby(key)["cost_usd"].sum().reindex(index, fill_value=0.0)
    return to_date_sum.to_numpy(dtype=float), expected.to_numpy(dtype=float)


def with_lagging_usage(
    history: pd.DataFrame,
    source: pd.DataFrame,
    as_of: date,
    *,
    through: date | None,
    max_days: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`history` with estimated rows added, the estimated rows) for a source whose rows end on
    `through`, a few days before `as_of` — a FOCUS export delivers a day a day or two late,
    Kubecost may not have answered for the newest day yet.

    Counted as $0, the missing days would lower the spend to date, and the models would
    extrapolate the gap (a seasonal model repeats a missing weekday every week): measured on the
    demo company, a lag of two days lowered the company's month-end forecast by 2-4 %. Each
    missing day is estimated as each tenant's usage of `source` (`day`, `tenant_id`, `cost_usd`:
    usage charges only) on the same weekday a week before, until the rows land and the day is
    forecast again. Nothing is estimated when `source` reaches `as_of`, when it ends more than
    `max_days` days before it (an export that stopped is named by its freshness check, not
    papered over), or when it did not have rows on each of the 7 days up to `through` (a source
    often silent for a day may simply have had nothing to bill)."""
    empty = history.iloc[0:0]
    if through is None or not 0 < (as_of - through).days <= max_days:
        return history, empty
    week = {through - timedelta(days=k) for k in range(7)}
    if not week <= set(source.loc[source["cost_usd"] != 0, "day"]):
        return history, empty
    rows = []
    for k in range(1, (as_of - through).days + 1):
        day = through + timedelta(days=k)
        week_before = source[source["day"] == day - timedelta(days=7)]
        rows.append(week_before[["tenant_id", "cost_usd"]].assign(day=day))
    estimated = pd.concat(rows, ignore_index=True)
    estimated = estimated[estimated["cost_usd"] != 0]
    if "charge_category" in history:
        estimated = estimated.assign(charge_category="Usage")
    estimated = estimated[[c for c in history.columns if c in estimated.columns]]
    return pd.concat([history, estimated], ignore_index=True), estimated


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

    `daily` has at least `day`, `tenant_id`, `cost_usd` (any finer grain is summed) and may have
    `charge_category` / `charge_frequency` (FOCUS) to mark known, non-usage charges. Tenants in
    `tenants` without rows are forecast as zero; `budgets` maps tenant id (or `__company__`) to
    the monthly budget in USD.
    """
    start = as_of - timedelta(days=history_days - 1)
    daily = daily[(daily["day"] >= start) & (daily["day"] <= as_of)]
    kind = charge_kind(daily)
    usage = daily[kind == USAGE]
    wide = daily_matrix(usage, start, as_of)
    ids = set(wide.index) | set(daily["tenant_id"].unique())
    if tenants is not None:
        ids |= set(tenants)
    wide = wide.reindex(sorted(ids), fill_value=0.0)
    wide.loc[COMPANY] = wide.sum(axis=0)
    with_company = pd.concat([daily, daily.assign(tenant_id=COMPANY)], ignore_index=True)
    to_date, expected = known_charges(with_company, as_of, wide.index)
    one_off = with_company[charge_kind(with_company) == "one_off"]
    surprises = daily_matrix(one_off, start, as_of).reindex(wide.index, fill_value=0.0)
    result = forecast_matrix(
        wide.to_numpy(),
        list(wide.columns),
        params,
        known_to_date=to_date,
        known_remaining=expected,
        surprises=surprises.to_numpy(),
    )
    out = pd.DataFrame(result)
    out.insert(0, "tenant_id", list(wide.index))
    out.insert(0, "day", as_of)
    out["month"] = as_of.replace(day=1)
    budgets = budgets or {}
    out["budget_usd"] = [budgets.get(t) for t in out["tenant_id"]]
    return COST_FORECASTS.conform(out)
