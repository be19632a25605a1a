"""Provider truth, per UTC day: `openai_usage`, `anthropic_usage`, `provider_reported_costs`.

Each asset pulls its day from the providers' admin APIs (or their offline twins), normalizes it
(`lib.provider_usage`) and replaces the day's partition, so the restatement schedule can re-pull
the last days (providers revise them) as often as it likes.
"""

# No `from __future__ import annotations` here: Dagster 1.13 validates the `context`
# annotation as an object, and a string annotation fails the definition.

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import ANTHROPIC_USAGE, OPENAI_USAGE, PROVIDER_REPORTED_COSTS
from cost_pipeline.defs.partitions import SINGLE_RUN, daily_partitions, for_each_day, partition_day
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.provider_usage import (
    normalize_anthropic_costs,
    normalize_anthropic_usage,
    normalize_openai_costs,
    normalize_openai_usage,
    usage_by_endpoint,
)
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.lib.schemas import TableSchema
from cost_pipeline.resources.anthropic_admin import AnthropicAdmin
from cost_pipeline.resources.openai_admin import OpenAIAdmin
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource

NOT_CONFIGURED = "not configured"
RESTATEMENT_DAYS = (1, 2, 3)


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


def _usage_metadata(usage: pd.DataFrame, source: str) -> dict[str, Any]:
    by_model = (
        usage.groupby("model", dropna=False)[["requests", "input_tokens", "output_tokens"]]
        .sum()
        .sort_values("input_tokens", ascending=False)
        .reset_index()
    )
    endpoints = usage_by_endpoint(usage)
    return {
        "source": source,
        "rows": len(usage),
        "requests": int(usage["requests"].sum()),
        "input_tokens": int(usage["input_tokens"].sum()),
        "cache_read_tokens": int(usage["cache_read_tokens"].sum()),
        "output_tokens": int(usage["output_tokens"].sum()),
        "unmapped_rows": int(usage["tenant_id"].isna().sum()),
        # Quantities the normalizer does not know: kept, and reported per line item downstream.
        "unrecognized_rows": int(usage["unrecognized"].notna().sum()),
        "by_endpoint": dg.MetadataValue.md(markdown_table(endpoints)),
        "by_model": dg.MetadataValue.md(markdown_table(by_model)),
    }


def _materialize_usage(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    schema: TableSchema,
    admin: OpenAIAdmin | AnthropicAdmin,
    fetch: Callable[..., list[dict[str, Any]]],
    normalize: Callable[[list[dict[str, Any]], CostConfig], pd.DataFrame],
    config: CostConfig,
) -> dg.MaterializeResult:
    day = partition_day(context)
    wh = warehouse.get()
    if not admin.is_configured:
        wh.replace_partition(schema, day, schema.empty_frame())
        return dg.MaterializeResult(metadata={"source": NOT_CONFIGURED, "rows": 0})
    start, end = day_window(day)
    usage = normalize(fetch(start=start, end=end), config)
    usage = usage.loc[usage["day"] == day]  # buckets snap to UTC days; keep exactly ours
    wh.replace_partition(schema, day, usage)
    context.log.info(f"{schema.name} {day}: {len(usage)} bucket rows from {admin.source_label}")
    return dg.MaterializeResult(metadata=_usage_metadata(usage, admin.source_label))


@dg.asset(
    group_name="ingestion",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    description=(
        "OpenAI usage of the day from every usage endpoint that bills (completions, embeddings, "
        "moderations in tokens; images; audio speeches in characters; audio transcriptions in "
        "seconds; vector stores in bytes; code interpreter sessions), 1d buckets with each "
        "endpoint's native unit, normalized to the token convention and mapped to tenants. "
        "Needs OPENAI_ADMIN_KEY."
    ),
)
@for_each_day
def openai_usage(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    openai_admin: OpenAIAdmin,
) -> dg.MaterializeResult:
    return _materialize_usage(
        context,
        warehouse,
        OPENAI_USAGE,
        openai_admin,
        openai_admin.usage,
        normalize_openai_usage,
        cost_config.get(),
    )


@dg.asset(
    group_name="ingestion",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    description=(
        "Anthropic messages usage of the day (by model, workspace, API key, service tier and "
        "context window); total input = uncached + cache writes + cache reads. "
        "Needs ANTHROPIC_ADMIN_KEY."
    ),
)
@for_each_day
def anthropic_usage(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    anthropic_admin: AnthropicAdmin,
) -> dg.MaterializeResult:
    return _materialize_usage(
        context,
        warehouse,
        ANTHROPIC_USAGE,
        anthropic_admin,
        anthropic_admin.usage_messages,
        normalize_anthropic_usage,
        cost_config.get(),
    )


@dg.asset(
    group_name="ingestion",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    description=(
        "What OpenAI's and Anthropic's cost endpoints bill for the day, in USD "
        "(Anthropic's cents strings converted), each line item placed on its usage endpoint "
        "and cost component. Unconfigured providers contribute no rows."
    ),
)
@for_each_day
def provider_reported_costs(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    openai_admin: OpenAIAdmin,
    anthropic_admin: AnthropicAdmin,
) -> dg.MaterializeResult:
    day = partition_day(context)
    start, end = day_window(day)
    config = cost_config.get()
    parts: list[pd.DataFrame] = []
    sources: dict[str, str] = {}
    if openai_admin.is_configured:
        parts.append(normalize_openai_costs(openai_admin.costs(start=start, end=end), config))
        sources["openai"] = openai_admin.source_label
    if anthropic_admin.is_configured:
        parts.append(normalize_anthropic_costs(anthropic_admin.costs(start=start, end=end), config))
        sources["anthropic"] = anthropic_admin.source_label
    costs = pd.concat(parts, ignore_index=True) if parts else PROVIDER_REPORTED_COSTS.empty_frame()
    costs = costs.loc[costs["day"] == day]
    warehouse.get().replace_partition(PROVIDER_REPORTED_COSTS, day, costs)
    by_provider = costs.groupby("provider")["amount_usd"].sum().round(6)
    # Tool and storage line items name no model: they show under their line item.
    named = costs.assign(model=costs["model"].fillna(costs["line_item"]).fillna("(none)"))
    top = named.groupby(["provider", "model"])["amount_usd"].sum().nlargest(10).reset_index()
    return dg.MaterializeResult(
        metadata={
            "source": "; ".join(f"{k}: {v}" for k, v in sources.items()) or NOT_CONFIGURED,
            "rows": len(costs),
            "total_cost_usd": round(float(costs["amount_usd"].sum()), 6),
            # Line items no rule places on an endpoint: kept, and warned about per line item.
            "unplaced_line_items": int(costs["endpoint"].isna().sum()),
            **{f"{p}_cost_usd": float(v) for p, v in by_provider.items()},
            "top_models": dg.MetadataValue.md(markdown_table(top)),
        }
    )
