"""`model_prices` (the rate card) and `priced_interactions` (every logged call, priced)."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
import dagster as dg

from cost_pipeline.catalog import LLM_INTERACTIONS, MODEL_PRICES, PRICED_INTERACTIONS
from cost_pipeline.defs.ingestion.assets import llm_interactions
from cost_pipeline.defs.partitions import SINGLE_RUN, daily_partitions, for_each_day, partition_day
from cost_pipeline.lib.enforcement import counted_scopes
from cost_pipeline.lib.pricing import UNPRICED_STATUSES, PricingEngine
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import queries
from cost_pipeline.store.enforcement import (
    counters_against_calls,
    lacks_user_scope,
    refresh_counters,
)


@dg.asset(
    group_name="pricing",
    kinds={"python", "sql"},
    description=(
        "Effective-dated rate card: the genai-prices snapshot plus negotiated overrides and the "
        "configured rate cards of units beyond tokens (characters, seconds, images, requests)."
    ),
)
def model_prices(
    warehouse: WarehouseResource, cost_config: CostConfigResource
) -> dg.MaterializeResult:
    card = PricingEngine.for_config(cost_config.get()).rate_card()
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
    backfill_policy=SINGLE_RUN,
    deps=[llm_interactions, model_prices],
    description=(
        "The day's calls priced at the list price in force at each call (plus overrides). Calls "
        "are priced as they are ingested; this re-prices the day only where the rate card "
        "changed since. Unknown models get pricing_status=unknown_model and are flagged by a "
        "blocking check. " + PRICED_INTERACTIONS.doc
    ),
)
@for_each_day
def priced_interactions(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    config = cost_config.get()
    engine = PricingEngine.for_config(config)
    zones, scopes = {t.id: t.timezone for t in config.tenants}, counted_scopes(config)
    versions = queries.price_versions(wh, day)
    stale = int(versions.loc[versions["price_version"] != engine.price_version, "calls"].sum())
    if stale:
        context.log.info(f"{day}: {stale:,} call(s) priced with an older rate card: re-pricing")
        columns = LLM_INTERACTIONS.column_names
        wh.rewrite_day(
            PRICED_INTERACTIONS,
            day,
            lambda frame: engine.price(frame[columns]),
            # The live spend counters follow the new prices in the same transaction.
            then=lambda conn: refresh_counters(wh, conn, [day], zones, source=None, scopes=scopes),
        )
        versions = queries.price_versions(wh, day)
    # The close reconciles the live counters with the stored calls: a day ingested before the
    # counters existed (or before a user limit asked for user counters), or changed outside an
    # ingestion, is recounted, and said so.
    repaired = _counters_off(counters_against_calls(wh, day))
    if "user" in scopes and lacks_user_scope(wh, day):
        repaired = max(repaired, 1)
    if repaired:
        context.log.warning(f"{day}: live spend counters recounted ({repaired} tenant(s) off)")
        with wh.transaction(lock_key=f"spend_counters:day={day}") as conn:
            refresh_counters(wh, conn, [day], zones, source=None, scopes=scopes)
    calls = int(versions["calls"].sum())
    cost = float(versions["cost_usd"].sum())
    unpriced = int(versions.loc[versions["pricing_status"].isin(UNPRICED_STATUSES), "calls"].sum())
    unknown_models = queries.unpriced_models(wh, day)
    context.log.info(f"{day}: {calls:,} calls, ${cost:,.2f}, {stale:,} re-priced")
    return dg.MaterializeResult(
        metadata={
            "rows": calls,
            "total_cost_usd": round(cost, 6),
            "unpriced_calls": unpriced,
            # How each call was priced (`lib.pricing`): tier fallbacks and overrides have a cost.
            "calls_by_pricing_status": dg.MetadataValue.json(
                {
                    str(k): int(v)
                    for k, v in versions.groupby("pricing_status")["calls"].sum().items()
                }
            ),
            "repriced_calls": stale,
            "counters_recounted_tenants": repaired,
            "price_version": engine.price_version,
            "top_tenants": dg.MetadataValue.md(markdown_table(queries.cost_by_tenant(wh, day))),
            **(
                {"unknown_models": dg.MetadataValue.md(markdown_table(unknown_models))}
                if len(unknown_models)
                else {}
            ),
        }
    )


@dg.asset_check(
    asset=priced_interactions,
    partitions_def=daily_partitions,
    description=(
        "Every call's model has a price. Not blocking: the day's summary, budgets and analytics "
        "still build, with `unpriced_requests` set; what an unknown model blocks is billing "
        "(overage of a period with unpriced usage is held until priced or released)."
    ),
)
@for_each_day
def no_unknown_models(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    day = partition_day(context)
    unknown = queries.unpriced_models(warehouse.get(), day)
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


@dg.asset_check(
    asset=priced_interactions,
    partitions_def=daily_partitions,
    description="No event id is stored twice on a day (ingestion keeps the first copy).",
)
@for_each_day
def event_ids_unique_per_day(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    day = partition_day(context)
    duplicates = queries.duplicate_event_ids(warehouse.get(), day)
    return dg.AssetCheckResult(
        passed=duplicates == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{duplicates:,} repeated event id(s) on {day}" if duplicates else "unique",
        metadata={"duplicate_event_ids": duplicates},
    )


@dg.asset_check(
    asset=priced_interactions,
    partitions_def=daily_partitions,
    description=(
        "The live spend counters that `enforcement.decide` reads equal the day's stored calls "
        "per tenant (cost of priced calls and number of calls): enforcement decides on the "
        "ledger's numbers, not on a drifted copy."
    ),
)
@for_each_day
def spend_counters_match_calls(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    day = partition_day(context)
    both = counters_against_calls(warehouse.get(), day)
    off = both[_off(both)]
    return dg.AssetCheckResult(
        passed=off.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(off)} tenant(s) whose counters differ from the stored calls on {day}"
            if len(off)
            else f"counters equal the stored calls of {len(both)} tenant(s) on {day}"
        ),
        metadata={"tenants_off": len(off), "differences": dg.MetadataValue.md(markdown_table(off))},
    )


def _off(both):
    return ((both["cost_usd"] - both["counted_usd"]).abs() > 1e-6) | (
        both["calls"] != both["counted_calls"]
    )


def _counters_off(both) -> int:
    return int(_off(both).sum())
