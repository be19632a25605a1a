"""The ingestion domain: the app's call log and the providers' usage and cost reports."""

import dagster as dg

from cost_pipeline.defs.ingestion.assets import llm_interactions, no_quarantined_interactions
from cost_pipeline.defs.ingestion.provider_assets import (
    anthropic_usage,
    openai_usage,
    provider_reported_costs,
)

defs = dg.Definitions(
    assets=[llm_interactions, openai_usage, anthropic_usage, provider_reported_costs],
    asset_checks=[no_quarantined_interactions],
)
