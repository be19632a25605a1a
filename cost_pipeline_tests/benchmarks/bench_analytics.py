"""`make bench`: forecasts and anomaly scores for 1,000 tenants x 180 days, timed per candidate.

    python -m cost_pipeline_tests.benchmarks.bench_analytics [--tenants 1000] [--days 180]

Prints the fit + backtest time of each statsforecast candidate over all series, with as many
weekly windows as their history allows (the expensive AutoTheta only for the `expensive_top_n`
largest, on `expensive_windows` windows and its last `expensive_train_days`), then the whole
forecast and anomaly pass for one as-of day (budget: 60 s on 2 cores), and
`forecast_month_end` per as-of day for a demo-sized company (31 tenants) with the same history,
as the asset calls it once a day.
"""

from __future__ import annotations

import argparse
import time
from datetime import date, timedelta

import numpy as np

from cost_pipeline.lib import forecasting as fc
from cost_pipeline.lib.anomaly import score_days
from cost_pipeline_tests.benchmarks.synthetic import synthetic_daily_summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--days", type=int, default=180)
    args = parser.parse_args(argv)
    as_of = date(2026, 6, 14)
    start = as_of - timedelta(days=args.days - 16)
    daily, _ = synthetic_daily_summary(args.tenants, start, args.days, seed=99)
    wide = fc.daily_matrix(daily, start, as_of)
    values = wide.to_numpy()
    first = np.argmax(values != 0, axis=1)
    params = fc.ForecastParams()
    counts = fc.window_counts(values.shape[1] - first, 16, params)
    windows = int(counts.max())
    print(f"== Candidates: fit + backtest ({windows} windows), 16-day horizon ==")
    for name in (*fc.CHEAP_MODELS, *fc.EXPENSIVE_MODELS):
        rows, w, firsts = np.flatnonzero(counts == windows), windows, first
        if name in fc.EXPENSIVE_MODELS:
            rows = rows[np.argsort(-values[rows, -28:].sum(axis=1))][: params.expensive_top_n]
            w = min(w, params.expensive_windows)
            firsts = np.maximum(first, values.shape[1] - params.expensive_train_days)
        df = fc._long(values, rows, firsts)
        began = time.perf_counter()
        fc._sf_run("forecast", df, (name,), 16)
        fc._sf_run("cv", df, (name,), 16, n_windows=w, step_size=7)
        print(f"{name:>14}: {time.perf_counter() - began:6.2f} s for {len(rows)} series")
    began = time.perf_counter()
    fc.forecast_month_end(daily, as_of)
    t_fc = time.perf_counter() - began
    began = time.perf_counter()
    score_days(daily, [as_of])
    t_an = time.perf_counter() - began
    print(
        f"\n== {args.tenants} tenants x {args.days} days: forecast {t_fc:.1f} s, anomaly scores "
        f"{t_an:.1f} s, total {t_fc + t_an:.1f} s (budget 60 s) =="
    )
    small, _ = synthetic_daily_summary(31, start, args.days, seed=7)
    days = [as_of - timedelta(days=i) for i in range(7)]
    fc.forecast_month_end(small[small["day"] <= days[-1]], days[-1])  # warm-up
    times = []
    for day in days:
        began = time.perf_counter()
        fc.forecast_month_end(small[small["day"] <= day], day)
        times.append(time.perf_counter() - began)
    print(
        f"== 31 tenants x {args.days} days, forecast_month_end per as-of day: mean "
        f"{np.mean(times):.3f} s, max {np.max(times):.3f} s over {len(days)} days =="
    )


if __name__ == "__main__":
    main()
