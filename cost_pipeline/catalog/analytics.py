"""Month-end forecasts and anomaly scores."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col, money

COST_FORECASTS = TableSchema(
    name="cost_forecasts",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("month", "date", nullable=False),
        col("days_elapsed", "int", nullable=False, min_value=1),
        col("days_in_month", "int", nullable=False, min_value=28),
        money("spend_to_date_usd", signed=True),
        money("forecast_usd", signed=True),
        money("lower_80_usd", signed=True),
        money("upper_80_usd", signed=True),
        money("lower_95_usd", signed=True),
        money("upper_95_usd", signed=True),
        money("naive_run_rate_usd", signed=True),
        money("known_remaining_usd", nullable=True, signed=True),
        money("budget_usd", nullable=True),
        col("model", "str", nullable=False),
        col("backtest_error_pct", "float"),
        col("history_days", "int", min_value=0),
    ),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Per as-of day and tenant (and the company, tenant_id '__company__'): projected "
    "month-end spend with 80/95 % intervals, spend to date, naive run-rate, known non-usage "
    "charges still expected this month (recurring fees), the model chosen by the backtest "
    "(run_rate, a statsforecast model, level_shift, or a fallback: zero, short_history, "
    "churned) and its backtest error of the month total in percent.",
)


ANOMALY_SCORES = TableSchema(
    name="anomaly_scores",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("driver", "str", nullable=False),
        money("actual_usd", signed=True),
        money("expected_usd", nullable=True, signed=True),
        col("ratio", "float"),
        col("score", "float"),
        col("multivariate_score", "float"),
        col("severity", "str", nullable=False),
        col("detector", "str"),
        col("kind", "str"),
        money("impact_usd", nullable=True, signed=True),
        col("since_day", "date"),
        col("reason", "str", nullable=False),
    ),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Per day, tenant and driver ('tenant', 'agent:<id>', 'model:<id>', 'service:<name>', "
    "'provider:<name>', 'sub_account:<id>', 'region:<id>', 'namespace:<name>'): actual vs "
    "expected cost, ratio, robust z-score, severity none/low/medium/high/critical, kind "
    "(spike, step, drop), dollar impact since `since_day`, and a reason a person can act on. "
    "`multivariate_score` is always null (the IsolationForest view was removed).",
)
