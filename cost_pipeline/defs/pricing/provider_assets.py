"""`provider_usage_priced`: the providers' usage buckets priced by the app log's own engine."""

# No `from __future__ import annotations` here: Dagster 1.13 validates the `context`
# annotation as an object, and a string annotation fails the definition.

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import ANTHROPIC_USAGE, OPENAI_USAGE, PROVIDER_USAGE_PRICED
from cost_pipeline.defs.ingestion.provider_assets import anthropic_usage, openai_usage
from cost_pipeline.defs.partitions import SINGLE_RUN, daily_partitions, for_each_day, partition_day
from cost_pipeline.lib.pricing import UNPRICED_STATUSES, PricingEngine
from cost_pipeline.lib.provider_usage import price_provider_usage
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.lib.usage_endpoints import is_ledger_priced
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource


@dg.asset(
    group_name="pricing",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[openai_usage, anthropic_usage, dg.AssetKey("model_prices")],
    description=(
        "OpenAI and Anthropic usage buckets of the day priced with the same rate card as the "
        "app log, so the two can be compared model by model. Buckets billed in units the rate "
        "card has no price for (images, characters, seconds, bytes, sessions) get no cost and "
        "status incomplete_usage; they are reconciled against the provider's bill per line item."
    ),
)
@for_each_day
def provider_usage_priced(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    usage = pd.concat(
        [wh.read(OPENAI_USAGE, days=[day]), wh.read(ANTHROPIC_USAGE, days=[day])],
        ignore_index=True,
    )
    engine = PricingEngine.for_config(cost_config.get())
    priced = price_provider_usage(usage, engine)
    wh.replace_partition(PROVIDER_USAGE_PRICED, day, priced)
    unknown = priced.loc[priced["pricing_status"].isin(UNPRICED_STATUSES)]
    other_units = ~is_ledger_priced(priced["provider"], priced["endpoint"])
    # Vector stores and code interpreter usage name no model: shown under their endpoint.
    named = priced.assign(model=priced["model"].fillna(priced["endpoint"]).fillna("(none)"))
    by_model = named.groupby(["provider", "model"])["cost_usd"].sum().nlargest(10).reset_index()
    by_tenant = (
        priced.assign(tenant_id=priced["tenant_id"].fillna("(unmapped)"))
        .groupby("tenant_id")["cost_usd"]
        .sum()
        .nlargest(10)
        .reset_index()
    )
    total = float(priced["cost_usd"].sum())
    context.log.info(f"provider_usage_priced {day}: {len(priced)} rows, ${total:,.2f}")
    return dg.MaterializeResult(
        metadata={
            "rows": len(priced),
            "total_cost_usd": round(total, 6),
            "unpriced_rows": len(unknown),
            "rows_in_units_without_ledger_price": int(other_units.sum()),
            "top_models": dg.MetadataValue.md(markdown_table(by_model)),
            "top_tenants": dg.MetadataValue.md(markdown_table(by_tenant)),
        }
    )
