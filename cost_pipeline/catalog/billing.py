"""Overage, unit economics and the Stripe billing ledger with its period close and
reconciliation."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col, money

OVERAGE_CHARGES = TableSchema(
    name="overage_charges",
    columns=(
        col("tenant_id", "str", nullable=False),
        col("period", "str", nullable=False),
        col("period_start", "datetime", nullable=False),
        col("period_end", "datetime", nullable=False),
        col("tier", "str", nullable=False),
        col("stripe_customer_id", "str"),
        col("rate_source", "str", nullable=False),  # tier | contract | none (capped tier)
        col("overage_unit", "str"),  # usd | tokens | null when no overage terms
        money("included_usage_usd", nullable=True),
        col("included_tokens", "int", min_value=0),
        col(
            "allowance_counts",
            "str",
            doc="What counts toward the allowance: llm (LLM calls) or all (whole cost).",
        ),
        money("usage_usd", doc="The period's usage that counts toward the allowance, in USD."),
        money(
            "cost_usd",
            nullable=True,
            signed=True,
            doc="The period's whole cost (LLM, cloud, Kubernetes, unattributed), in USD.",
        ),
        col("usage_tokens", "int", min_value=0),
        col("overage_quantity", "float", nullable=False, min_value=0),
        col("markup", "float", min_value=0),
        money("unit_price_usd", nullable=True),
        money("amount_usd", doc="Overage amount to bill for the period, in USD."),
        col("amount_cents", "int", nullable=False, min_value=0),
        col("computed_at", "datetime", nullable=False),
    ),
    partition_column=None,
    unique=("tenant_id", "period"),
    indexes=(("period",),),
    doc="Per tenant and local billing month: allowance, usage, overage and amount to bill.",
)


TENANT_UNIT_ECONOMICS = TableSchema(
    name="tenant_unit_economics",
    columns=(
        col("tenant_id", "str", nullable=False),
        col("period", "str", nullable=False),
        col("tier", "str", nullable=False),
        money("tier_price_usd"),
        money("overage_usd"),
        money("revenue_usd"),
        money("cost_usd", signed=True),
        money("gross_margin_usd", signed=True),
        col("margin_pct", "float"),
        col("computed_at", "datetime", nullable=False),
    ),
    partition_column=None,
    unique=("tenant_id", "period"),
    indexes=(("period",),),
    doc="Per tenant and local month: revenue (tier price + overage) vs whole cost, margin.",
)


BILLING_LEDGER = TableSchema(
    name="billing_ledger",
    columns=(
        col("identifier", "str", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("period", "str", nullable=False),
        col("sequence", "int", nullable=False, min_value=1),
        col("kind", "str", nullable=False),  # meter_event | pending_credit | hold
        col("mode", "str", nullable=False),  # live | dry_run
        col("stripe_customer_id", "str"),
        col("event_name", "str"),
        col("value_cents", "int", nullable=False, min_value=0),
        col("event_timestamp", "datetime"),
        col("status", "str", nullable=False),
        col("attempts", "int", nullable=False, min_value=0),
        col("last_error", "str"),
        col("created_at", "datetime", nullable=False),
        col("updated_at", "datetime", nullable=False),
        col(
            "first_attempt_at",
            "datetime",
            doc="First call to Stripe; past the confirmation age the event is confirmed.",
        ),
        col(
            "idempotency_key",
            "str",
            doc="Key of the next send; null means the identifier (fresh after a confirmation).",
        ),
        col(
            "hold_reason",
            "str",
            doc="Why a `hold` row keeps its period's overage from Stripe: overage above "
            "ceiling, unpriced usage.",
        ),
        col("released_by", "str", doc="Who released a held period (billing_release_job)."),
        col("released_at", "datetime", doc="When a held period was released."),
        col("release_reason", "str", doc="Why the person released it."),
    ),
    partition_column=None,
    unique=("identifier",),
    indexes=(("tenant_id", "period"),),
    doc=(
        "Every intended Stripe meter event (recorded before sending) and its outcome; held "
        "periods (`kind = hold`: value is the period total kept from Stripe) and releases."
    ),
)


BILLING_PERIOD_CLOSE = TableSchema(
    name="billing_period_close",
    columns=(
        col("period", "str", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("computed_cents", "int", nullable=False, min_value=0),
        col("reported_cents", "int", nullable=False),
        col("closed_at", "datetime", nullable=False),
    ),
    partition_column=None,
    unique=("period", "tenant_id"),
    doc="Finalized billing periods; the billing run sends nothing more for them.",
)


BILLING_RECONCILIATION = TableSchema(
    name="billing_reconciliation",
    columns=(
        col("period", "str", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("mode", "str", nullable=False),
        col("computed_cents", "int", nullable=False, min_value=0),
        col("reported_cents", "int", nullable=False),
        col("unconfirmed_cents", "int", nullable=False, min_value=0),
        col("pending_credit_cents", "int", nullable=False, min_value=0),
        col("resolved_credit_cents", "int", nullable=False, min_value=0),
        col("difference_cents", "int", nullable=False),
        col(
            "held_cents",
            "int",
            min_value=0,
            doc="Computed overage kept from Stripe by an open hold (awaiting release).",
        ),
        col("held_reason", "str", doc="Why it is held: overage above ceiling, unpriced usage."),
        col(
            "waiting_on",
            "str",
            doc="Identifiers of the tenant's events still unconfirmed: the close waits on them.",
        ),
        col("ok", "bool", nullable=False),
        col("reconciled_at", "datetime", nullable=False),
    ),
    partition_column=None,
    unique=("period", "tenant_id"),
    doc="Per closing period and tenant: the ledger's reported total vs computed overage.",
)
