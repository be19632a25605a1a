"""`make eval`: forecasts and anomaly alerts measured against labelled demo scenarios.

    python -m cost_pipeline_tests.benchmarks.evaluate [--seeds holdout|tune] [--synthetic]
        [--no-baselines] [--no-timing]

For each seed: the demo company's events for ~6 months, priced and summed into the
`daily_cost_summary` shape, with the generator's labelled incidents, scored as production scores
them (the configured budgets behind the alert impact threshold). The anomaly ACCEPTANCE figures
are of what production sends: one message per tenant and episode (`evaluation.alert_messages`
replays `anomaly_alert_sensor` and the outbox's episode rule day by day), against the incidents
whose true dollar impact (the tenant's cost minus the same days regenerated without incidents)
reaches the tenant's alert threshold — an incident below it is, by the product's definition, not
one to alert on. Alerting tenant-days per detector are printed beside them as a diagnostic.

Forecasts: month-end MAPE on day 7/14/21 beside the naive run-rate's, the statsforecast
SeasonalNaive(7) and the best single statsforecast model (as `evaluate_families` prints them);
80 % interval coverage; and the time for one as-of day of 1,000 tenants x 180 days. The report
is for HOLDOUT_SEEDS; TUNE_SEEDS are for trying changes.

Beside the acceptance figures (all tenant-months with an actual total of at least $1) it prints,
labelled as diagnostics: the same for material tenant-months (actual >= $50), and an ORACLE
forecast that knows each tenant's true expected daily cost from the generator (spend to date +
that expectation over the remaining days; see `true_daily_cost`). The oracle's MAPE is the noise
floor of the data: a target it cannot reach cannot be reached by any forecaster.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from cost_pipeline.lib.anomaly import score_days
from cost_pipeline.lib.config import load_config
from cost_pipeline.lib.evaluation import (
    alert_messages,
    alerts_of,
    detector_metrics,
    estimated_impact,
    forecast_metrics,
    incident_sizes,
    incident_thresholds,
    message_metrics,
    month_totals,
    months_in,
    summarize_events,
)
from cost_pipeline.lib.forecasting import forecast_month_end
from cost_pipeline_tests.benchmarks.evaluate_families import (
    baseline_forecasts,
    baseline_table,
    sf_model_names,
)
from cost_pipeline_tests.benchmarks.synthetic import synthetic_daily_summary

TUNE_SEEDS = (1, 2)
HOLDOUT_SEEDS = (11, 12, 13)
START = date(2026, 3, 1)
DAYS = 184
SCORE_FROM_DAY = 35
DETECTORS = ("total", "drivers", "multivariate", "combined")


@dataclass
class Scenario:
    """One seed's data: summary rows, labelled incidents, and where known the true expected
    daily cost per tenant (the oracle) and the configured monthly budgets."""

    daily: pd.DataFrame
    incidents: list[dict]
    expected: pd.DataFrame | None = None
    budgets: dict[str, float | None] = field(default_factory=dict)


def true_daily_cost(
    company, engine, days: list[date], events_per_day: int, *, sample_days: int = 12
) -> pd.DataFrame:
    """Expected cost (USD, no incidents) per tenant (rows) and day (columns) of the demo company.

    From the generator's own parameters: tenant i makes Binomial(round(day_volume), share_i)
    calls, split over agents by its agent mix p_ia. A call's cost depends only on its agent and
    on whether it starts a workflow (a root call writes the prompt cache, a follow-up reads it);
    the first call of a tenant-agent-day is always a root, the others with probability
    1 / workflow_size. The mean cost of root and follow-up calls per agent is measured on
    `sample_days` x 30,000 regenerated no-incident calls on days outside the evaluated range
    (in 2025), so the oracle knows the generator, not the noise of the evaluated days.
    """
    from cost_pipeline.demo.generator import AGENT_NAMES, AGENTS

    sample = pd.concat(
        engine.price(
            company.events_for_day(
                date(2025, 11, 1) + timedelta(days=i), 30_000, with_incidents=False
            )
        )[["agent_id", "parent_event_id", "cost_usd"]]
        for i in range(sample_days)
    )
    per_call = (
        sample.assign(root=sample["parent_event_id"].isna())
        .groupby(["agent_id", "root"])["cost_usd"]
        .mean()
        .unstack()
        .reindex(AGENT_NAMES)
    )
    c_root, c_follow = per_call[True].to_numpy(), per_call[False].to_numpy()
    size = np.array([a.workflow_size for a in AGENTS])
    mix = np.diff(company.agent_cum, axis=1, prepend=0.0)
    volume = np.array([round(company.day_volume(d, events_per_day)) for d in days])
    calls = company.share[:, None, None] * mix[:, :, None] * volume[None, None, :]
    occupied = 1 - np.exp(-calls)  # P(at least one call of the tenant-agent that day)
    roots = occupied + (calls - occupied) / size[None, :, None]
    cost = calls * c_follow[None, :, None] + roots * (c_root - c_follow)[None, :, None]
    return pd.DataFrame(cost.sum(axis=1), index=company.tenants, columns=days)


def incident_impacts(company, engine, incidents: list[dict], events_per_day: int) -> None:
    """Set each incident's true `impact_usd`: its tenant's cost over the incident's days (within
    the evaluated range) minus the same days regenerated without incidents. The generator draws
    incident calls from their own stream, so the ordinary calls are the same in both. Two
    incidents of one tenant on the same day share that day's difference."""
    last = START + timedelta(days=DAYS - 1)
    extra: dict[date, pd.Series] = {}
    for inc in incidents:
        total = 0.0
        for k in range((inc["end_day"] - inc["start_day"]).days + 1):
            day = inc["start_day"] + timedelta(days=k)
            if not START <= day <= last:
                continue
            if day not in extra:
                with_inc, without = (
                    engine.price(company.events_for_day(day, events_per_day, with_incidents=w))
                    .groupby("tenant_id")["cost_usd"]
                    .sum()
                    for w in (True, False)
                )
                extra[day] = with_inc.sub(without, fill_value=0.0)
            total += float(extra[day].get(inc["tenant_id"], 0.0))
        inc["impact_usd"] = total


