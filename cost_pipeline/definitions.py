"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

import dagster as dg

from cost_pipeline import environment
from cost_pipeline.defs.ingestion.assets import llm_interactions, no_quarantined_interactions
from cost_pipeline.defs.ingestion.sensors import late_interactions_sensor_for
from cost_pipeline.defs.partitions import daily_partitions
from cost_pipeline.defs.pricing.assets import model_prices, no_unknown_models, priced_interactions
from cost_pipeline.defs.resources import build_resources
from cost_pipeline.defs.summaries.assets import (
    daily_cost_summary,
    summary_matches_priced_interactions,
)
from cost_pipeline.lib.config import load_config

# Loading the configuration here makes an invalid file fail when the code location loads.
CONFIG = load_config(environment.config_file() or None)

reference_assets = [model_prices, llm_interactions]
daily_assets = [priced_interactions, daily_cost_summary]
checks = [no_quarantined_interactions, no_unknown_models, summary_matches_priced_interactions]

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(*reference_assets),
    description="Refresh the rate card and ingest new interaction-log files.",
)
daily_cost_job = dg.define_asset_job(
    "daily_cost_job",
    selection=dg.AssetSelection.assets(*daily_assets),
    partitions_def=daily_partitions,
    description="Materialize every daily-partitioned asset for one UTC day.",
)

defs = dg.Definitions(
    assets=[*reference_assets, *daily_assets],
    asset_checks=checks,
    jobs=[ingest_job, daily_cost_job],
    sensors=[late_interactions_sensor_for(daily_cost_job)],
    resources=build_resources(CONFIG),
)
