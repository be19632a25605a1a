"""The pricing domain: the rate card, every call priced, provider usage priced alike."""

import dagster as dg

from cost_pipeline.defs.pricing.assets import (
    event_ids_unique_per_day,
    model_prices,
    no_unknown_models,
    priced_interactions,
    spend_counters_match_calls,
)
from cost_pipeline.defs.pricing.provider_assets import provider_usage_priced

defs = dg.Definitions(
    assets=[model_prices, priced_interactions, provider_usage_priced],
    asset_checks=[no_unknown_models, event_ids_unique_per_day, spend_counters_match_calls],
)
