"""Rollups of the priced calls: workflow runs, end users, agents, and per-agent unit economics.

What each row means, and how a call tree is resolved, is told in `lib.rollups`.
"""

from __future__ import annotations

from cost_pipeline.lib.schemas import Column, TableSchema, col, money, tokens

UNPRICED_CALLS_DOC = (
    "Calls without a cost (no price, or usage the price needs is missing): their cost is not "
    "in cost_usd, which is therefore a lower bound whenever this is above 0."
)


def _unpriced() -> Column:
    return tokens("unpriced_calls", doc=UNPRICED_CALLS_DOC)


WORKFLOW_RUNS = TableSchema(
    name="workflow_runs",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col(
            "workflow_id",
            "str",
            doc="The root call's workflow_id, else the first one logged in the run (null: none).",
        ),
        col("root_event_id", "str", nullable=False, doc="The run's root call."),
        col("agent_id", "str", doc="The root call's agent."),
        col("user_id", "str", doc="The root call's end user."),
        tokens("calls", doc="Calls in the run: the root and all its descendants on the day."),
        col(
            "depth",
            "int",
            nullable=False,
            min_value=1,
            doc="Levels of the call tree: 1 for a root alone, 2 with children, ...",
        ),
        col("started_at", "datetime", nullable=False, doc="First call's start (occurred_at)."),
        col("ended_at", "datetime", nullable=False, doc="Last call's end (start + latency)."),
        col("duration_ms", "int", nullable=False, min_value=0, doc="ended_at - started_at."),
        money("cost_usd", doc="USD of the run's priced calls."),
        _unpriced(),
        tokens("failed_calls", doc="Calls whose status is not a success (see lib.rollups)."),
        col("success", "bool", nullable=False, doc="Every call of the run succeeded."),
        tokens("input_tokens"),
        tokens("output_tokens"),
        col(
            "orphan",
            "bool",
            nullable=False,
            doc="The root names a parent found neither on its day nor the day before.",
        ),
        col(
            "cycle",
            "bool",
            nullable=False,
            doc="The parent links looped; the loop was broken at its earliest call (the root).",
        ),
        col(
            "spans_days",
            "bool",
            nullable=False,
            doc="The root's parent is a call of the previous UTC day: this row is the part of a "
            "run that continued past midnight (the earlier part is a row of that day).",
        ),
    ),
    unique=("day", "root_event_id"),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Per UTC day: one row per workflow run, a root call and its descendants through "
    "parent_event_id on the same day (a run crossing midnight is one row per day, the later "
    "ones flagged spans_days). Calls with no workflow_id, no parent and no child are outside "
    "any run; with them, the runs add up to the day's priced_interactions.",
)


END_USER_COSTS = TableSchema(
    name="end_user_costs",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("user_id", "str", doc="The tenant's end user (null: calls logged without one)."),
        tokens("calls", doc="Calls of the user on the day."),
        _unpriced(),
        money("cost_usd", doc="USD of the user's priced calls."),
        tokens("input_tokens"),
        tokens("output_tokens"),
    ),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Per UTC day, tenant and end user: calls, unpriced calls, cost and tokens; the day's "
    "rows add up to priced_interactions.",
)


AGENT_COSTS = TableSchema(
    name="agent_costs",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("agent_id", "str", doc="The agent (null: calls logged without one)."),
        tokens("calls", doc="Calls of the agent on the day."),
        tokens("successful_calls", doc="Calls whose status is a success (see lib.rollups)."),
        _unpriced(),
        money("cost_usd", doc="USD of the agent's priced calls."),
        money(
            "cost_per_successful_call_usd",
            nullable=True,
            doc="cost_usd over the successful priced calls: what a success costs, failures "
            "included (null without a successful priced call).",
        ),
        tokens("input_tokens"),
        tokens("cache_read_tokens"),
        tokens("output_tokens"),
        col(
            "tokens_per_usd",
            "float",
            min_value=0,
            doc="Input plus output tokens of the priced calls per USD (null at no cost).",
        ),
        col(
            "cache_hit_share",
            "float",
            min_value=0,
            doc="cache_read_tokens / input_tokens, 0..1 (null without input).",
        ),
        col("latency_p50_ms", "float", min_value=0, doc="Median latency of the calls."),
        col("latency_p95_ms", "float", min_value=0, doc="95th percentile latency of the calls."),
    ),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Per UTC day, tenant and agent: cost, calls, cost per successful call, tokens per "
    "dollar, cache hit share and latency percentiles; the day's rows add up to "
    "priced_interactions.",
)


AGENT_UNIT_ECONOMICS = TableSchema(
    name="agent_unit_economics",
    columns=(
        col("tenant_id", "str", nullable=False),
        col("period", "str", nullable=False, doc="The tenant-local month, YYYY-MM."),
        col("agent_id", "str", doc="The agent (null: calls logged without one)."),
        tokens("calls", doc="Calls of the agent in the period."),
        _unpriced(),
        money("cost_usd", doc="USD of the agent's priced calls in the period."),
        col(
            "call_share",
            "float",
            nullable=False,
            min_value=0,
            doc="The agent's share of the tenant's calls in the period, 0..1.",
        ),
        money(
            "tenant_revenue_usd",
            nullable=True,
            doc="The tenant's revenue in the period, from tenant_unit_economics (null: no "
            "revenue configured or not computed yet).",
        ),
        money(
            "revenue_usd",
            nullable=True,
            doc="tenant_revenue_usd x call_share: each call earns the tenant's average "
            "revenue per call.",
        ),
        money("gross_margin_usd", nullable=True, signed=True, doc="revenue_usd - cost_usd."),
        col("margin_pct", "float", doc="gross_margin_usd / revenue_usd x 100 (null at 0)."),
        col("computed_at", "datetime", nullable=False),
    ),
    partition_column=None,
    indexes=(("period",), ("tenant_id", "period")),
    doc="Per tenant, local month and agent: the agent's LLM cost against its share of the "
    "tenant's revenue. The tenant-level view (whole cost incl. cloud and Kubernetes, revenue, "
    "margin) is tenant_unit_economics, joined on (tenant_id, period).",
)
