"""Real-shaped scenario families: month-end forecasts against run-rate, seasonal naive and the
best single statsforecast model, interval coverage, and anomaly F1 on the incident families.

    python -m cost_pipeline_tests.benchmarks.evaluate_families [--tenants 16] [--full]

Per family and as-of day of month (7, 14, 21): MAPE of the month total (tenant-months with an
actual total of at least $1) for the project, the run-rate (spend to date / days elapsed x days
in month), statsforecast `SeasonalNaive(7)` and every other single statsforecast model fitted on
the raw daily totals; "best_sf" is the single model with the lowest MAPE pooled over all
families at that origin (chosen with hindsight, so it is a strong bar). `--full` adds AutoETS
and MSTL to the single models (slow: ~0.2 s per AutoETS fit).
"""

from __future__ import annotations

import argparse
import calendar
import logging
import time
import warnings
from datetime import date, timedelta

import numpy as np
import pandas as pd

from cost_pipeline.lib.anomaly import score_days
from cost_pipeline.lib.evaluation import (
    alert_messages,
    detector_metrics,
    incident_thresholds,
    message_metrics,
)
from cost_pipeline.lib.forecasting import charge_kind, forecast_month_end
from cost_pipeline_tests.benchmarks.scenarios import ANOMALY_FAMILIES, FAMILIES, family

START = date(2025, 10, 1)
DAYS = 243  # to 2026-05-31
EVAL_MONTHS = [date(2026, m, 1) for m in (2, 3, 4, 5)]
ORIGINS = (7, 14, 21)


def _sf_models(full: bool) -> list:
    from statsforecast.models import (
        ADIDA,
        IMAPA,
        MSTL,
        AutoETS,
        AutoTheta,
        CrostonSBA,
        SeasonalNaive,
        SeasonalWindowAverage,
        WindowAverage,
    )

    models = [
        SeasonalNaive(season_length=7),
        SeasonalWindowAverage(season_length=7, window_size=4),
        WindowAverage(window_size=28),
        IMAPA(),
        ADIDA(),
        CrostonSBA(),
        AutoTheta(season_length=7),
    ]
    if full:
        models += [AutoETS(season_length=7), MSTL(season_length=7)]
    return models


def sf_model_names(full: bool) -> list[str]:
    """Column names of the single statsforecast models' projections."""
    return [type(m).__name__ if not hasattr(m, "alias") else m.alias for m in _sf_models(full)]


