"""`cost_forecasts` and `anomaly_scores`: month-end projections and anomaly scores per as-of day."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
import base64
import io
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import CLOUD_COSTS, DAILY_COST_SUMMARY, K8S_ALLOCATIONS
from cost_pipeline.defs.partitions import (
    SINGLE_RUN,
    daily_partitions,
    day_chunks,
    merge_days,
    partition_days,
)
from cost_pipeline.lib.anomaly import (
    ANOMALY_SCORES,
    LATE_SOURCES,
    RANK,
    WINDOW_DAYS,
    AnomalyParams,
    infra_detail,
    score_days,
)
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.forecasting import (
    COST_FORECASTS,
    HISTORY_DAYS,
    forecast_month_end,
    with_lagging_usage,
)
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse

SUMMARY_READ_COLUMNS = [
    "day",
    "tenant_id",
    "cost_category",
    "model_or_service",
    "agent_id",
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_usd",
]


# Per late source (`anomaly.LATE_SOURCES`: a summary category whose newest days may not have
# landed when a day is forecast), the check that names it when it is further behind than the
# forecast estimates.
SOURCE_CHECKS = {
    "cloud": "the focus_data_fresh check on cloud_costs",
    "k8s": "the k8s_source_answered check on k8s_allocations",
}


def _window(day: date, n: int) -> list[date]:
    return [day - timedelta(days=i) for i in range(n - 1, -1, -1)]


def _daily_totals(wh: Warehouse, days: list[date]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(cost per tenant and day, usage per tenant and day of each lagging source: `cloud`,
    `k8s`) over `days`, summed in pandas from `daily_cost_summary`. The tenants' non-usage cloud
    charges (credits, fees, commitments) are split out of the first and labelled with their
    FOCUS `charge_category`, so the forecast adds them as known amounts; the others are usage
    only (to estimate the days a source has not delivered yet)."""
    summary = wh.read(
        DAILY_COST_SUMMARY, days=days, columns=["day", "tenant_id", "cost_category", "cost_usd"]
    )
    summary["cost_usd"] = summary["cost_usd"].astype(float)
    keys = ["day", "tenant_id"]
    totals = summary.groupby(keys, as_index=False)["cost_usd"].sum()
    usage_of = {
        source: summary[summary["cost_category"] == source]
        .groupby(keys, as_index=False)["cost_usd"]
        .sum()
        for source in LATE_SOURCES
    }
    cloud = wh.read(
        CLOUD_COSTS,
        days=days,
        columns=["day", "tenant_id", "charge_category", "effective_cost"],
    )
    cloud = cloud[cloud["tenant_id"].notna()]
    other = cloud[cloud["charge_category"].fillna("Usage").str.lower() != "usage"]
    if other.empty:
        return totals, usage_of
    charges = other.groupby(["day", "tenant_id", "charge_category"], as_index=False)[
        "effective_cost"
    ].sum()
    charges = charges.rename(columns={"effective_cost": "cost_usd"})
    charges["cost_usd"] = charges["cost_usd"].astype(float)
    # The summary already holds these amounts: take them out of the usage totals.
    per_day = charges.groupby(keys, as_index=False)["cost_usd"].sum()
    usage = _less(totals, per_day).assign(charge_category="Usage")
    usage_of["cloud"] = _less(usage_of["cloud"], per_day)
    return pd.concat([usage, charges], ignore_index=True), usage_of


def _less(frame: pd.DataFrame, charges: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s cost per tenant and day less `charges`' on the same tenant and day."""
    out = frame.merge(charges, on=["day", "tenant_id"], how="left", suffixes=("", "_other"))
    out["cost_usd"] = out["cost_usd"] - out["cost_usd_other"].fillna(0.0)
    return out.drop(columns="cost_usd_other")


def _infra_detail(wh: Warehouse, days: list[date]) -> pd.DataFrame:
    """Cloud service / sub-account / region and k8s namespace drivers of mapped tenants."""
    cloud = wh.read(
        CLOUD_COSTS,
        days=days,
        columns=["day", "tenant_id", "service_name", "sub_account_id", "region", "effective_cost"],
    )
    k8s = wh.read(
        K8S_ALLOCATIONS, days=days, columns=["day", "tenant_id", "namespace", "total_cost"]
    )
    return infra_detail(cloud, k8s)


def _budgets(config: CostConfig) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        t.id: float(t.budget.monthly_usd) if t.budget.monthly_usd is not None else None
        for t in config.tenants
    }
    company = config.company_budget.monthly_usd
    out[COMPANY] = float(company) if company is not None else None
    return out


