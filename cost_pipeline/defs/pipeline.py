"""The jobs, schedules and sensors that run the whole ledger across domains.

`ingest_job` picks up new files; `daily_cost_job` builds every daily-partitioned asset for a day
(or, in a backfill, a range of days in one run); the schedules refresh today so far hourly (an
unpartitioned stand-in: the daily partitions end at yesterday) and close the last days daily;
the late-data sensor rebuilds the days an ingestion changed.
"""

import dagster as dg

from cost_pipeline.defs.alerts.schedules import daily_close_schedule, hourly_refresh_schedule
from cost_pipeline.defs.ingestion.sensors import late_data_sensor_for
from cost_pipeline.defs.partitions import DAILY_BUILD, INGEST, daily_partitions

# Reference data and incremental file ingesters: not partitioned.
INGEST_ASSETS = ("config_audit", "model_prices", "fx_rates", "llm_interactions", "cloud_costs")
# Everything that is computed per UTC day, in dependency order.
DAILY_ASSETS = (
    "priced_interactions",
    "openai_usage",
    "anthropic_usage",
    "provider_reported_costs",
    "provider_usage_priced",
    "llm_cost_reconciliation",
    "llm_line_item_reconciliation",
    "k8s_allocations",
    "infra_cost_allocation",
    "daily_cost_summary",
    "workflow_runs",
    "end_user_costs",
    "agent_costs",
    "cost_forecasts",
    "anomaly_scores",
    "budget_status",
    "budget_node_status",
    "tenant_enforcement",
    "overage_charges",
    "tenant_unit_economics",
    "agent_unit_economics",
    "cost_recommendations",
)

# Today so far: the daily partitions end at yesterday; these stand in for today until it closes.
TODAY_ASSETS = ("budget_status_today",)

daily_selection = dg.AssetSelection.assets(*DAILY_ASSETS)
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(*INGEST_ASSETS),
    description="Refresh the rate card and ingest new interaction-log and FOCUS files.",
    tags=INGEST,
)
daily_cost_job = dg.define_asset_job(
    "daily_cost_job",
    selection=daily_selection,
    partitions_def=daily_partitions,
    description="Materialize every daily-partitioned asset for one UTC day (or a range).",
    tags=DAILY_BUILD,
)

defs = dg.Definitions(
    jobs=[ingest_job, daily_cost_job],
    schedules=[
        dg.ScheduleDefinition(
            name="ingest_schedule",
            job=ingest_job,
            cron_schedule="*/15 * * * *",
            description="Pick up new interaction-log and FOCUS files every 15 minutes.",
        ),
        hourly_refresh_schedule(dg.AssetSelection.assets(*TODAY_ASSETS)),
        daily_close_schedule(daily_selection),
    ],
    sensors=[late_data_sensor_for(daily_cost_job)],
)
