"""`make eval`: forecasts and anomaly scores measured against labelled demo scenarios.

    python -m cost_pipeline_tests.benchmarks.evaluate [--seeds holdout|tune] [--synthetic]

For each seed: the demo company's events for ~6 months, priced and summed into the
`daily_cost_summary` shape, with the generator's labelled incidents. Prints per detector
precision, recall, F1 and false alarms per tenant-quarter; month-end MAPE on day 7/14/21 beside
the naive run-rate's; 80 % interval coverage; and the time for one as-of day of 1,000 tenants x
180 days. Parameters were tuned on TUNE_SEEDS only; the report is for HOLDOUT_SEEDS.
"""

from __future__ import annotations

import argparse
import time
from datetime import date, timedelta

import pandas as pd

from cost_pipeline.lib.anomaly import score_days
from cost_pipeline.lib.config import load_config
from cost_pipeline.lib.evaluation import (
    alerts_of,
    detector_metrics,
    forecast_metrics,
    incident_sizes,
    month_totals,
    months_in,
    summarize_events,
)
from cost_pipeline.lib.forecasting import forecast_month_end
from cost_pipeline_tests.benchmarks.synthetic import synthetic_daily_summary

TUNE_SEEDS = (1, 2)
HOLDOUT_SEEDS = (11, 12, 13)
START = date(2026, 3, 1)
DAYS = 184
SCORE_FROM_DAY = 35
DETECTORS = ("total", "drivers", "multivariate", "combined")


def demo_scenario(seed: int, events_per_day: int) -> tuple[pd.DataFrame, list[dict]]:
    """(daily_cost_summary-shaped rows, incidents) of the demo company for one seed."""
    from cost_pipeline.demo.generator import DemoCompany
    from cost_pipeline.lib.pricing import PricingEngine

    config = load_config()
    company = DemoCompany(config, seed=seed)
    engine = PricingEngine(overrides=config.price_overrides)
    days = [START + timedelta(days=i) for i in range(DAYS)]
    parts = [
        summarize_events(engine.price(company.events_for_day(d, events_per_day))) for d in days
    ]
    incidents = company.incidents(START, DAYS)
    for inc in incidents:
        for k in ("start_day", "end_day"):
            if not isinstance(inc[k], date):
                inc[k] = date.fromisoformat(str(inc[k])[:10])
    return pd.concat(parts, ignore_index=True), incidents


def scenario(seed: int, events_per_day: int, synthetic: bool):
    if not synthetic:
        try:
            return demo_scenario(seed, events_per_day)
        except ImportError as exc:
            print(f"demo generator or pricing not available ({exc}); using synthetic series")
    return synthetic_daily_summary(30, START, DAYS, seed=seed, incidents_per_tenant_quarter=1.5)


def evaluate_seed(daily: pd.DataFrame, incidents: list[dict]) -> tuple[dict, pd.DataFrame]:
    score_on = [START + timedelta(days=i) for i in range(SCORE_FROM_DAY, DAYS)]
    scores = score_days(daily, score_on)
    inside = [i for i in incidents if i["start_day"] >= score_on[0]]
    sizes = incident_sizes(daily, inside)
    tenant_days = scores.loc[scores["driver"] == "tenant"].shape[0]
    per_detector = {
        d: detector_metrics(alerts_of(scores, d), inside, sizes, tenant_days=tenant_days)
        for d in DETECTORS
    }
    rows = []
    for month in months_in(START, DAYS, min_history_days=SCORE_FROM_DAY):
        for day in (7, 14, 21):
            as_of = month.replace(day=day)
            rows.append(forecast_month_end(daily[daily["day"] <= as_of], as_of))
    forecasts = pd.concat(rows, ignore_index=True)
    return per_detector, forecasts.merge(month_totals(daily), on=["tenant_id", "month"])


def timing_run() -> float:
    daily, _ = synthetic_daily_summary(1000, date(2026, 1, 1), 180, seed=99)
    as_of = date(2026, 6, 29)
    began = time.perf_counter()
    forecast_month_end(daily, as_of)
    score_days(daily, [as_of])
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", choices=["holdout", "tune"], default="holdout")
    parser.add_argument("--events-per-day", type=int, default=6000)
    parser.add_argument("--synthetic", action="store_true", help="skip the demo generator")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)
    seeds = HOLDOUT_SEEDS if args.seeds == "holdout" else TUNE_SEEDS
    metrics: list[pd.DataFrame] = []
    forecasts: list[pd.DataFrame] = []
    for seed in seeds:
        began = time.perf_counter()
        daily, incidents = scenario(seed, args.events_per_day, args.synthetic)
        per_detector, fc = evaluate_seed(daily, incidents)
        metrics.append(pd.DataFrame(per_detector).T.assign(seed=seed))
        forecasts.append(fc.assign(seed=seed))
        print(f"seed {seed}: {len(incidents)} incidents, {time.perf_counter() - began:.0f} s")
    print(f"\n== Anomaly detectors ({args.seeds} seeds {seeds}; alerts = high or critical) ==")
    table = pd.concat(metrics).reset_index(names="detector")
    keys = ["alerts", "incidents", "detected", "false_alarms", "tenant_quarters"]
    sums = table.groupby("detector")[keys].sum()
    sums["detected_first_day"] = table.groupby("detector")["detected_first_day"].sum()
    fa = sums["false_alarms"]
    true_alerts = sums["alerts"] - fa
    sums["precision"] = true_alerts / sums["alerts"]
    sums["recall"] = sums["detected"] / sums["incidents"]
    sums["f1"] = 2 * sums["precision"] * sums["recall"] / (sums["precision"] + sums["recall"])
    sums["false_alarms_per_tenant_quarter"] = fa / sums["tenant_quarters"]
    sums["recall_all_sizes"] = table.groupby("detector")["recall_all_sizes"].mean()
    print(sums.round(3).to_string())
    print("(incidents = those measured >= 3x the usual daily cost of their driver)")
    print("\n== Month-end forecasts (tenant-months with actual >= $1) ==")
    all_fc = pd.concat(forecasts, ignore_index=True)
    print(forecast_metrics(all_fc).round(1).to_string())
    company = all_fc[all_fc["tenant_id"] == "__company__"]
    cerr = ((company["forecast_usd"] - company["actual_usd"]).abs() / company["actual_usd"]) * 100
    nerr = (company["naive_run_rate_usd"] - company["actual_usd"]).abs() / company["actual_usd"]
    print(f"company total: MAPE {cerr.mean():.1f} % vs naive {nerr.mean() * 100:.1f} %")
    print("models chosen:", all_fc["model"].value_counts().to_dict())
    if not args.no_timing:
        print(f"\n== Timing: 1,000 tenants x 180 days, one as-of day: {timing_run():.1f} s ==")


if __name__ == "__main__":
    main()
