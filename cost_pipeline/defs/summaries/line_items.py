"""`llm_line_item_reconciliation` and its check: does each billed line item match the ledger?

Every provider line item of the day (OpenAI `/organization/costs` line items, Anthropic cost
report rows) is compared with the ledger's own pricing of the provider's usage, per endpoint,
model and cost component (`lib.line_items`). The check WARNs per line item that does not
reconcile, naming it; line items in units the ledger has no price for are reconciled against
the reported cost and listed in metadata ("no ledger price for unit ...").
"""

# No `from __future__ import annotations` here: Dagster 1.13 validates the `context`
# annotation as an object, and a string annotation fails the definition.

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import (
    LLM_LINE_ITEM_RECONCILIATION,
    PROVIDER_REPORTED_COSTS,
    PROVIDER_USAGE_PRICED,
)
from cost_pipeline.defs.ingestion.provider_assets import provider_reported_costs
from cost_pipeline.defs.partitions import SINGLE_RUN, daily_partitions, for_each_day, partition_day
from cost_pipeline.defs.pricing.provider_assets import provider_usage_priced
from cost_pipeline.lib.line_items import line_item_findings, reconcile_line_items
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource

_TOTALS = [
    "provider",
    "endpoint",
    "unit",
    "usage_quantity",
    "requests",
    "ledger_cost_usd",
    "provider_reported_cost_usd",
    "coverage_pct",
    "drift_pct",
    "note",
]


@dg.asset(
    group_name="summaries",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[provider_usage_priced, provider_reported_costs],
    description=(
        "Per day, provider, usage endpoint, model and cost component: what the provider bills "
        "(its cost line items) against the ledger's own pricing of the provider's usage, with "
        "a total per endpoint and its coverage (the share of the billed cost the ledger prices "
        "itself). Units the ledger has no price for are reconciled against the reported cost."
    ),
)
@for_each_day
def llm_line_item_reconciliation(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    recon = reconcile_line_items(
        wh.read(PROVIDER_USAGE_PRICED, days=[day]), wh.read(PROVIDER_REPORTED_COSTS, days=[day])
    )
    wh.replace_partition(LLM_LINE_ITEM_RECONCILIATION, day, recon)
    totals = recon.loc[recon["status"] == "total"]
    lines = recon.loc[recon["status"] != "total"]
    coverage = {
        f"{r.provider}_{r.endpoint}_coverage_pct": float(r.coverage_pct)
        for r in totals.itertuples(index=False)
        if r.endpoint is not None and pd.notna(r.coverage_pct)
    }
    context.log.info(f"llm_line_item_reconciliation {day}: {len(lines)} line items")
    return dg.MaterializeResult(
        metadata={
            "rows": len(recon),
            "line_items": len(lines),
            **{f"{s}_line_items": int(n) for s, n in lines["status"].value_counts().items()},
            "reported_cost_usd": round(float(lines["provider_reported_cost_usd"].sum()), 6),
            "ledger_cost_usd": round(float(lines["ledger_cost_usd"].sum()), 6),
            **coverage,
            "by_endpoint": dg.MetadataValue.md(markdown_table(totals[_TOTALS], max_rows=40)),
        }
    )


@dg.asset_check(
    asset=llm_line_item_reconciliation,
    partitions_def=daily_partitions,
    description=(
        "Every billed line item matches the ledger's pricing of the provider's usage: WARN per "
        "line item whose material gap passes reconciliation.drift_warn_pct, that is on one "
        "side only, or whose endpoint or unit the pipeline does not know, naming it. Line "
        "items without a ledger price for their unit are listed, not failed."
    ),
)
@for_each_day
def line_items_match_provider_costs(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.AssetCheckResult:
    day = partition_day(context)
    limits = cost_config.get().reconciliation
    recon = warehouse.get().read(LLM_LINE_ITEM_RECONCILIATION, days=[day])
    findings = line_item_findings(recon, warn_pct=limits.drift_warn_pct)
    warnings = [f for f in findings if f.level == "warn"]
    no_price = [f for f in findings if f.level == "info"]
    summary = "; ".join(f.message for f in warnings) or (
        f"{int((recon['status'] != 'total').sum())} line item(s) reconcile on {day}"
    )
    return dg.AssetCheckResult(
        passed=not warnings,
        severity=dg.AssetCheckSeverity.WARN,
        description=summary[:2000],
        metadata={
            "day": str(day),
            "warn_pct": limits.drift_warn_pct,
            "line_items_warned": len(warnings),
            "warned": dg.MetadataValue.md(
                "\n".join(f"- {f.message}" for f in warnings) or "(none)"
            ),
            "no_ledger_price": dg.MetadataValue.md(
                "\n".join(f"- {f.message}" for f in no_price) or "(none)"
            ),
        },
    )
