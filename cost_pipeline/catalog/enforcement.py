"""What the enforcement decision reads: live spend counters, overrides and suspensions, and the
audit of every change to them.

`spend_counters` is kept by the ingestion itself, in the transaction that loads the calls, so a
call that pushes a tenant over its cap is denied after one ingest interval, not after the next
daily build.
"""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col, money

SPEND_COUNTERS = TableSchema(
    name="spend_counters",
    columns=(
        col("day", "date", nullable=False, doc="UTC day of the calls counted."),
        col("tenant_id", "str", nullable=False),
        col("period", "str", nullable=False, doc="The tenant's local billing month (YYYY-MM)."),
        col("scope", "str", nullable=False, doc="tenant, agent, model or provider."),
        col(
            "scope_value",
            "str",
            nullable=False,
            doc="The agent, model or provider ('' for tenant).",
        ),
        money(
            "cost_usd",
            doc="Priced LLM cost of the scope's calls of the day in the period; unpriced calls "
            "are counted in unpriced_calls, never as $0.",
        ),
        col("calls", "int", min_value=0),
        col("unpriced_calls", "int", min_value=0),
    ),
    unique=("day", "tenant_id", "period", "scope", "scope_value"),
    indexes=(("tenant_id", "period"),),
    doc="LLM spend per tenant, scope, local month and UTC day, refreshed by every ingestion in "
    "the transaction that loads the calls (recomputed for each day the ingestion touched).",
)

COUNTER_REFRESHES = TableSchema(
    name="counter_refreshes",
    columns=(
        col("source", "str", nullable=False),
        col("refreshed_at", "datetime", nullable=False),
    ),
    partition_column=None,
    unique=("source",),
    doc="When each source last brought spend_counters up to date: how fresh a decision is.",
)

ENFORCEMENT_ACTIONS = TableSchema(
    name="enforcement_actions",
    columns=(
        col("action_id", "str", nullable=False),
        col("kind", "str", nullable=False, doc="override (let calls through) or suspension."),
        col("tenant_id", "str", nullable=False),
        col("scope", "str", nullable=False, doc="tenant, agent, model or provider."),
        col("scope_value", "str", nullable=False),
        col("reason", "str", nullable=False),
        col("actor", "str", nullable=False, doc="Who asked for it."),
        col("created_at", "datetime", nullable=False),
        col("expires_at", "datetime", doc="Overrides always expire; suspensions may not."),
        col("revoked_at", "datetime"),
        col("revoked_by", "str"),
    ),
    partition_column=None,
    unique=("action_id",),
    indexes=(("tenant_id",),),
    doc="Emergency overrides and suspensions of a tenant, agent, model or provider.",
)

ENFORCEMENT_AUDIT = TableSchema(
    name="enforcement_audit",
    columns=(
        col("at", "datetime", nullable=False),
        col("actor", "str", nullable=False),
        col("action", "str", nullable=False, doc="override, suspend, revoke or config_change."),
        col("tenant_id", "str"),
        col("subject", "str", nullable=False, doc="What changed, e.g. agent:support-bot."),
        col("old_value", "json"),
        col("new_value", "json"),
        col("reason", "str"),
    ),
    partition_column=None,
    indexes=(("at",),),
    doc="Every change to what enforcement decides: overrides, suspensions, revocations and "
    "configuration changes (tiers, budgets, limits, rate cards), with old and new value.",
)

CONFIG_SNAPSHOTS = TableSchema(
    name="config_snapshots",
    columns=(
        col("taken_at", "datetime", nullable=False),
        col("sha256", "str", nullable=False),
        col("path", "str", nullable=False),
        col("settings", "json", nullable=False, doc="The audited settings, flattened by path."),
    ),
    partition_column=None,
    indexes=(("taken_at",),),
    doc="The audited settings of the configuration each time they changed: what the next "
    "change is compared with.",
)