def demo_scenario(seed: int, events_per_day: int) -> Scenario:
    """The demo company for one seed: daily_cost_summary-shaped rows, incidents with their true
    dollar impact, the true expected daily cost per tenant, and the configured budgets."""
    from cost_pipeline.demo.generator import DemoCompany
    from cost_pipeline.lib.pricing import PricingEngine

    config = load_config()
    company = DemoCompany(config, seed=seed)
    engine = PricingEngine.for_config(config)
    days = [START + timedelta(days=i) for i in range(DAYS)]
    parts = [
        summarize_events(engine.price(company.events_for_day(d, events_per_day))) for d in days
    ]
    incidents = company.incidents(START, DAYS)
    for inc in incidents:
        for k in ("start_day", "end_day"):
            if not isinstance(inc[k], date):
                inc[k] = date.fromisoformat(str(inc[k])[:10])
    incident_impacts(company, engine, incidents, events_per_day)
    expected = true_daily_cost(company, engine, days, events_per_day)
    budgets = {
        t.id: float(t.budget.monthly_usd) if t.budget.monthly_usd is not None else None
        for t in config.tenants
    }
    return Scenario(pd.concat(parts, ignore_index=True), incidents, expected, budgets)


def scenario(seed: int, events_per_day: int, synthetic: bool) -> Scenario:
    if not synthetic:
        try:
            return demo_scenario(seed, events_per_day)
        except ImportError as exc:
            print(f"demo generator or pricing not available ({exc}); using synthetic series")
    daily, incidents = synthetic_daily_summary(
        30, START, DAYS, seed=seed, incidents_per_tenant_quarter=1.5
    )
    return Scenario(daily, incidents)


