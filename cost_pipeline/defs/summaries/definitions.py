"""The summaries domain: the daily cost summary and the reconciliation with the providers."""

import dagster as dg

from cost_pipeline.defs.summaries.assets import (
    daily_cost_summary,
    quarantine_by_source,
    summary_matches_priced_interactions,
)
from cost_pipeline.defs.summaries.line_items import (
    line_items_match_provider_costs,
    llm_line_item_reconciliation,
)
from cost_pipeline.defs.summaries.reconciliation import (
    app_log_matches_provider_usage,
    llm_cost_reconciliation,
    provider_reported_costs_match_usage,
)

defs = dg.Definitions(
    assets=[daily_cost_summary, llm_cost_reconciliation, llm_line_item_reconciliation],
    asset_checks=[
        summary_matches_priced_interactions,
        quarantine_by_source,
        app_log_matches_provider_usage,
        provider_reported_costs_match_usage,
        line_items_match_provider_costs,
    ],
)
