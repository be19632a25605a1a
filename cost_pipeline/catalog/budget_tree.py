"""Budget status of the budget hierarchy: the organization, departments, teams, members."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col, money

BUDGET_NODE_STATUS = TableSchema(
    name="budget_node_status",
    columns=(
        col("day", "date", nullable=False),
        col(
            "node_id",
            "str",
            nullable=False,
            doc="organization, department:<id>, team:<id>, or team:<id>/<tenant> for a tenant "
            "of a team that is not pooled (the tenant's own allowance).",
        ),
        col("node_kind", "str", nullable=False, doc="organization, department, team or member."),
        col("parent_id", "str", doc="The parent's node_id (null for the organization)."),
        col("name", "str", nullable=False),
        col(
            "period",
            "str",
            nullable=False,
            doc="YYYY-MM with reset day 1 (the local month), else the first local date.",
        ),
        col("timezone", "str", nullable=False),
        col("reset_day", "int", nullable=False, min_value=1, doc="Local day a period starts."),
        col("period_start", "datetime", nullable=False),
        col("period_end", "datetime", nullable=False),
        col("as_of", "datetime", nullable=False),
        col("pooled", "bool", nullable=False, doc="The budget covers the tenants' combined spend."),
        col("tenant_count", "int", nullable=False, min_value=0, doc="Tenants below the node."),
        money("spend_usd", signed=True, doc="Spend of every tenant below, in this period."),
        money("llm_cost_usd", signed=True),
        money("other_cost_usd", signed=True),
        money(
            "tenants_spend_usd",
            signed=True,
            doc="The part of the spend of the tenants attached to this node directly.",
        ),
        money(
            "children_spend_usd",
            signed=True,
            doc="The part of the spend of the child nodes, measured in this node's period: "
            "spend_usd = tenants_spend_usd + children_spend_usd exactly.",
        ),
        money("day_spend_usd", signed=True),
        money("budget_monthly_usd", nullable=True, doc="Configured budget per period."),
        col("rollover", "str", nullable=False, doc="none, capped or full."),
        money(
            "previous_spend_usd",
            nullable=True,
            signed=True,
            doc="Spend of the previous period (null: no rollover, or before the history).",
        ),
        money("rollover_usd", doc="Unused budget of the previous period carried into this one."),
        money("limit_usd", nullable=True, doc="budget_monthly_usd + rollover_usd."),
        money("budget_daily_usd", nullable=True),
        col("utilization_pct", "float"),
        col("daily_utilization_pct", "float"),
        col("threshold_reached", "float"),
        col("status", "str", nullable=False, doc="ok, warning, critical or exceeded."),
    ),
    unique=("day", "node_id", "period"),
    indexes=(("day",), ("node_id", "period")),
    doc="Per UTC day: spend to date vs budget (with rollover) of every node of the budget "
    "hierarchy in each of its periods overlapping the day; children sum to parents exactly.",
)
