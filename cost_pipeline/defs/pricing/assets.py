"""`model_prices` (the rate card) and `priced_interactions` (every logged call, priced)."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
import dagster as dg
import pandas as pd

from cost_pipeline.catalog import LLM_INTERACTIONS, MODEL_PRICES, PRICED_INTERACTIONS
from cost_pipeline.defs.ingestion.assets import llm_interactions
from cost_pipeline.defs.partitions import daily_partitions, partition_day
from cost_pipeline.lib.pricing import PRICED, PricingEngine
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource


@dg.asset(
    group_name="pricing",
    kinds={"python", "sql"},
    description="Effective-dated rate card: the genai-prices snapshot plus negotiated overrides.",
)
def model_prices(
    warehouse: WarehouseResource, cost_config: CostConfigResource
) -> dg.MaterializeResult:
    card = PricingEngine(overrides=cost_config.get().price_overrides).rate_card()
    rows = warehouse.get().replace_table(MODEL_PRICES, card)
    versions = sorted(card["price_version"].unique())
    by_source = card.groupby(["provider", "source"]).size().rename("rows").reset_index()
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "price_version": ", ".join(versions),
            "models": int(card["model_pattern"].nunique()),
            "rows_by_provider": dg.MetadataValue.md(markdown_table(by_source)),
        }
    )


@dg.asset(
    group_name="pricing",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    deps=[llm_interactions, model_prices],
    description=(
        "The day's interactions priced at the list price in force at each call (plus overrides). "
        "Unknown models get pricing_status=unknown_model and are flagged by a blocking check."
    ),
)
def priced_interactions(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    engine = PricingEngine(overrides=cost_config.get().price_overrides)
    stats = {"rows": 0, "cost": 0.0, "unknown": 0}
    unknown: list[pd.DataFrame] = []
    by_tenant: list[pd.Series] = []

    def priced_chunks():
        for chunk in wh.read_chunks(LLM_INTERACTIONS, days=[day]):
            priced = engine.price(chunk)
            stats["rows"] += len(priced)
            stats["cost"] += float(priced["cost_usd"].sum())
            is_unknown = priced["pricing_status"] != PRICED
            stats["unknown"] += int(is_unknown.sum())
            if is_unknown.any():
                unknown.append(
                    priced.loc[is_unknown]
                    .groupby(["provider", "model", "pricing_status"])
                    .size()
                    .rename("calls")
                )
            by_tenant.append(priced.groupby("tenant_id")["cost_usd"].sum())
            yield priced

    wh.replace_partition_chunks(PRICED_INTERACTIONS, day, priced_chunks())
    top = (
        pd.concat(by_tenant).groupby(level=0).sum().nlargest(10).rename("cost_usd").reset_index()
        if by_tenant
        else pd.DataFrame(columns=["tenant_id", "cost_usd"])
    )
    unknown_models = (
        pd.concat(unknown).groupby(level=[0, 1, 2]).sum().reset_index() if unknown else None
    )
    context.log.info(f"{day}: priced {stats['rows']:,} calls, ${stats['cost']:,.2f}")
    return dg.MaterializeResult(
        metadata={
            "rows": stats["rows"],
            "total_cost_usd": round(stats["cost"], 6),
            "unpriced_calls": stats["unknown"],
            "price_version": engine.price_version,
            "top_tenants": dg.MetadataValue.md(markdown_table(top)),
            **(
                {"unknown_models": dg.MetadataValue.md(markdown_table(unknown_models))}
                if unknown_models is not None
                else {}
            ),
        }
    )


@dg.asset_check(
    asset=priced_interactions,
    blocking=True,
    description="Every call's model has a price; an unknown model must not reach a bill.",
)
def no_unknown_models(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    day = partition_day(context)
    unknown = warehouse.get().query(
        "SELECT provider, model, pricing_status, COUNT(*) AS calls, "
        "SUM(input_tokens + output_tokens) AS tokens FROM priced_interactions "
        "WHERE day = :day AND pricing_status <> :priced "
        "GROUP BY provider, model, pricing_status ORDER BY calls DESC",
        {"day": day, "priced": PRICED},
    )
    calls = int(unknown["calls"].sum()) if len(unknown) else 0
    return dg.AssetCheckResult(
        passed=calls == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{calls:,} call(s) on {len(unknown)} unpriced model(s) on {day}: add a price "
            "override or fix the model name"
            if calls
            else f"every call on {day} priced"
        ),
        metadata={
            "unpriced_calls": calls,
            "unknown_models": dg.MetadataValue.md(markdown_table(unknown)),
        },
    )
