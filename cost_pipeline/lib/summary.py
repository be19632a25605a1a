"""The daily cost summary: every cost of a day, per tenant, category, provider, model and agent."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from cost_pipeline.catalog import DAILY_COST_SUMMARY


def llm_summary_rows(aggregated: pd.DataFrame) -> pd.DataFrame:
    """Summary rows of category `llm` from the grouped priced interactions of a day."""
    out = aggregated.assign(cost_category="llm")
    return DAILY_COST_SUMMARY.conform(out)


def assemble_summary(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """One conformed summary frame from the parts of each category, in a stable order."""
    frames = [DAILY_COST_SUMMARY.conform(p) for p in parts if p is not None and len(p)]
    if not frames:
        return DAILY_COST_SUMMARY.empty_frame()
    out = pd.concat(frames, ignore_index=True)
    order = ["day", "tenant_id", "cost_category", "provider", "model_or_service", "agent_id"]
    return out.sort_values(order, na_position="first", kind="stable").reset_index(drop=True)


def top_tenants(summary: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """Tenants by total cost of the day, with the cost per category as columns."""
    if summary.empty:
        return pd.DataFrame(columns=["tenant_id", "total_usd"])
    pivot = summary.pivot_table(
        index="tenant_id", columns="cost_category", values="cost_usd", aggfunc="sum", fill_value=0
    )
    pivot["total_usd"] = pivot.sum(axis=1)
    return pivot.sort_values("total_usd", ascending=False).head(n).reset_index()
