"""`llm_cost_reconciliation` and its checks: does the app log explain what the providers saw?

The checks judge each provider's day with the limits of config `reconciliation`
(`lib.reconciliation.drift_verdicts`): a total drift past `drift_warn_pct` or a material
per-model gap (a mislabelled model, unlogged usage of a model) fails with severity WARN and
names the models; only a total drift past `drift_fail_pct` or an app log explaining less than
`min_coverage_pct` of the provider's usage fails with ERROR.
"""

# No `from __future__ import annotations` here: Dagster 1.13 validates the `context`
# annotation as an object, and a string annotation fails the definition.

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import (
    LLM_COST_RECONCILIATION,
    PROVIDER_REPORTED_COSTS,
    PROVIDER_USAGE_PRICED,
)
from cost_pipeline.defs.ingestion.provider_assets import provider_reported_costs
from cost_pipeline.defs.partitions import SINGLE_RUN, daily_partitions, for_each_day, partition_day
from cost_pipeline.defs.pricing.provider_assets import provider_usage_priced
from cost_pipeline.lib.reconciliation import drift_verdicts, reconcile
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import queries

_SHOWN = [
    "provider",
    "model",
    "app_log_cost_usd",
    "provider_usage_cost_usd",
    "provider_reported_cost_usd",
    "coverage_pct",
    "drift_pct",
    "reported_drift_pct",
]


@dg.asset(
    group_name="summaries",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[dg.AssetKey("priced_interactions"), provider_usage_priced, provider_reported_costs],
    description=(
        "Per day × provider (and model): cost from the app log, from provider usage and as the "
        "provider reports it; coverage = share of provider-usage cost the app log explains; "
        "drift = (app log − provider usage) / provider usage."
    ),
)
@for_each_day
def llm_cost_reconciliation(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    recon = reconcile(
        queries.llm_day_groups(wh, day),
        wh.read(PROVIDER_USAGE_PRICED, days=[day]),
        wh.read(PROVIDER_REPORTED_COSTS, days=[day]),
    )
    wh.replace_partition(LLM_COST_RECONCILIATION, day, recon)
    totals = recon.loc[recon["model"].isna()]
    per_provider = {
        f"{r.provider}_{what}": float(getattr(r, what))
        for r in totals.itertuples(index=False)
        for what in ("coverage_pct", "drift_pct")
        if pd.notna(getattr(r, what))
    }
    return dg.MaterializeResult(
        metadata={
            "rows": len(recon),
            "app_log_cost_usd": round(float(totals["app_log_cost_usd"].sum()), 6),
            "provider_usage_cost_usd": round(float(totals["provider_usage_cost_usd"].sum()), 6),
            **per_provider,
            "reconciliation": dg.MetadataValue.md(markdown_table(recon[_SHOWN], max_rows=40)),
        }
    )


def _drift_check(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    against: str,
) -> dg.AssetCheckResult:
    day = partition_day(context)
    limits = cost_config.get().reconciliation
    recon = warehouse.get().read(LLM_COST_RECONCILIATION, days=[day])
    verdicts = drift_verdicts(
        recon,
        warn_pct=limits.drift_warn_pct,
        fail_pct=limits.drift_fail_pct,
        min_coverage_pct=limits.min_coverage_pct,
        against=against,
    )
    bad = [v for v in verdicts if v.level in ("warn", "fail")]
    failing = any(v.level == "fail" for v in bad)
    explaining = [v.models.assign(provider=v.provider) for v in bad if len(v.models)]
    summary = "; ".join(v.message for v in bad) or (
        "; ".join(v.message for v in verdicts) or f"nothing to reconcile on {day}"
    )
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR if failing else dg.AssetCheckSeverity.WARN,
        description=summary[:2000],
        metadata={
            "day": str(day),
            "warn_pct": limits.drift_warn_pct,
            "fail_pct": limits.drift_fail_pct,
            "min_coverage_pct": limits.min_coverage_pct,
            **{f"{v.provider}_level": v.level for v in verdicts},
            **{f"{v.provider}_drift_pct": v.drift_pct for v in verdicts if v.drift_pct is not None},
            **{
                f"{v.provider}_coverage_pct": v.coverage_pct
                for v in verdicts
                if against == "app_log" and v.coverage_pct is not None
            },
            "models_explaining_gap": dg.MetadataValue.md(
                markdown_table(pd.concat(explaining, ignore_index=True) if explaining else None)
            ),
        },
    )


@dg.asset_check(
    asset=llm_cost_reconciliation,
    partitions_def=daily_partitions,
    description=(
        "The app log explains the providers' usage: drift within the configured limits for each "
        "provider and for every model whose gap is material (catches unlogged services, calls "
        "logged at $0 and mislabelled models). WARN names the models; ERROR when the total "
        "drift or the coverage is beyond its configured limit."
    ),
)
@for_each_day
def app_log_matches_provider_usage(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.AssetCheckResult:
    return _drift_check(context, warehouse, cost_config, "app_log")


@dg.asset_check(
    asset=llm_cost_reconciliation,
    partitions_def=daily_partitions,
    description=(
        "What the providers bill matches their usage priced by our rate card (catches a wrong "
        "or missing price, a discount not configured)."
    ),
)
@for_each_day
def provider_reported_costs_match_usage(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.AssetCheckResult:
    return _drift_check(context, warehouse, cost_config, "reported")
