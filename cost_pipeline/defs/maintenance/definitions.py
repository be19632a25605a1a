"""The maintenance domain: retention, daily."""

import dagster as dg

from cost_pipeline.defs.maintenance.assets import retention_log

retention_job = dg.define_asset_job(
    "retention_job",
    selection=[retention_log],
    description="Drop the days past each table's retention, once summarized (`retention.days`).",
)

defs = dg.Definitions(
    assets=[retention_log],
    jobs=[retention_job],
    schedules=[
        dg.ScheduleDefinition(
            name="retention_schedule",
            job=retention_job,
            cron_schedule="15 3 * * *",
            execution_timezone="UTC",
            description="Drop days past their retention, after the daily close summarized them.",
        )
    ],
)
