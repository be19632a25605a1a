"""Budget status per tenant and period, and the enforcement flag apps read."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col, money

BUDGET_STATUS = TableSchema(
    name="budget_status",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("period", "str", nullable=False),
        col("timezone", "str", nullable=False),
        col("period_start", "datetime", nullable=False),
        col("period_end", "datetime", nullable=False),
        col("as_of", "datetime", nullable=False),
        money("spend_usd", signed=True),
        money("llm_cost_usd", signed=True),
        money("other_cost_usd", signed=True),
        money("day_spend_usd", signed=True),
        money("budget_monthly_usd", nullable=True),
        money("budget_daily_usd", nullable=True),
        money("included_usage_usd", nullable=True),
        money("hard_cap_usd", nullable=True),
        money("limit_usd", nullable=True),
        col("limit_kind", "str"),
        col(
            "allowance_counts",
            "str",
            doc="What the tier counts toward its allowance and hard cap: llm or all (whole spend).",
        ),
        money(
            "counted_spend_usd",
            nullable=True,
            signed=True,
            doc="The spend measured against limit_usd: the whole spend against a budget, the "
            "LLM part against a tier allowance or cap that counts LLM usage only.",
        ),
        col("utilization_pct", "float"),
        col("daily_utilization_pct", "float"),
        money("forecast_month_end_usd", nullable=True, signed=True),
        money("forecast_lower_usd", nullable=True, signed=True),
        money("forecast_upper_usd", nullable=True, signed=True),
        col("forecast_source", "str"),
        col("projected_breach_date", "date"),
        col("status", "str", nullable=False),
        col("threshold_reached", "float"),
        col("top_drivers", "json"),
    ),
    unique=("day", "tenant_id", "period"),
    indexes=(("day",), ("tenant_id", "period")),
    doc="Spend to date vs budget / tier per tenant and local billing period, per UTC day.",
)


TENANT_ENFORCEMENT = TableSchema(
    name="tenant_enforcement",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("period", "str", nullable=False),
        col("period_end", "datetime", nullable=False),
        col("allowed", "bool", nullable=False),
        col("reason", "str", nullable=False),
        col("since", "datetime", nullable=False),
        money(
            "spend_usd",
            signed=True,
            doc="The spend compared with the hard cap (LLM only when the tier counts LLM only).",
        ),
        money("hard_cap_usd", nullable=True),
    ),
    unique=("day", "tenant_id"),
    indexes=(("tenant_id", "day"),),
    doc="Whether each tenant may call models now: hard-cap tiers over their cap are blocked.",
)
