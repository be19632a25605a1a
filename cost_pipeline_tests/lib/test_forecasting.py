"""Protects month-end forecasts: fallbacks, seasonality, step changes, intervals, baseline."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from cost_pipeline.lib.forecasting import (
    FALLBACKS,
    MODELS,
    forecast_month_end,
    with_lagging_usage,
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
    assert set(row["model"].split("+")) <= set(MODELS)
    level = np.mean(small[:-14])  # the long-run mean daily spend
    remaining = row["forecast_usd"] - row["spend_to_date_usd"]
    assert remaining == pytest.approx(16 * level, rel=0.3)
    # The naive run-rate projects the lucky call over the rest of the month.
    assert row["naive_run_rate_usd"] - row["spend_to_date_usd"] > 1.5 * remaining
    # A right-skewed interval: more room above the forecast than below.
    assert row["upper_80_usd"] - row["forecast_usd"] > row["forecast_usd"] - row["lower_80_usd"]


def test_churned_tenant_is_not_forecast_at_full_spend() -> None:
    series = _seasonal(100, 50) + [0.0] * 20
    row = _row(forecast_month_end(_daily({"gone": series}), AS_OF), "gone")
    assert row["model"] == "churned" and row["model"] in FALLBACKS
    assert row["forecast_usd"] == pytest.approx(row["spend_to_date_usd"])


def test_collapse_is_followed_not_the_old_level() -> None:
    series = _seasonal(110, 100, end=AS_OF - timedelta(days=10)) + _seasonal(10, 10, seed=3)
    row = _row(forecast_month_end(_daily({"t": series}), AS_OF), "t")
    assert row["model"] == "level_shift"
    remaining = row["forecast_usd"] - row["spend_to_date_usd"]
    assert remaining == pytest.approx(16 * 10 * WEEKLY.mean(), rel=0.25)


def test_credit_and_month_start_fee_are_known_amounts_not_extrapolated() -> None:
    base = _daily({"t": _seasonal(120, 10)})
    charges = pd.DataFrame(
        {
            "day": [date(2026, 5, 20), date(2026, 6, 1), date(2026, 6, 10)],
            "tenant_id": "t",
            "cost_usd": [3000.0, 3000.0, -1000.0],
            "charge_category": ["Purchase", "Purchase", "Credit"],
            "charge_frequency": ["Recurring", "Recurring", "One-Time"],
        }
    )
    plain = _row(forecast_month_end(base, AS_OF), "t")
    row = _row(forecast_month_end(pd.concat([base, charges]), AS_OF), "t")
    # The fee and the credit count once in the spend to date, and last month's fee on the 20th
    # is expected again on June 20th.
    assert row["spend_to_date_usd"] == pytest.approx(plain["spend_to_date_usd"] + 2000.0)
    assert row["known_remaining_usd"] == pytest.approx(3000.0)
    # The usage forecast is not moved by them: only the backtest sees the months as billed
    # (credit included), which may change which candidates join the combination by a little.
    usage_left = row["forecast_usd"] - row["spend_to_date_usd"] - row["known_remaining_usd"]
    plain_left = plain["forecast_usd"] - plain["spend_to_date_usd"]
    assert usage_left == pytest.approx(plain_left, rel=0.03)


def test_each_forecast_names_its_model_and_backtest_error() -> None:
    daily = _daily({f"t{i}": _seasonal(120, 10 + i, seed=i) for i in range(5)})
    out = forecast_month_end(daily, AS_OF)
    # A model, or the combination of the few with the best backtest ("SeasWA+AutoTheta").
    assert {part for label in out["model"] for part in label.split("+")} <= set(MODELS)
    assert out["backtest_error_pct"].notna().all()
    assert (out["lower_95_usd"] <= out["lower_80_usd"]).all()
    assert (out["lower_80_usd"] <= out["forecast_usd"]).all()
    assert (out["forecast_usd"] <= out["upper_80_usd"]).all()
    assert (out["upper_80_usd"] <= out["upper_95_usd"]).all()


def test_a_tenant_whose_bills_bring_credits_gets_room_for_them_in_its_interval() -> None:
    """One-off credits are not forecast, but a series that has had them in its backtest months
    is calibrated on those months as billed: its interval makes room below the forecast."""
    usage = {t: _seasonal(120, 100, seed=5) for t in ("plain", "credited")}
    base = _daily(usage)
    credits = pd.DataFrame(
        {
            "day": [AS_OF - timedelta(days=d) for d in (20, 33, 45)],
            "tenant_id": "credited",
            "cost_usd": -800.0,
            "charge_category": "Credit",
            "charge_frequency": "One-Time",
        }
    )
    out = forecast_month_end(pd.concat([base, credits], ignore_index=True), AS_OF)
    plain, credited = _row(out, "plain"), _row(out, "credited")
    # Same usage, same usage forecast: the credits in the past are not projected.
    remaining = plain["forecast_usd"] - plain["spend_to_date_usd"]
    assert credited["forecast_usd"] - credited["spend_to_date_usd"] == pytest.approx(remaining)
    below = {r: _row(out, r)["forecast_usd"] - _row(out, r)["lower_95_usd"] for r in usage}
    assert below["credited"] > 2 * below["plain"]


def test_a_ramp_is_not_projected_at_a_flat_level_since_a_shift() -> None:
    """A tenant growing 3 % a day for four weeks passes the level-shift test, but a flat level
    since the 'shift' would lag it: the backtest's choice stands, and beats the flat level.
    (In its first days above 1.5x its old level a ramp still looks like a fresh step.)"""
    days = 150
    growth = np.exp(0.03 * np.clip(np.arange(days) - (days - 45), 0, None))
    series = list(np.array(_seasonal(days, 10, end=date(2026, 6, 30))) * growth)
    actual = sum(series[-30:])
    row = _row(forecast_month_end(_daily({"t": series[:-16]}), AS_OF), "t")
    assert row["model"] != "level_shift"
    assert row["forecast_usd"] < actual  # still short of a ramp that goes on, but closer
    flat = row["spend_to_date_usd"] + 16 * np.median(series[-23:-16])
    assert abs(row["forecast_usd"] - actual) < abs(flat - actual)


@pytest.mark.parametrize("k", [5, 6, 12, 30])
def test_few_backtest_errors_still_give_calibrated_and_nested_intervals(k: int) -> None:
    """With fewer errors than a level's conformal rank needs (9 for 80 %, 39 for 95 %), the
    interval is not the sample's range (which made 80 % = 95 % and covered ~60 % of real
    months): it is a small-sample prediction interval, 95 % wider than 80 %, covering a new
    error at least as often as it says, and not much more."""
    from cost_pipeline.lib.forecasting import _conformal_quantiles

    rng = np.random.default_rng(k)
    hits = {0.8: 0, 0.95: 0}
    trials = 3000
    for _ in range(trials):
        sample = rng.normal(0.0, 0.3, k)
        bounds = _conformal_quantiles(sample, (0.8, 0.95))
        (lo80, hi80), (lo95, hi95) = bounds[0.8], bounds[0.95]
        assert lo95 <= lo80 < hi80 <= hi95
        new = rng.normal(0.0, 0.3)
        hits[0.8] += lo80 <= new <= hi80
        hits[0.95] += lo95 <= new <= hi95
    # Conformal ranks cover at least their level, and at most two ranks (2 / (k + 1)) more;
    # the t interval covers its level. Both within the noise of 3,000 trials.
    for level, hit in hits.items():
        assert level - 0.025 <= hit / trials <= level + 2 / (k + 1) + 0.025, (level, hit)


def test_a_sparse_tenants_wet_months_fit_in_its_interval() -> None:
    """A tenant spending on a third of days, by amounts that vary tenfold, has months at 3x
    the month before. Its interval is drawn on errors as shares of the forecast: as shares of
    the actual month (which cannot exceed 1) the 95 % interval missed a quarter of months,
    every one of them above."""
    rng = np.random.default_rng(0)
    days = list(pd.date_range(date(2024, 1, 1), date(2026, 7, 31)).date)
    series = {}
    for t in range(4):
        wet_share = 0.35 + 0.2 * np.sin(2 * np.pi * (np.arange(len(days)) / 365.25 + t / 4))
        wet = rng.random(len(days)) < wet_share
        series[f"t{t}"] = pd.Series(np.where(wet, rng.lognormal(0, 1.1, len(days)) * 10, 0.0), days)
    daily = pd.concat(
        pd.DataFrame({"day": s.index, "tenant_id": t, "cost_usd": s.to_numpy()})
        for t, s in series.items()
    )
    daily = daily[daily["cost_usd"] > 0]
    inside = {0.8: 0, 0.95: 0}
    above_80 = outcomes = 0
    for month in pd.date_range("2026-01-01", "2026-07-01", freq="MS").date:
        month_end = (pd.Timestamp(month) + pd.offsets.MonthEnd(0)).date()
        for origin in (7, 14):
            as_of = month.replace(day=origin)
            out = forecast_month_end(daily[daily["day"] <= as_of], as_of).set_index("tenant_id")
            for t, s in series.items():
                actual = s[month:month_end].sum()
                row = out.loc[t]
                outcomes += 1
                inside[0.8] += row["lower_80_usd"] <= actual <= row["upper_80_usd"]
                inside[0.95] += row["lower_95_usd"] <= actual <= row["upper_95_usd"]
                above_80 += actual > row["upper_80_usd"]
    assert outcomes == 56
    assert 0.75 <= inside[0.8] / outcomes <= 0.95
    assert inside[0.95] / outcomes >= 0.9
    assert above_80 <= 0.15 * outcomes


def test_a_lagging_sources_missing_days_are_estimated_only_within_the_lag() -> None:
    as_of = date(2026, 3, 18)
    days = [as_of - timedelta(days=i) for i in range(20, -1, -1)]
    cloud = pd.DataFrame({"day": days, "tenant_id": "a", "cost_usd": [float(d.day) for d in days]})
    history = pd.concat(
        [cloud, pd.DataFrame({"day": days, "tenant_id": "b", "cost_usd": 5.0})], ignore_index=True
    ).assign(charge_category="Usage")
    delivered = history[history["day"] <= as_of - timedelta(days=2)]

    # Two days behind: each is the same weekday a week before, for the source's tenants only.
    out, estimated = with_lagging_usage(
        delivered, cloud, as_of, through=as_of - timedelta(days=2), max_days=3
    )
    assert estimated.to_dict("records") == [
        {"day": date(2026, 3, 17), "tenant_id": "a", "cost_usd": 10.0, "charge_category": "Usage"},
        {"day": date(2026, 3, 18), "tenant_id": "a", "cost_usd": 11.0, "charge_category": "Usage"},
    ]
    assert len(out) == len(delivered) + 2
    # Up to date, never delivered, or further behind than the lag allowed: nothing is added.
    for through in (as_of, None, as_of - timedelta(days=4)):
        same, none = with_lagging_usage(delivered, cloud, as_of, through=through, max_days=3)
        assert none.empty and same is delivered
    # A source with a silent day in the week before: a missing day is no sign of a lag.
    sparse = cloud[cloud["day"] != as_of - timedelta(days=5)]
    same, none = with_lagging_usage(
        delivered, sparse, as_of, through=as_of - timedelta(days=2), max_days=3
    )
    assert none.empty and same is delivered
