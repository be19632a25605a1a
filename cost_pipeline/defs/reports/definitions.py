"""The reports domain: monthly tenant statements and FOCUS rows as files, statements on demand,
and the weekly and monthly digests delivered through the alert outbox."""

import dagster as dg

from cost_pipeline.defs.partitions import monthly_partitions
from cost_pipeline.defs.reports.assets import tenant_statements
from cost_pipeline.defs.reports.jobs import report_digest_job, statement_job
from cost_pipeline.defs.reports.schedules import monthly_digest_schedule, weekly_digest_schedule

tenant_statements_job = dg.define_asset_job(
    "tenant_statements_job",
    selection=[tenant_statements],
    partitions_def=monthly_partitions,
    description="Write each tenant's statement files for the month.",
)

defs = dg.Definitions(
    assets=[tenant_statements],
    jobs=[tenant_statements_job, statement_job, report_digest_job],
    schedules=[
        weekly_digest_schedule,
        monthly_digest_schedule,
        dg.build_schedule_from_partitioned_job(
            tenant_statements_job,
            name="tenant_statements_schedule",
            day_of_month=4,
            hour_of_day=7,
            minute_of_hour=30,
        ),
    ],
)