def baseline_forecasts(
    daily: pd.DataFrame, as_of: date, full: bool, *, start: date = START
) -> pd.DataFrame:
    """Month-total projections of each single statsforecast model on the raw daily totals from
    `start`: spend to date + the model's sum over the remaining days, one row per tenant."""
    from statsforecast import StatsForecast

    logging.getLogger("statsforecast").setLevel(logging.ERROR)
    n_days = calendar.monthrange(as_of.year, as_of.month)[1]
    h = n_days - as_of.day
    tot = daily[daily["day"] <= as_of].groupby(["tenant_id", "day"])["cost_usd"].sum()
    wide = tot.unstack("day").reindex(columns=pd.date_range(start, as_of).date).fillna(0.0)
    month = as_of.replace(day=1)
    to_date = wide.loc[:, [d for d in wide.columns if d >= month]].sum(axis=1)
    v = wide.to_numpy()
    first = np.argmax(v != 0, axis=1)
    rows = []
    for i, tenant in enumerate(wide.index):
        series = v[i, first[i] :]
        rows.append(pd.DataFrame({"unique_id": tenant, "ds": np.arange(len(series)), "y": series}))
    sf = StatsForecast(models=_sf_models(full), freq=1, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = sf.forecast(df=pd.concat(rows, ignore_index=True), h=h)
    sums = fc.groupby("unique_id").sum(numeric_only=True).drop(columns="ds", errors="ignore")
    sums = sums.clip(lower=0).add(to_date.reindex(sums.index), axis=0)
    return sums.reset_index(names="tenant_id").assign(day=as_of)


def forecast_family(name: str, n: int, seed: int, full: bool) -> pd.DataFrame:
    daily, _, _ = family(name, n, START, DAYS, seed)
    actual = daily.assign(month=[d.replace(day=1) for d in daily["day"]])
    actual = actual.groupby(["tenant_id", "month"])["cost_usd"].sum().rename("actual_usd")
    out = []
    for month in EVAL_MONTHS:
        for o in ORIGINS:
            as_of = month.replace(day=o)
            proj = forecast_month_end(daily[daily["day"] <= as_of], as_of)
            proj = proj[proj["tenant_id"] != "__company__"]
            base = baseline_forecasts(daily, as_of, full)
            f = proj.merge(base, on=["tenant_id", "day"], how="left")
            f = f.merge(actual, left_on=["tenant_id", "month"], right_index=True)
            out.append(f.assign(family=name))
    return pd.concat(out, ignore_index=True)


def forecast_tables(fc: pd.DataFrame, models: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    f = fc[fc["actual_usd"] >= 1.0].copy()

    def ape(col: str) -> pd.Series:
        return (f[col] - f["actual_usd"]).abs() / f["actual_usd"] * 100

    f["project"] = ape("forecast_usd")
    f["run_rate"] = ape("naive_run_rate_usd")
    for m in models:
        f[f"sf_{m}"] = ape(m)
    f["cov80"] = (f["actual_usd"] >= f["lower_80_usd"]) & (f["actual_usd"] <= f["upper_80_usd"])
    f["cov95"] = (f["actual_usd"] >= f["lower_95_usd"]) & (f["actual_usd"] <= f["upper_95_usd"])
    f["cov80"] *= 100
    f["cov95"] *= 100
    sf_cols = [f"sf_{m}" for m in models]
    pooled = f.groupby("days_elapsed")[["project", "run_rate", *sf_cols, "cov80", "cov95"]].mean()
    best = pooled[sf_cols].idxmin(axis=1)
    pooled["best_sf"] = [pooled.loc[o, best[o]] for o in pooled.index]
    pooled["best_sf_model"] = best.str.removeprefix("sf_")
    pooled["seasonal_naive"] = pooled["sf_SeasonalNaive"]
    per = f.groupby(["family", "days_elapsed"])[
        ["project", "run_rate", *sf_cols, "cov80", "cov95"]
    ].mean()
    per["best_sf"] = [per.loc[(fam, o), best[o]] for fam, o in per.index]
    per["seasonal_naive"] = per["sf_SeasonalNaive"]
    cols = ["project", "run_rate", "seasonal_naive", "best_sf", "cov80", "cov95"]
    return pooled[[*cols, "best_sf_model"]], per[cols]


def baseline_table(fc: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Pooled month-total MAPE % of the project, run-rate, seasonal naive and best single
    statsforecast model per as-of day, with the project's 80 % / 95 % coverage."""
    return forecast_tables(fc, models)[0]


def anomaly_family(name: str, n: int, seed: int) -> dict:
    """Message metrics (as production sends them) of one incident family, with the tenant-day
    F1 beside them as a diagnostic and whether an alert row names the incident's driver."""
    daily, detail, incidents = family(name, n, START, DAYS, seed)
    daily = daily[charge_kind(daily) == "usage"]
    score_on = [START + timedelta(days=i) for i in range(56, DAYS)]
    scores = score_days(daily, score_on, detail=detail)
    alerts = scores[scores["severity"].isin(["high", "critical"])]
    tenant_days = int((scores["driver"] == "tenant").sum())
    inside = [i for i in incidents if i["start_day"] >= score_on[0]]
    thresholds = incident_thresholds(daily, inside)
    alertable = [abs(i["impact_usd"]) >= t for i, t in zip(inside, thresholds, strict=True)]
    messages = alert_messages(scores)
    m = message_metrics(messages, inside, alertable, tenant_days=tenant_days)
    rows = detector_metrics(
        alerts[["tenant_id", "day"]].drop_duplicates(),
        inside,
        [np.inf] * len(inside),
        tenant_days=tenant_days,
    )
    m["tenant_day_f1"] = rows["f1"]
    m["tenant_days_alerted"] = rows["alerts"]
    m["tenant_days_false"] = rows["false_alarms"]
    m["tenant_days_detected"] = rows["detected"]
    named = 0
    for inc in inside:
        hit = alerts[
            (alerts["tenant_id"] == inc["tenant_id"])
            & (alerts["day"] >= inc["start_day"])
            & (alerts["day"] <= inc["end_day"] + timedelta(days=1))
        ]
        named += bool((hit["driver"] == inc["driver"]).any())
    m["driver_named"] = named
    m["min_alert_impact_usd"] = (
        float(messages["impact_usd"].abs().min()) if len(messages) else np.nan
    )
    return m


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=16)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--no-forecasts", action="store_true")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 200)
    models = sf_model_names(args.full)
    if not args.no_forecasts:
        began = time.perf_counter()
        fc = pd.concat(
            [forecast_family(f, args.tenants, args.seed, args.full) for f in args.families],
            ignore_index=True,
        )
        pooled, per = forecast_tables(fc, models)
        print(
            f"\n== Scenario families: month-total MAPE % and project coverage % "
            f"({args.tenants} tenants x {len(EVAL_MONTHS)} months each, seed {args.seed}, "
            f"{time.perf_counter() - began:.0f} s) =="
        )
        print(per.round(1).to_string())
        print("\n== Pooled over families ==")
        print(pooled.round(1).to_string())
        print("models chosen:", fc["model"].value_counts().to_dict())
    rows = {}
    for f in [f for f in args.families if f in ANOMALY_FAMILIES]:
        rows[f] = anomaly_family(f, args.tenants, args.seed)
    if rows:
        table = pd.DataFrame(rows).T
        keys = ["messages", "incidents", "alertable", "detected", "driver_named", "false_alarms"]
        print("\n== Anomaly families: the messages production sends (high or critical) ==")
        cols = [*keys, "precision", "recall", "f1", "tenant_day_f1", "min_alert_impact_usd"]
        print(table[cols].astype(float).round(3).to_string())
        tot = table[keys].sum()
        p = (tot["messages"] - tot["false_alarms"]) / max(tot["messages"], 1)
        r = tot["detected"] / max(tot["alertable"], 1)
        print(f"all families: precision {p:.3f} recall {r:.3f} F1 {2 * p * r / (p + r):.3f}")
        days = table[["tenant_days_alerted", "tenant_days_false", "tenant_days_detected"]].sum()
        p_days = 1 - days["tenant_days_false"] / max(days["tenant_days_alerted"], 1)
        r_days = days["tenant_days_detected"] / max(tot["incidents"], 1)
        print(
            f"(diagnostic, alerting tenant-days: precision {p_days:.3f} recall {r_days:.3f} "
            f"F1 {2 * p_days * r_days / (p_days + r_days):.3f})"
        )
        print(
            "(one message per tenant and episode, as anomaly_alert_sensor sends them; recall over "
            "incidents whose true impact reaches the alert threshold; tenant_day_f1: alerting "
            "tenant-days, the former measure, as a diagnostic)"
        )


if __name__ == "__main__":
    main()