def oracle_forecasts(forecasts: pd.DataFrame, expected: pd.DataFrame) -> pd.Series:
    """Oracle month-end projection per `cost_forecasts` row: spend to date + the true expected
    cost of the month's remaining days (the company: the sum over tenants)."""
    out = []
    for row in forecasts[["tenant_id", "day", "month", "days_in_month"]].itertuples():
        end = row.month + timedelta(days=int(row.days_in_month) - 1)
        rest = [d for d in expected.columns if row.day < d <= end]
        if row.tenant_id == "__company__":
            out.append(float(expected[rest].to_numpy().sum()))
        elif row.tenant_id in expected.index:
            out.append(float(expected.loc[row.tenant_id, rest].sum()))
        else:
            out.append(0.0)
    return forecasts["spend_to_date_usd"] + np.array(out)


def evaluate_seed(sc: Scenario, *, baselines: bool = True) -> tuple[dict, dict, pd.DataFrame]:
    """(message metrics, per-detector tenant-day metrics, forecasts with actuals) of one seed."""
    daily, incidents = sc.daily, sc.incidents
    score_on = [START + timedelta(days=i) for i in range(SCORE_FROM_DAY, DAYS)]
    # As production scores them: with the configured budgets behind the impact threshold.
    scores = score_days(daily, score_on, budgets=sc.budgets)
    inside = [i for i in incidents if i["start_day"] >= score_on[0]]
    # Incidents that began before scoring but run into it: their days are not false alarms.
    earlier = [
        i for i in incidents if i["start_day"] < score_on[0] <= i["end_day"] + timedelta(days=1)
    ]
    sizes = incident_sizes(daily, inside)
    tenant_days = scores.loc[scores["driver"] == "tenant"].shape[0]
    per_detector = {
        d: detector_metrics(
            alerts_of(scores, d), inside, sizes, tenant_days=tenant_days, earlier_incidents=earlier
        )
        for d in DETECTORS
    }
    thresholds = incident_thresholds(daily, inside, budgets=sc.budgets)
    impacts = [i.get("impact_usd", estimated_impact(daily, i)) for i in inside]
    alertable = [abs(v) >= t for v, t in zip(impacts, thresholds, strict=True)]
    messages = alert_messages(scores)
    sent = message_metrics(
        messages, inside, alertable, tenant_days=tenant_days, earlier_incidents=earlier
    )
    sent["min_alert_impact_usd"] = float(messages["impact_usd"].abs().min())
    # The gate as the ground truth computes it, at each message's own day.
    gate = incident_thresholds(
        daily,
        [
            {"tenant_id": t, "start_day": d}
            for t, d in zip(messages["tenant_id"], messages["day"], strict=True)
        ],
        budgets=sc.budgets,
    )
    sent["below_threshold"] = int((messages["impact_usd"].abs() < np.array(gate) - 1e-9).sum())
    rows = []
    for month in months_in(START, DAYS, min_history_days=SCORE_FROM_DAY):
        for day in (7, 14, 21):
            as_of = month.replace(day=day)
            rows.append(forecast_month_end(daily[daily["day"] <= as_of], as_of))
    forecasts = pd.concat(rows, ignore_index=True)
    if sc.expected is not None:
        forecasts["oracle_usd"] = oracle_forecasts(forecasts, sc.expected)
    if baselines:
        base = pd.concat(
            [baseline_forecasts(daily, d, False, start=START) for d in forecasts["day"].unique()],
            ignore_index=True,
        )
        forecasts = forecasts.merge(base, on=["tenant_id", "day"], how="left")
    return sent, per_detector, forecasts.merge(month_totals(daily), on=["tenant_id", "month"])


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
    parser.add_argument(
        "--no-baselines", action="store_true", help="skip the statsforecast baseline columns"
    )
    args = parser.parse_args(argv)
    seeds = HOLDOUT_SEEDS if args.seeds == "holdout" else TUNE_SEEDS
    sent: list[dict] = []
    metrics: list[pd.DataFrame] = []
    forecasts: list[pd.DataFrame] = []
    for seed in seeds:
        began = time.perf_counter()
        sc = scenario(seed, args.events_per_day, args.synthetic)
        messages, per_detector, fc = evaluate_seed(sc, baselines=not args.no_baselines)
        sent.append({"seed": seed, **messages})
        metrics.append(pd.DataFrame(per_detector).T.assign(seed=seed))
        forecasts.append(fc.assign(seed=seed))
        print(f"seed {seed}: {len(sc.incidents)} incidents, {time.perf_counter() - began:.0f} s")
    print(
        f"\n== Anomaly alerts: ACCEPTANCE metric, the messages production sends "
        f"({args.seeds} seeds {seeds}) =="
    )
    per_seed = pd.DataFrame(sent).set_index("seed")
    keys = ["messages", "incidents", "alertable", "detected", "detected_below_threshold"]
    keys += ["false_alarms", "below_threshold"]
    tot = per_seed[keys].sum()
    p = (tot["messages"] - tot["false_alarms"]) / max(tot["messages"], 1)
    r = tot["detected"] / max(tot["alertable"], 1)
    per_seed.loc["all"] = {
        **tot.to_dict(),
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
        "false_alarms_per_tenant_quarter": tot["false_alarms"] / per_seed["tenant_quarters"].sum(),
        "min_alert_impact_usd": per_seed["min_alert_impact_usd"].min(),
    }
    cols = [*keys, "precision", "recall", "f1", "false_alarms_per_tenant_quarter"]
    print(per_seed[[*cols, "min_alert_impact_usd"]].astype(float).round(3).to_string())
    print(
        "(one message per tenant and episode, as anomaly_alert_sensor and the outbox send them; "
        "alertable = incidents whose true dollar impact reaches the tenant's alert threshold, "
        "max($1, 1 % of its monthly budget); below_threshold = messages under it, must be 0)"
    )
    print("\n== Diagnostic: per detector, alerting tenant-days (not what is sent) ==")
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
    all_fc = pd.concat(forecasts, ignore_index=True)
    cols = ["tenant_months", "mape_pct", "naive_mape_pct", "improvement_pct", "oracle_mape_pct"]
    cols += ["oracle_improvement_pct", "median_ape_pct", "coverage_80_pct", "coverage_95_pct"]
    print("\n== Month-end forecasts: ACCEPTANCE metric, all tenant-months with actual >= $1 ==")
    print(forecast_metrics(all_fc)[cols].round(1).to_string())
    print("\n== Diagnostic only: MATERIAL tenant-months (actual >= $50) ==")
    print(forecast_metrics(all_fc, min_month_usd=50.0)[cols].round(1).to_string())
    print(
        "(oracle = spend to date + the tenant's true expected cost of the remaining days from "
        "the generator, future incidents unknown: the noise floor)"
    )
    company = all_fc[all_fc["tenant_id"] == "__company__"]

    def company_mape(column: str) -> float:
        if column not in company:
            return float("nan")
        return float(
            ((company[column] - company["actual_usd"]).abs() / company["actual_usd"]).mean()
        )

    print(
        f"company total: MAPE {company_mape('forecast_usd') * 100:.1f} % vs naive "
        f"{company_mape('naive_run_rate_usd') * 100:.1f} %, oracle "
        f"{company_mape('oracle_usd') * 100:.1f} %"
    )
    print("models chosen:", all_fc["model"].value_counts().to_dict())
    if not args.no_baselines:
        print(
            "\n== Month-total MAPE % beside the baselines (tenant-months with actual >= $1): "
            "run-rate, statsforecast SeasonalNaive(7), best single statsforecast model =="
        )
        fc = all_fc[all_fc["tenant_id"] != "__company__"].assign(family="demo")
        print(baseline_table(fc, sf_model_names(False)).round(1).to_string())
    if not args.no_timing:
        print(f"\n== Timing: 1,000 tenants x 180 days, one as-of day: {timing_run():.1f} s ==")


if __name__ == "__main__":
    main()
