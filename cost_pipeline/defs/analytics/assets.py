"""`cost_forecasts` and `anomaly_scores`: month-end projections and anomaly scores per as-of day."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
import base64
import io
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.defs.partitions import daily_partitions, partition_day
from cost_pipeline.lib.anomaly import ANOMALY_SCORES, RANK, WINDOW_DAYS, score_days
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.forecasting import COST_FORECASTS, HISTORY_DAYS, forecast_month_end
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.lib.warehouse import Warehouse
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource

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


def _window(day: date, n: int) -> list[date]:
    return [day - timedelta(days=i) for i in range(n - 1, -1, -1)]


def _daily_totals(wh: Warehouse, days: list[date]) -> pd.DataFrame:
    """Cost per tenant and day over `days`, summed in the database."""
    wh.table(DAILY_COST_SUMMARY)
    df = wh.query(
        "SELECT day, tenant_id, SUM(cost_usd) AS cost_usd FROM daily_cost_summary "
        "WHERE day >= :lo AND day <= :hi GROUP BY day, tenant_id",
        {"lo": days[0], "hi": days[-1]},
    )
    df["day"] = pd.to_datetime(df["day"]).dt.date
    df["cost_usd"] = pd.to_numeric(df["cost_usd"]).astype(float)
    return df


def _budgets(config: CostConfig) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        t.id: float(t.budget.monthly_usd) if t.budget.monthly_usd is not None else None
        for t in config.tenants
    }
    company = config.company_budget.monthly_usd
    out[COMPANY] = float(company) if company is not None else None
    return out


def company_chart(history: pd.DataFrame, forecast: pd.Series, as_of: date) -> str:
    """Markdown with a small PNG: the company's cumulative spend this month, the projection and
    its 80/95 % intervals to month end, and the budget line."""
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
    for lo, hi, alpha in (
        ("lower_95_usd", "upper_95_usd", 0.15),
        ("lower_80_usd", "upper_80_usd", 0.3),
    ):
        ax.fill_between(xs, [spent, float(forecast[lo])], [spent, float(forecast[hi])], alpha=alpha)
    if pd.notna(forecast.get("budget_usd")):
        ax.axhline(float(forecast["budget_usd"]), color="red", linewidth=1, label="budget")
    ax.set_title(f"Company spend, {month:%B %Y} (as of {as_of})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"![company forecast](data:image/png;base64,{data})"


@dg.asset(
    group_name="analytics",
    kinds={"python", "scikit-learn", "sql"},
    partitions_def=daily_partitions,
    deps=["daily_cost_summary"],
    description=(
        "Per as-of day, tenant and the company (`__company__`): projected month-end spend with "
        "80 % and 95 % intervals, spend to date, the naive run-rate beside it, the model chosen "
        "by a rolling-origin backtest, and the monthly budget."
    ),
)
def cost_forecasts(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    config = cost_config.get()
    history = _daily_totals(wh, _window(day, HISTORY_DAYS))
    forecasts = forecast_month_end(
        history, day, tenants=[t.id for t in config.tenants], budgets=_budgets(config)
    )
    rows = wh.replace_partition(COST_FORECASTS, day, forecasts)
    company = forecasts.set_index("tenant_id").loc[COMPANY]
    shown = forecasts.assign(
        budget_pct=lambda f: 100 * f["forecast_usd"] / f["budget_usd"].astype(float)
    ).sort_values(["budget_pct", "forecast_usd"], ascending=False, na_position="last")
    cols = ["tenant_id", "spend_to_date_usd", "forecast_usd", "lower_80_usd", "upper_80_usd"]
    cols += ["naive_run_rate_usd", "budget_usd", "budget_pct", "model"]
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "company_forecast_usd": round(float(company["forecast_usd"]), 2),
            "company_spend_to_date_usd": round(float(company["spend_to_date_usd"]), 2),
            "models": dg.MetadataValue.json(forecasts["model"].value_counts().to_dict()),
            "forecast_vs_budget": dg.MetadataValue.md(markdown_table(shown[cols], max_rows=15)),
            "company_chart": dg.MetadataValue.md(company_chart(history, company, day)),
        }
    )


@dg.asset(
    group_name="analytics",
    kinds={"python", "scikit-learn", "sql"},
    partitions_def=daily_partitions,
    deps=["daily_cost_summary"],
    description=(
        "Per day, tenant and driver (the tenant total, each agent, each model): actual vs "
        "expected cost from a robust weekday-aware baseline, a multivariate score, severity "
        "none/low/medium/high/critical, since when, and a reason a person can act on."
    ),
)
def anomaly_scores(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    config = cost_config.get()
    daily = wh.read(
        DAILY_COST_SUMMARY, days=_window(day, WINDOW_DAYS + 1), columns=SUMMARY_READ_COLUMNS
    )
    scores = score_days(daily, [day], tenants=[t.id for t in config.tenants])
    rows = wh.replace_partition(ANOMALY_SCORES, day, scores)
    flagged = scores[scores["severity"] != "none"].assign(rank=lambda f: f["severity"].map(RANK))
    flagged = flagged.sort_values(["rank", "ratio"], ascending=False)
    cols = ["tenant_id", "driver", "severity", "actual_usd", "expected_usd", "ratio", "since_day"]
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
