"""`daily_cost_summary`: the day's whole cost per tenant, category, provider, model and agent."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
from collections.abc import Iterator
from datetime import date

import dagster as dg

from cost_pipeline.catalog import (
    DAILY_COST_SUMMARY,
    INFRA_COST_ALLOCATION,
    PROVIDER_USAGE_PRICED,
)
from cost_pipeline.defs.infrastructure.assets import infra_cost_allocation
from cost_pipeline.defs.partitions import SINGLE_RUN, daily_partitions, for_each_day, partition_day
from cost_pipeline.defs.pricing.assets import priced_interactions
from cost_pipeline.defs.pricing.provider_assets import provider_usage_priced
from cost_pipeline.lib.allocation import infra_summary_rows
from cost_pipeline.lib.reconciliation import unattributed_summary_rows
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.lib.summary import (
    assemble_summary,
    llm_summary_rows,
    top_tenants,
)
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import queries


@dg.asset(
    group_name="summaries",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[priced_interactions, provider_usage_priced, infra_cost_allocation],
    description=(
        "Per day × tenant × category (llm, unattributed, cloud, k8s) × provider × model or "
        "service × agent: requests, tokens, cost. `unattributed` rows top the app log up to "
        "what the provider's usage API reports; `unpriced_requests` flags rows whose cost is "
        "incomplete (no price, or usage the price needs is missing), and a count per pricing "
        "status says how the rest were priced (tier fallback, override)."
    ),
)
@for_each_day
def daily_cost_summary(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    llm = llm_summary_rows(queries.llm_day_groups(wh, day))
    # Provider usage the app log does not explain, so the LLM total equals the provider truth.
    unattributed = unattributed_summary_rows(llm, wh.read(PROVIDER_USAGE_PRICED, days=[day]))
    infra = infra_summary_rows(wh.read(INFRA_COST_ALLOCATION, days=[day]))
    summary = assemble_summary([llm, unattributed, infra])
    rows = wh.replace_partition(DAILY_COST_SUMMARY, day, summary)
    missing = _missing_sources(context.instance, day)
    by_category = summary.groupby("cost_category")["cost_usd"].sum()
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "total_cost_usd": round(float(summary["cost_usd"].sum()), 6),
            **{f"{k}_cost_usd": round(float(v), 6) for k, v in by_category.items()},
            "unpriced_requests": int(summary["unpriced_requests"].sum()),
            # LLM calls per pricing status other than `priced` (see `lib.pricing`).
            **{
                c: int(summary[c].fillna(0).sum())
                for c in summary.columns
                if c.endswith("_requests") and c not in ("requests", "unpriced_requests")
            },
            "tenants": int(summary["tenant_id"].nunique()),
            # Sources whose latest answer for the day failed: their stored rows (or none) count.
            "missing_sources": dg.MetadataValue.json(missing),
            "top_tenants": dg.MetadataValue.md(markdown_table(top_tenants(summary))),
        }
    )


def _missing_sources(instance: dg.DagsterInstance, day: date) -> list[str]:
    """Infrastructure sources that did not answer for `day` when last asked: Kubecost's day
    (`source_status` of `k8s_allocations`) and FOCUS deliveries left unread (`cloud_costs`)."""
    out = []
    k8s = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("k8s_allocations"), asset_partitions=[str(day)]
        ),
        limit=1,
    ).records
    if k8s and _value(k8s[0], "source_status") == "missing":
        out.append("k8s: Kubecost / OpenCost did not answer; stored rows used")
    cloud = instance.fetch_materializations(dg.AssetKey("cloud_costs"), limit=1).records
    unread = _value(cloud[0], "incomplete_deliveries") if cloud else None
    if unread:
        out.append(f"cloud: FOCUS deliveries not loaded: {', '.join(unread)}")
    return out


def _value(record: dg.EventLogRecord, key: str) -> object:
    materialization = record.asset_materialization
    value = (materialization.metadata or {}).get(key) if materialization else None
    return getattr(value, "value", value)


@dg.asset_check(
    asset=daily_cost_summary,
    partitions_def=daily_partitions,
    description="The summary's LLM cost equals the sum of the day's priced interactions.",
)
@for_each_day
def summary_matches_priced_interactions(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    day = partition_day(context)
    totals = queries.priced_and_summary_totals(warehouse.get(), day)
    gap = abs(totals["priced_cost_usd"] - totals["summary_llm_cost_usd"])
    return dg.AssetCheckResult(
        passed=gap < 1e-6 and totals["priced_calls"] == totals["summary_requests"],
        metadata=totals,
    )


QUARANTINE_SOURCES = tuple(queries.SOURCE_TABLES)


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(
            f"quarantine_{source}",
            asset=daily_cost_summary,
            partitions_def=daily_partitions,
            description=(
                f"Records of `{source}` quarantined for the day: WARN on any, ERROR above "
                "`plausibility.quarantine_error_share_pct` of the source's records."
            ),
        )
        for source in QUARANTINE_SOURCES
    ],
)
@for_each_day
def quarantine_by_source(
    context: dg.AssetCheckExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> Iterator[dg.AssetCheckResult]:
    day = partition_day(context)
    limit = cost_config.get().plausibility.quarantine_error_share_pct
    counts = queries.quarantine_by_source(warehouse.get(), day).set_index("source")
    for source in QUARANTINE_SOURCES:
        accepted = int(counts.loc[source, "accepted"])
        quarantined = int(counts.loc[source, "quarantined"])
        total = accepted + quarantined
        share = 100 * quarantined / total if total else 0.0
        yield dg.AssetCheckResult(
            check_name=f"quarantine_{source}",
            passed=quarantined == 0,
            severity=dg.AssetCheckSeverity.ERROR if share > limit else dg.AssetCheckSeverity.WARN,
            description=(
                f"{quarantined:,} of {total:,} {source} record(s) of {day} quarantined "
                f"({share:.2f} %; ERROR above {limit:g} %): see the quarantine table"
                if quarantined
                else f"no {source} record of {day} quarantined ({accepted:,} accepted)"
            ),
            metadata={"accepted": accepted, "quarantined": quarantined, "share_pct": share},
        )