def company_chart(
    history: pd.DataFrame, forecast: pd.Series, as_of: date, *, title: str = "Company"
) -> str:
    """Markdown with a small PNG: cumulative spend this month (of `history`: the company's, or
    one tenant's rows), the projection with its 80 % and 95 % bands to month end, and the
    budget line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    month = as_of.replace(day=1)
    daily = history[history["day"] >= month].groupby("day")["cost_usd"].sum()
    daily = daily.reindex(pd.date_range(month, as_of).date, fill_value=0.0)
    end = month + timedelta(days=int(forecast["days_in_month"]) - 1)
    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.plot(list(daily.index), daily.cumsum().to_numpy(), label="actual (cumulative)")
    spent = float(forecast["spend_to_date_usd"])
    xs = [as_of, end]
    ax.plot(xs, [spent, float(forecast["forecast_usd"])], "--", label="forecast")
    for lo, hi, alpha, label in (
        ("lower_95_usd", "upper_95_usd", 0.15, "95 % band"),
        ("lower_80_usd", "upper_80_usd", 0.3, "80 % band"),
    ):
        ax.fill_between(
            xs,
            [spent, float(forecast[lo])],
            [spent, float(forecast[hi])],
            alpha=alpha,
            color="tab:orange",
            label=label,
        )
    if pd.notna(forecast.get("budget_usd")):
        ax.axhline(float(forecast["budget_usd"]), color="red", linewidth=1, label="budget")
    model = forecast.get("model", "")
    ax.set_title(f"{title} spend, {month:%B %Y} (as of {as_of}; {model})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"![{title} forecast](data:image/png;base64,{data})"


@dg.asset(
    group_name="analytics",
    kinds={"python", "statsforecast"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=["daily_cost_summary", "cloud_costs"],
    description=(
        "Per as-of day, tenant and the company (`__company__`): projected month-end spend with "
        "conformal 80 % and 95 % intervals, spend to date, the naive run-rate beside it, known "
        "non-usage charges, the statsforecast model (or run-rate) chosen by a rolling-origin "
        "backtest with its error, and the monthly budget. Cloud and Kubernetes days their "
        "source has not delivered yet are estimated from the same weekday a week before, and "
        "said so."
    ),
)
def cost_forecasts(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    config = cost_config.get()
    days = partition_days(context)
    results = []
    # A range is read in chunks (one read of the history of a whole chunk), each day forecast
    # from the days up to it only; the charts are drawn for the newest day of the run.
    max_lag = {
        "cloud": config.allocation.focus_stale_after_days,
        "k8s": config.allocation.k8s_settle_days,
    }
    for chunk in day_chunks(days):
        history, usage_of = _daily_totals(wh, _window(chunk[-1], HISTORY_DAYS + len(chunk) - 1))
        source_days = {source: sorted(set(u["day"])) for source, u in usage_of.items()}
        for day in chunk:
            upto = history[history["day"] <= day]
            lag: dict[str, object] = {}
            # A FOCUS export delivers a day late, Kubecost may not have a day yet: the days after
            # a source's newest are estimated, not read as $0.
            for source, usage in usage_of.items():
                through = max((d for d in source_days[source] if d <= day), default=None)
                upto, estimated = with_lagging_usage(
                    upto, usage, day, through=through, max_days=max_lag[source]
                )
                lag |= _source_lag(source, day, through, estimated, max_lag[source])
            results.append(_forecast_day(wh, config, day, upto, lag, charts=day == days[-1]))
    return merge_days(days, results)


def _source_lag(
    source: str, day: date, through: date | None, estimated: pd.DataFrame, max_lag: int
) -> dict[str, object]:
    """Forecast metadata on a source's rows that had not landed for `day`: what was estimated."""
    if through is None or through >= day:
        return {}
    rows, check = LATE_SOURCES[source], SOURCE_CHECKS[source]
    behind = (day - through).days
    if behind > max_lag:
        text = (
            f"{rows} end on {through}, {behind} days before: not estimated (more than "
            f"{max_lag} days; see {check})"
        )
    else:
        text = (
            f"{rows} end on {through}: the {source} usage of the {behind} day(s) after is "
            f"estimated from the same weekday a week before (${estimated['cost_usd'].sum():,.2f}) "
            "until they land and the late-data sensor forecasts the day again"
        )
    return {f"{source}_rows_through": str(through), f"{source}_not_yet_delivered": text}


