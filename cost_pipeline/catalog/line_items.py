"""The per-line-item reconciliation of what the providers bill against the ledger's priced usage."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col, money

LLM_LINE_ITEM_RECONCILIATION = TableSchema(
    name="llm_line_item_reconciliation",
    columns=(
        col("day", "date", nullable=False),
        col("provider", "str", nullable=False),
        col(
            "endpoint",
            "str",
            doc="The usage endpoint (completions, embeddings, images, ...); null for a billed "
            "line item no rule places on an endpoint.",
        ),
        col("unit", "str", doc="The endpoint's billing unit: tokens, images, characters, ..."),
        col("model", "str", doc="Model without its dated suffix; null on endpoint totals."),
        col(
            "cost_component",
            "str",
            doc="input, cached_input, cache_write, output or other; null when compared with "
            "the model's whole cost (or on endpoint totals).",
        ),
        col("line_item", "str", doc="The provider's line item(s) the row compares."),
        col(
            "usage_quantity",
            "float",
            min_value=0,
            doc="Usage in the row's unit (tokens of the component, images, characters, ...).",
        ),
        col("requests", "int", min_value=0, doc="Model requests of the usage."),
        money(
            "ledger_cost_usd",
            nullable=True,
            doc="The provider's usage priced by the ledger's own engine; null where the ledger "
            "has no price for the unit.",
        ),
        money("provider_reported_cost_usd", nullable=True, signed=True),
        col(
            "drift_pct",
            "float",
            doc="(reported - ledger) / ledger x 100, where both sides exist.",
        ),
        col(
            "coverage_pct",
            "float",
            doc="Endpoint totals: the share of the endpoint's reported cost the ledger's own "
            "priced usage explains (0 where the ledger has no price for the unit).",
        ),
        col(
            "status",
            "str",
            nullable=False,
            doc="priced (both sides), no_ledger_price (reconciled against the reported cost), "
            "usage_only, reported_only, unknown_endpoint, unknown_unit, or total.",
        ),
        col("note", "str", doc="What the row means in words (e.g. no ledger price for unit X)."),
        col("tenant_id", "str"),
    ),
    doc="Per day, provider, endpoint, model and cost component: the provider-reported cost "
    "against the ledger's priced usage, with a total row per endpoint; nothing is dropped.",
)
