"""Sustained level shifts (steps up, drops, collapses) at the end of daily cost series.

One vectorized test for all series at once (a matrix of series x days, NaN before a series
starts). For every candidate start `k` among the last `search_days` days (at least
`min_days_after` days after it), the days from `k` to the end are compared with the
`baseline_days` days before `k`:

- both sides are divided by the series' own weekday factors (from the baseline days), so a
  weekend is not a drop;
- the "after" level is the **median** of its days (one spike or one quiet day does not make a
  shift); the "before" level is the median too;
- in logs (cost noise is multiplicative and right-skewed): z = log(after / before) /
  (noise x sqrt(pi / 2 x (1 / n_after + 1 / n_before))), the standard error of the difference
  of two medians (the level before is an estimate too), with noise = 1.4826 x the MAD of the
  baseline days' log ratio to their level (at least `rel_noise_floor`);
- the median of the last `min_days_after` days must pass the ratio too (a spike that is over
  is not a step).

The chosen start is the candidate with the largest |z| among those whose ratio after / before
passes `min_ratio` (or 1 / `min_ratio` for a drop), on series empty on at most `max_zero_share`
of the baseline days (intermittent series are not tested). It is then moved forward past the
days still nearer the old level, and the shift is kept only if the days since the moved start
pass the test again and number at least `min_days_after` (persistence). It is a two-sample
test, like one step of a binary-segmentation changepoint search; the forecaster uses it to stop
projecting a level the series has left, and the anomaly scorer to report steps and drops that a
one-day spike test never sees.

`count_shift` tests the same start on a series of call counts (a Poisson test with
overdispersion, in square roots): a shift in LLM spend that is neither in the calls nor in the
cost per call is the noise of a driver making few calls, not a shift.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


def nanquantile0(a: np.ndarray, q: float) -> np.ndarray:
    """`np.nanquantile(a, q, axis=0)` (linear interpolation) by one sort: NaNs sort last, so
    each column's quantile is read at its own count of values. numpy's version falls back to a
    Python loop over the columns for short axes, hundreds of times slower on a panel."""
    ordered = np.sort(a, axis=0)
    n = np.sum(~np.isnan(a), axis=0)
    position = q * np.maximum(n - 1, 0)
    lo = np.floor(position).astype(np.intp)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    low = np.take_along_axis(ordered, lo[None], axis=0)[0]
    high = np.take_along_axis(ordered, hi[None], axis=0)[0]
    # `low + (high - low) * frac`, as numpy computes it, without inf - inf when equal.
    out = np.where(high == low, low, low + (high - low) * (position - lo))
    return np.where(n > 0, out, np.nan)


def nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """`np.nanmedian(a, axis=1)` of a 2-D array, by `nanquantile0`."""
    return nanquantile0(a.T, 0.5)


@dataclass(frozen=True)
class ShiftParams:
    search_days: int = 28
    min_days_after: int = 3
    baseline_days: int = 28
    min_ratio: float = 1.25
    min_z: float = 4.0
    rel_noise_floor: float = 0.05
    # A series empty on more than this share of its baseline days is intermittent: a median
    # of its days says little, and a run of empty days is its usual pattern, not a drop.
    max_zero_share: float = 0.2


def _weekday_factors(values: np.ndarray, dows: np.ndarray) -> np.ndarray:
    """(n, 7) median of each weekday / mean of the weekday medians over `values` (NaN-aware;
    a median, so a spike in the window does not make its weekday look busy), 1 if unknown."""
    out = np.full((values.shape[0], 7), np.nan)
    for d in range(7):
        cols = dows == d
        if cols.any():
            out[:, d] = nanmedian_rows(values[:, cols])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = out / np.nanmean(out, axis=1, keepdims=True)
    out[~np.isfinite(out) | (out <= 0.05)] = 1.0
    return out


def _log_noise(base: np.ndarray, level: np.ndarray, floor: float) -> np.ndarray:
    """Relative noise of the baseline days: 1.4826 x MAD of their log ratio to the level (cost
    noise is multiplicative and right-skewed; in logs a few expensive days do not pass for a
    shift), at least `floor`. Empty days count as 1 % of the level."""
    lv = np.where(level > 0, level, np.nan)[:, None]
    logs = np.log(np.maximum(base, 0.01 * lv) / lv)
    return np.fmax(1.4826 * nanmedian_rows(np.abs(logs)), floor)


def _log_z(
    after: np.ndarray,
    before: np.ndarray,
    noise: np.ndarray,
    n_after: np.ndarray,
    n_before: np.ndarray,
) -> np.ndarray:
    """z of log(after / before) against the standard error of the difference of two medians,
    of `n_after` and `n_before` days: the level before is an estimate too."""
    lv = np.where(before > 0, before, np.nan)
    n_a, n_b = np.maximum(n_after, 1), np.maximum(n_before, 1)
    se = noise * np.sqrt(np.pi / 2 * (1 / n_a + 1 / n_b))
    return np.log(np.maximum(after, 0.01 * lv) / lv) / np.where(se > 0, se, np.nan)


def level_shift(
    values: np.ndarray, dows: np.ndarray, params: ShiftParams = ShiftParams()
) -> dict[str, np.ndarray]:
    """Per series: `start` (column index of the shift, -1 if none), `ratio` (after / before),
    `z`, `before` and `after` (deseasonalized daily levels) and `days` (days since the start).
    """
    values = np.asarray(values, dtype=float)
    n, t = values.shape
    out = {
        "start": np.full(n, -1),
        "ratio": np.ones(n),
        "z": np.zeros(n),
        "before": np.zeros(n),
        "after": np.zeros(n),
        "days": np.zeros(n, dtype=int),
    }
    first_k = max(t - params.search_days, params.min_days_after)
    last_k = t - params.min_days_after
    if n == 0 or last_k < first_k or t < params.baseline_days + params.min_days_after:
        return out
    best_abs = np.zeros(n)
    best_noise = np.zeros(n)
    best_n_base = np.zeros(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = max(first_k - params.baseline_days, 0)
        factors = _weekday_factors(values[:, lo:first_k], dows[lo:first_k])
        # Weekday factors need two weeks of the series before the search window.
        known_factors = np.sum(~np.isnan(values[:, lo:first_k]), axis=1) >= 14
        deseason = values / factors[:, dows]
        for k in range(first_k, last_k + 1):
            base = deseason[:, max(k - params.baseline_days, 0) : k]
            after = deseason[:, k:]
            before_level = nanmedian_rows(base)
            after_level = nanmedian_rows(after)
            noise = _log_noise(base, before_level, params.rel_noise_floor)
            n_after = np.sum(~np.isnan(after), axis=1)
            n_base = np.sum(~np.isnan(base), axis=1)
            dense = np.sum(base == 0, axis=1) <= params.max_zero_share * np.maximum(n_base, 1)
            z = _log_z(after_level, before_level, noise, n_after, n_base)
            ratio = np.where(
                before_level > 0,
                after_level / np.where(before_level > 0, before_level, 1.0),
                np.where(after_level > 0, np.inf, 1.0),
            )
            # Sustained: the last `min_days_after` days are still at the new level (a spike
            # that is over is not a step).
            last = nanmedian_rows(deseason[:, t - params.min_days_after :])
            with np.errstate(invalid="ignore", divide="ignore"):
                last_ratio = np.where(before_level > 0, last / before_level, 1.0)
            up = (ratio >= params.min_ratio) & (last_ratio >= params.min_ratio)
            down = (ratio <= 1 / params.min_ratio) & (last_ratio <= 1 / params.min_ratio)
            big = up | down
            ok = (
                big
                & (np.abs(np.nan_to_num(z)) >= params.min_z)
                & (n_base >= params.baseline_days // 2)
                & known_factors
                & dense
                & (n_after >= params.min_days_after)
            )
            better = ok & (np.abs(np.nan_to_num(z)) > best_abs)
            best_abs = np.where(better, np.abs(z), best_abs)
            out["start"] = np.where(better, k, out["start"])
            out["ratio"] = np.where(better, ratio, out["ratio"])
            out["z"] = np.where(better, z, out["z"])
            out["before"] = np.where(better, before_level, out["before"])
            out["after"] = np.where(better, after_level, out["after"])
            best_noise = np.where(better, noise, best_noise)
            best_n_base = np.where(better, n_base, best_n_base)
    # The search favours an early start (more days after it); move the start forward past the
    # days that are still closer to the old level than to the new one. A shift must then still
    # have lasted `min_days_after` days since its (moved) start: persistence, not a fresh spike.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = np.arange(n)
        for _ in range(params.search_days):
            st = out["start"]
            movable = (st >= 0) & (st < t - 1)
            day = deseason[rows, np.clip(st, 0, t - 1)]
            old_side = np.abs(day - out["before"]) < np.abs(day - out["after"])
            step = movable & np.nan_to_num(old_side, nan=False).astype(bool)
            if not step.any():
                break
            out["start"] = np.where(step, st + 1, st)
        # The level since the moved start must still pass the test on its own (fewer days).
        st = out["start"]
        after = np.where(
            np.arange(t)[None, :] >= np.where(st >= 0, st, t)[:, None], deseason, np.nan
        )
        after_level = nanmedian_rows(after)
        n_after = np.sum(~np.isnan(after), axis=1)
        z = _log_z(after_level, out["before"], best_noise, n_after, best_n_base)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(out["before"] > 0, after_level / out["before"], np.inf)
        holds = np.where(
            out["ratio"] > 1, ratio >= params.min_ratio, ratio <= 1 / params.min_ratio
        ) & (np.abs(np.nan_to_num(z)) >= params.min_z)
        gone = (st >= 0) & ((t - st < params.min_days_after) | ~holds)
        out["after"] = np.where(st >= 0, after_level, out["after"])
        out["ratio"] = np.where(st >= 0, ratio, out["ratio"])
        out["z"] = np.where(st >= 0, z, out["z"])
        for key, none in (("start", -1), ("ratio", 1.0), ("z", 0.0), ("before", 0.0)):
            out[key] = np.where(gone, none, out[key])
        out["after"] = np.where(gone, 0.0, out["after"])
    out["days"] = np.where(out["start"] >= 0, t - out["start"], 0)
    return out


def count_shift(
    calls: np.ndarray,
    starts: np.ndarray,
    targets: np.ndarray,
    dows: np.ndarray,
    shift: ShiftParams,
) -> tuple[np.ndarray, np.ndarray]:
    """(ratio, z) of each series' calls since `starts` (series x target; -1: none) against the
    `baseline_days` before it: observed calls O over expected E (the baseline's rate x the
    after days' weekday weights, from the baseline's own weekday means). In square roots, where
    a Poisson count has a variance of 1/4 at any size (so a quiet day of a small driver is not
    "infinitely" low): z = 2 (sqrt(O) - sqrt(E)) / sqrt(phi (1 + W_after / W_before)), phi the
    baseline's overdispersion (at least 1: Poisson), the second term the uncertainty of the
    rate."""
    n, m = starts.shape
    ratio, z = np.ones((n, m)), np.zeros((n, m))
    width = shift.baseline_days
    for j, t in enumerate(targets):
        k = starts[:, j]
        rows = np.flatnonzero(k >= 0)
        if rows.size == 0:
            continue
        lo = max(int(k[rows].min()) - width, 0)
        cols = np.arange(lo, t + 1)
        c = calls[rows][:, cols]
        known = ~np.isnan(c)
        c = np.nan_to_num(c)
        kk = k[rows][:, None]
        before = known & (cols[None, :] >= kk - width) & (cols[None, :] < kk)
        after = known & (cols[None, :] >= kk)
        dw = dows[cols]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.stack(
                [(c * (before & (dw == d))).sum(1) / (before & (dw == d)).sum(1) for d in range(7)],
                axis=1,
            )
            weights = means / np.nanmean(means, axis=1, keepdims=True)
            weights = np.clip(np.nan_to_num(weights, nan=1.0, posinf=1.0), 0.05, 7.0)
            w = weights[:, dw]
            w_before, w_after = (w * before).sum(1), (w * after).sum(1)
            rate = (c * before).sum(1) / w_before
            expected = rate * w_after
            observed = (c * after).sum(1)
            mu = rate[:, None] * w
            # Overdispersion from the spread of the baseline's Pearson residuals (robustly: a
            # spike in the baseline must not make every shift look like noise).
            resid = np.where(
                before & (mu > 0), (c - mu) / np.sqrt(np.where(mu > 0, mu, 1.0)), np.nan
            )
            center = nanquantile0(resid.T, 0.5)
            phi = np.fmax((1.4826 * nanquantile0(np.abs(resid.T - center), 0.5)) ** 2, 1.0)
            phi = np.nan_to_num(phi, nan=1.0)
            zz = (
                2
                * (np.sqrt(observed) - np.sqrt(expected))
                / np.sqrt(phi * (1 + w_after / w_before))
            )
            rr = np.where(expected > 0, observed / expected, np.where(observed > 0, np.inf, 1.0))
        ok = (before.sum(1) >= width // 2) & (w_before > 0) & (w_after > 0)
        ratio[rows, j] = np.where(ok, rr, 1.0)
        z[rows, j] = np.where(ok, np.nan_to_num(zz), 0.0)
    return ratio, z