def _forecast_day(
    wh: Warehouse,
    config: CostConfig,
    day: date,
    history: pd.DataFrame,
    lag: dict[str, object],
    *,
    charts: bool,
) -> dg.MaterializeResult:
    forecasts = forecast_month_end(
        history, day, tenants=[t.id for t in config.tenants], budgets=_budgets(config)
    )
    rows = wh.replace_partition(COST_FORECASTS, day, forecasts)
    company = forecasts.set_index("tenant_id").loc[COMPANY]
    shown = forecasts.assign(
        budget_pct=lambda f: 100 * f["forecast_usd"] / f["budget_usd"].astype(float)
    ).sort_values(["budget_pct", "forecast_usd"], ascending=False, na_position="last")
    cols = ["tenant_id", "spend_to_date_usd", "forecast_usd", "lower_80_usd", "upper_80_usd"]
    cols += ["naive_run_rate_usd", "budget_usd", "budget_pct", "model", "backtest_error_pct"]
    metadata: dict[str, object] = {
        "rows": rows,
        "company_forecast_usd": round(float(company["forecast_usd"]), 2),
        "company_spend_to_date_usd": round(float(company["spend_to_date_usd"]), 2),
        "models": dg.MetadataValue.json(forecasts["model"].value_counts().to_dict()),
        "forecast_vs_budget": dg.MetadataValue.md(markdown_table(shown[cols], max_rows=15)),
        **lag,
    }
    if charts:
        window = history[history["day"] > day - timedelta(days=HISTORY_DAYS)]
        top = shown[shown["tenant_id"] != COMPANY].head(5)
        indexed = forecasts.set_index("tenant_id")
        tenant_charts = "\n\n".join(
            company_chart(
                window[window["tenant_id"] == t], indexed.loc[t], day, title=f"Tenant {t}"
            )
            for t in top["tenant_id"]
        )
        metadata["company_chart"] = dg.MetadataValue.md(company_chart(window, company, day))
        metadata["tenant_charts"] = dg.MetadataValue.md(tenant_charts or "_none_")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="analytics",
    kinds={"python", "pandas"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=["daily_cost_summary", "cloud_costs", "k8s_allocations"],
    description=(
        "Per day, tenant and driver (the tenant total, each agent, model, provider, cloud "
        "service, sub-account, region and k8s namespace): actual vs expected cost from a robust "
        "weekday-aware baseline, spikes, sustained steps and drops, dollar impact since the "
        "start, severity none/low/medium/high/critical, and a reason a person can act on."
    ),
)
def anomaly_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    config = cost_config.get()
    days = partition_days(context)
    results = []
    # Each chunk of days is scored in one pass over one read of its window.
    for chunk in day_chunks(days):
        window = _window(chunk[-1], WINDOW_DAYS + len(chunk))
        daily = wh.read(DAILY_COST_SUMMARY, days=window, columns=SUMMARY_READ_COLUMNS)
        scores = score_days(
            daily,
            chunk,
            tenants=[t.id for t in config.tenants],
            detail=_infra_detail(wh, window),
            budgets=_budgets(config),
            infra_through=_infra_through(wh, chunk[-1]),
        )
        for day in chunk:
            results.append(_scores_day(wh, day, scores[scores["day"] == day]))
    return merge_days(days, results)


def _infra_through(wh: Warehouse, day: date) -> dict[str, date]:
    """Per late source (`cloud`, `k8s`): the newest day with its rows among `day` and the days
    the scorer waits for after it (`infra_settle_days`), the day before `day` without any —
    whether a dip of its rows on `day` may still be filling in."""
    after = [day + timedelta(days=i) for i in range(AnomalyParams().infra_settle_days + 1)]
    out = {}
    for source, table in (("cloud", CLOUD_COSTS), ("k8s", K8S_ALLOCATIONS)):
        rows = wh.read(table, days=after, columns=["day"])
        out[source] = max(rows["day"]) if len(rows) else day - timedelta(days=1)
    return out


def _scores_day(wh: Warehouse, day: date, scores: pd.DataFrame) -> dg.MaterializeResult:
    rows = wh.replace_partition(ANOMALY_SCORES, day, scores)
    flagged = scores[scores["severity"] != "none"].assign(rank=lambda f: f["severity"].map(RANK))
    flagged = flagged.sort_values(["rank", "ratio"], ascending=False)
    cols = ["tenant_id", "driver", "severity", "kind", "actual_usd", "expected_usd", "ratio"]
    cols += ["impact_usd", "since_day"]
    tenants = scores[scores["driver"] == "tenant"]
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "tenants_scored": int((~tenants["reason"].str.startswith("not enough")).sum()),
            **{
                f"anomalies_{s}": int((flagged["severity"] == s).sum())
                for s in ("low", "medium", "high", "critical")
            },
            "top_anomalies": dg.MetadataValue.md(markdown_table(flagged[cols], max_rows=15)),
            "reasons": dg.MetadataValue.md(
                "\n".join(
                    f"- **{r.tenant_id}** ({r.severity}): {r.reason}"
                    for r in flagged.head(10).itertuples()
                )
                or "_none_"
            ),
        }
    )
