"""Cloud (FOCUS) and Kubernetes cost tables and their per-tenant allocation."""

from __future__ import annotations

from cost_pipeline.lib.schemas import Column, TableSchema, col, money

CLOUD_COSTS = TableSchema(
    name="cloud_costs",
    columns=(
        col("charge_period_start", "datetime", nullable=False),
        col("day", "date", nullable=False),
        col("billing_period_start", "date"),
        col("provider", "str", nullable=False),
        col("service_name", "str"),
        col("service_category", "str"),
        col("sub_account_id", "str"),
        col("resource_id", "str"),
        col("region", "str"),
        col("tags", "json"),
        money("billed_cost", signed=True),
        money("effective_cost", signed=True),
        money("list_cost", signed=True),
        col("currency", "str"),
        col("charge_category", "str"),
        col("invoice_id", "str"),
        col("billing_account_id", "str"),
        col("extensions", "json"),
        col("source_file", "str"),
        col("tenant_id", "str"),
        # FOCUS detail kept so the export can restate it (lib/focus.py, lib/focus_export.py).
        col("charge_period_end", "datetime"),
        money("contracted_cost", nullable=True, signed=True),
        col("list_unit_price", "float"),
        col("consumed_quantity", "float"),
        col("consumed_unit", "str"),
        col("pricing_quantity", "float"),
        col("pricing_unit", "str"),
        col("charge_class", "str"),
        col("charge_frequency", "str"),
        col("charge_description", "str"),
        col("sku_id", "str"),
        col("service_subcategory", "str"),
        col("needs_fx", "bool"),
    ),
    indexes=(("day",),),
    doc="FinOps FOCUS rows, normalized, one row per day of a charge period (multi-day charges "
    "amortized, nano-exact). Costs are in `currency`: rows with `needs_fx` true are not USD and "
    "must be left out of USD totals until converted.",
)


K8S_ALLOCATIONS = TableSchema(
    name="k8s_allocations",
    columns=(
        col("day", "date", nullable=False),
        col("cluster", "str"),
        col("namespace", "str"),
        col("controller", "str"),
        col("allocation_name", "str", nullable=False),
        col("labels", "json"),
        money("cpu_cost", signed=True),
        money("ram_cost", signed=True),
        money("gpu_cost", signed=True),
        money("pv_cost", signed=True),
        money("network_cost", signed=True),
        money("load_balancer_cost", signed=True),
        money("shared_cost", signed=True),
        money("external_cost", signed=True),
        money("total_cost", signed=True),
        col("tenant_id", "str"),
    ),
    doc="Kubecost / OpenCost allocations per day; idle and unmapped kept as their own rows.",
)


INFRA_COST_ALLOCATION = TableSchema(
    name="infra_cost_allocation",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("source", "str", nullable=False),
        col("provider", "str"),
        col("category", "str"),
        money("direct_cost", signed=True),
        money("shared_cost", signed=True),
        money("cost_usd", signed=True),
    ),
    doc="Cloud and Kubernetes cost per tenant and day, shared and idle cost spread by rule.",
)


CLOUD_COST_DELIVERIES = TableSchema(
    name="cloud_cost_deliveries",
    columns=(
        col("provider", "str", nullable=False),
        col("billing_period_start", "date", nullable=False),
        col("delivery", "str", nullable=False),
        col("delivered_at", "datetime", nullable=False),
        Column("rows_loaded", "int", nullable=False, min_value=0),
        col("ingested_at", "datetime", nullable=False),
    ),
    partition_column=None,
    indexes=(("provider", "billing_period_start"),),
    doc="The FOCUS delivery currently loaded for each provider and billing period.",
)
