"""`cost_recommendations`: each day, the last `recommendations.window_days` of actual calls
re-priced under cheaper options, with the monthly saving, its evidence and a status tracked
from the previous day.

How the calls are re-priced is told in `lib.repricing`; figures, confidence and status in
`lib.recommendations`.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from cost_pipeline.defs.partitions import SINGLE_RUN, daily_partitions, merge_days, partition_days
from cost_pipeline.lib import recommendations as rec
from cost_pipeline.lib import repricing
from cost_pipeline.lib.config import Recommendations
from cost_pipeline.lib.pricing import PricingEngine
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import recommendations as store
from cost_pipeline.store.warehouse import Warehouse

# Upstream by key: its module belongs to another domain and imports heavier code.
priced_interactions = dg.AssetKey("priced_interactions")

TOP_COLUMNS = [
    "tenant_id",
    "agent_id",
    "model",
    "kind",
    "option",
    "status",
    "current_monthly_usd",
    "projected_monthly_usd",
    "saving_monthly_usd",
    "confidence",
    "evidence_calls",
]


def _day_evidence(
    wh: Warehouse, day: date, settings: Recommendations, engine: PricingEngine
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One day's calls read in chunks and reduced to their evidence and usage."""
    evidence, usage = [], []
    for chunk in store.day_calls(wh, day, repricing.CALL_COLUMNS):
        e, u = repricing.day_evidence(chunk, settings, engine)
        evidence.append(e)
        usage.append(u)
    if len(evidence) == 1:  # one chunk (the usual day): already summed per key
        return evidence[0], usage[0]
    return (
        repricing.combine(evidence, repricing.EVIDENCE_COLUMNS),
        repricing.combine(usage, repricing.USAGE_COLUMNS),
    )


def _metadata(rows: pd.DataFrame, window_unpriced: int, covered: int) -> dict:
    active = rows[rows["status"].isin(rec.ACTIVE)]
    by_kind = active.groupby("kind")["saving_monthly_usd"].sum()
    return {
        "rows": len(rows),
        **{
            f"{status}_recommendations": int((rows["status"] == status).sum())
            for status in rec.STATUSES
        },
        # Options on the same calls overlap: the best one per agent and model, not their sum.
        "saving_monthly_usd": round(rec.best_saving(rows), 2),
        **{
            f"saving_monthly_usd_{kind}": round(float(by_kind.get(kind, 0.0)), 2)
            for kind in repricing.KINDS
        },
        "covered_days": covered,
        # Calls of the window the ledger could not price: in no figure, never counted as $0.
        "window_unpriced_calls": window_unpriced,
        "top_recommendations": dg.MetadataValue.md(
            markdown_table(active[TOP_COLUMNS], max_rows=15)
        ),
    }


@dg.asset(
    group_name="recommendations",
    kinds={"python", "sql"},
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    deps=[priced_interactions],
    description=(
        "Per UTC day: the last window_days of each tenant's actual calls re-priced by the "
        "pricing engine under a cheaper allowed model (calls that fit its context window), "
        "prompt caching, batch or flex for deferrable agents, and staying under long-context "
        "price tiers; the monthly saving with confidence, assumptions and evidence, and a "
        "status (new / open / applied / gone) tracked from the previous day. Unpriced calls "
        "are excluded and counted."
    ),
)
def cost_recommendations(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh, config = warehouse.get(), cost_config.get()
    settings = config.recommendations
    engine = PricingEngine.for_config(config)
    days = partition_days(context)
    # Each day of the run's windows is read and re-priced once, however many windows hold it.
    evidence: dict[date, pd.DataFrame] = {}
    usage: dict[date, pd.DataFrame] = {}
    previous = store.on_day(wh, days[0] - timedelta(days=1))
    results = []
    for day in days:
        window = rec.window_days(day, settings)
        for d in window:
            if d not in evidence:
                evidence[d], usage[d] = _day_evidence(wh, d, settings, engine)
        covered = rec.covered_days(day, {d for d in window if len(usage[d])}, settings)
        rows = rec.recommend(
            pd.concat([evidence[d] for d in window], ignore_index=True),
            usage[day],
            previous,
            day=day,
            covered=covered,
            settings=settings,
        )
        store.replace_day(wh, day, rows)
        results.append(
            dg.MaterializeResult(
                metadata=_metadata(
                    rows, sum(int(usage[d]["unpriced_calls"].sum()) for d in window), covered
                )
            )
        )
        previous = rows
        # No later window holds the window's first day.
        del evidence[window[0]], usage[window[0]]
    context.log.info(
        f"{len(days)} day(s) of recommendations from "
        f"{len(days) + settings.window_days - 1} day(s) of calls"
    )
    return merge_days(days, results)
