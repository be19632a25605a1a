"""Protects month-end forecasts: fallbacks, seasonality, step changes, intervals, baseline."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from cost_pipeline.lib.forecasting import (
    MODELS,
    ForecastParams,
    forecast_month_end,
    reference_curve,
)

AS_OF = date(2026, 6, 14)  # June has 30 days: 16 left
WEEKLY = np.array([1.2, 1.2, 1.2, 1.2, 1.2, 0.5, 0.5])


def _daily(values: dict[str, list[float]], end: date = AS_OF) -> pd.DataFrame:
    rows = []
    for tenant, series in values.items():
        for i, v in enumerate(series):
            rows.append(
                {
                    "day": end - timedelta(days=len(series) - 1 - i),
                    "tenant_id": tenant,
                    "cost_usd": v,
                }
            )
    return pd.DataFrame(rows)


def _seasonal(days: int, level: float, end: date = AS_OF, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    dows = [(end - timedelta(days=days - 1 - i)).weekday() for i in range(days)]
    return list(level * WEEKLY[dows] * rng.lognormal(0, 0.05, days))


def _row(out: pd.DataFrame, tenant: str) -> pd.Series:
    return out.set_index("tenant_id").loc[tenant]


def test_all_zero_and_absent_tenants_forecast_zero() -> None:
    daily = _daily({"quiet": [0.0] * 120, "busy": _seasonal(120, 10)})
    out = forecast_month_end(daily, AS_OF, tenants=["quiet", "busy", "absent"])
    for tenant in ("quiet", "absent"):
        row = _row(out, tenant)
        assert row["model"] == "zero"
        assert row["forecast_usd"] == row["upper_95_usd"] == row["naive_run_rate_usd"] == 0


def test_short_history_uses_mean_of_active_days_with_wide_interval() -> None:
    daily = _daily({"new": [0.0] * 116 + [4.0, 6.0, 5.0, 5.0]})
    row = _row(forecast_month_end(daily, AS_OF), "new")
    assert row["model"] == "short_history"
    assert row["history_days"] == 4
    # 20 spent so far, 16 more days at the active mean of 5.
    assert row["spend_to_date_usd"] == pytest.approx(20.0)
    assert row["forecast_usd"] == pytest.approx(20 + 16 * 5)
    assert row["upper_80_usd"] - row["lower_80_usd"] > 0.5 * 16 * 5


def test_weekly_seasonality_beats_the_naive_run_rate() -> None:
    # A month that started on a Monday: the first 14 days hold 4 weekend days of 30 -> the
    # naive run-rate is biased; the forecast knows what is left.
    full = _seasonal(150, 10, end=date(2026, 6, 30))
    actual = sum(full[-30:])
    daily = _daily({"t": full[:-16]})
    row = _row(forecast_month_end(daily, AS_OF), "t")
    assert row["model"] != "short_history"
    assert abs(row["forecast_usd"] - actual) / actual < 0.03
    assert row["lower_95_usd"] <= actual <= row["upper_95_usd"]
    assert row["lower_95_usd"] <= row["lower_80_usd"] <= row["forecast_usd"]
    assert row["forecast_usd"] <= row["upper_80_usd"] <= row["upper_95_usd"]


def test_step_change_is_followed_not_averaged_away() -> None:
    # Spend doubled 10 days ago and stays there: the forecast projects the new level.
    before = _seasonal(110, 10, end=AS_OF - timedelta(days=10))
    after = _seasonal(10, 20, seed=1)
    row = _row(forecast_month_end(_daily({"t": before + after}), AS_OF), "t")
    new_level_rest = sum(_seasonal(16, 20, end=date(2026, 6, 30), seed=2))
    expected = row["spend_to_date_usd"] + new_level_rest
    assert abs(row["forecast_usd"] - expected) / expected < 0.1
    assert row["model"] in MODELS


def test_one_day_spike_is_not_projected_over_the_month() -> None:
    series = _seasonal(120, 10)
    series[-1] *= 8  # today's incident
    row = _row(forecast_month_end(_daily({"t": series}), AS_OF), "t")
    # The naive run-rate spreads the spike over the month; the forecast does not.
    calm = row["spend_to_date_usd"] + 16 * 10 * WEEKLY.mean()
    assert abs(row["forecast_usd"] - calm) / calm < 0.08
    assert row["naive_run_rate_usd"] > row["forecast_usd"]


def test_company_row_and_budgets() -> None:
    daily = _daily({"a": _seasonal(120, 10), "b": _seasonal(120, 5, seed=3)})
    out = forecast_month_end(daily, AS_OF, budgets={"a": 100.0, "__company__": 500.0})
    company = _row(out, "__company__")
    assert company["spend_to_date_usd"] == pytest.approx(out["spend_to_date_usd"][:2].sum())
    assert company["budget_usd"] == 500.0
    assert _row(out, "a")["budget_usd"] == 100.0 and pd.isna(_row(out, "b")["budget_usd"])
    assert set(out["day"]) == {AS_OF} and set(out["month"]) == {date(2026, 6, 1)}


def test_last_day_of_month_has_no_uncertainty_left() -> None:
    end = date(2026, 6, 30)
    row = _row(forecast_month_end(_daily({"t": _seasonal(120, 10, end=end)}, end), end), "t")
    assert row["forecast_usd"] == pytest.approx(row["spend_to_date_usd"])
    assert row["lower_95_usd"] == pytest.approx(row["upper_95_usd"])


def test_wider_interval_scale_widens_intervals() -> None:
    daily = _daily({"t": _seasonal(120, 10)})
    narrow = _row(forecast_month_end(daily, AS_OF), "t")
    wide = _row(forecast_month_end(daily, AS_OF, params=ForecastParams(interval_scale=3)), "t")
    assert (
        wide["upper_80_usd"] - wide["lower_80_usd"]
        > narrow["upper_80_usd"] - narrow["lower_80_usd"]
    )


def test_three_week_old_tenant_is_forecast_from_its_own_days() -> None:
    series = [0.0] * 100 + _seasonal(20, 10)
    row = _row(forecast_month_end(_daily({"t": series}), AS_OF), "t")
    assert row["model"] in MODELS
    calm = row["spend_to_date_usd"] + 16 * 10 * WEEKLY.mean()
    assert abs(row["forecast_usd"] - calm) / calm < 0.1


def _sparse(days: int, calls_per_day: float, seed: int, end: date = AS_OF) -> list[float]:
    """A small tenant: a few heavy-tailed calls a day, weekday rhythm, many empty days."""
    rng = np.random.default_rng(seed)
    dows = [(end - timedelta(days=days - 1 - i)).weekday() for i in range(days)]
    calls = rng.poisson(calls_per_day * WEEKLY[dows])
    return [float(rng.lognormal(-3, 1.2, c).sum()) for c in calls]


def test_sparse_tenant_is_forecast_from_its_long_run_level_not_its_lucky_week() -> None:
    big = _seasonal(120, 100)
    small = _sparse(120, 0.8, seed=4)
    small[-3] += 2.0  # one expensive call: many times the tenant's usual week
    row = _row(forecast_month_end(_daily({"big": big, "small": small}), AS_OF), "small")
    assert row["model"] == "pooled"
    level = np.mean(small[:-14])  # the long-run mean daily spend
    remaining = row["forecast_usd"] - row["spend_to_date_usd"]
    assert remaining == pytest.approx(16 * level, rel=0.3)
    # The naive run-rate projects the lucky call over the rest of the month.
    assert row["naive_run_rate_usd"] - row["spend_to_date_usd"] > 1.5 * remaining
    # A right-skewed interval: more room above the forecast than below.
    assert row["upper_80_usd"] - row["forecast_usd"] > row["forecast_usd"] - row["lower_80_usd"]


def test_reference_curve_recovers_weekday_profile_and_growth_despite_spikes() -> None:
    days = 119
    dows = np.array([(AS_OF - timedelta(days=days - 1 - i)).weekday() for i in range(days)])
    growth = np.exp(0.002 * np.arange(days + 16))
    rng = np.random.default_rng(5)
    pool = 100 * WEEKLY[dows] * growth[:days] * rng.lognormal(0, 0.05, days)
    pool[[30, 70, 110]] *= 6  # incidents in the pool
    future_dows = np.array([(AS_OF + timedelta(days=i)).weekday() for i in range(1, 17)])
    curve, future = reference_curve(pool, dows, future_dows, ForecastParams())
    truth = 100 * WEEKLY[future_dows] * growth[days:]
    assert future.sum() == pytest.approx(truth.sum(), rel=0.03)
    assert np.allclose(future, truth, rtol=0.06)
    assert curve.shape == (days,)


def test_reference_curve_is_flat_without_enough_pool() -> None:
    dows = np.arange(10) % 7
    curve, future = reference_curve(np.ones(10), dows, np.arange(5) % 7, ForecastParams())
    assert (curve == 1).all() and (future == 1).all()


def test_own_model_is_chosen_when_a_tenant_has_its_own_weekly_rhythm() -> None:
    # Busy at weekends while the pool is busy on weekdays: the pooled weekday profile misses
    # it, the backtest shows it, and an own-series model forecasts the rest of the month.
    end = date(2026, 6, 30)
    weekend = np.array([0.5] * 5 + [2.25, 2.25])
    rng = np.random.default_rng(1)
    dows = [(end - timedelta(days=135 - i)).weekday() for i in range(136)]
    full = list(10 * weekend[dows] * rng.lognormal(0, 0.03, 136))
    out = forecast_month_end(_daily({"wk": full[:-16], "pool": _seasonal(120, 500)}), AS_OF)
    row = _row(out, "wk")
    assert row["model"] in ("dow_level_7", "dow_level_28", "dow_trend_56")
    assert _row(out, "pool")["model"] in MODELS
    actual = sum(full[-30:])
    assert abs(row["forecast_usd"] - actual) / actual < 0.03
