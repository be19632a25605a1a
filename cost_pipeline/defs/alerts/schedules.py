"""Schedules: an hourly refresh of today so far and a daily close of yesterday.

Defined as functions of an asset selection so the integrator can pass the whole graph. The daily
close re-pulls D-1..D-3 because providers restate their last days (DESIGN §5, late data).
"""

# No `from __future__ import annotations`: Dagster reads the schedule annotations.
from datetime import timedelta

import dagster as dg

from cost_pipeline.defs.partitions import DAILY_BUILD, daily_partitions

RESTATEMENT_DAYS = 3


def hourly_refresh_schedule(selection: dg.AssetSelection | str) -> dg.ScheduleDefinition:
    """Every hour at :05, rebuild today so far: `selection` is the unpartitioned assets that stand
    for today (`budget_status_today`), since the daily partitions end at yesterday."""
    job = dg.define_asset_job("hourly_refresh_job", selection=selection, tags=DAILY_BUILD)

    @dg.schedule(
        job=job,
        cron_schedule="5 * * * *",
        execution_timezone="UTC",
        name="hourly_refresh_schedule",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(run_key=f"hourly:{context.scheduled_execution_time:%Y-%m-%dT%H}")

    return _schedule


def daily_close_schedule(selection: dg.AssetSelection | str) -> dg.ScheduleDefinition:
    """Every day at 00:30 UTC, re-materialize yesterday and the two days before it."""
    job = dg.define_asset_job(
        "daily_close_job", selection=selection, partitions_def=daily_partitions, tags=DAILY_BUILD
    )

    @dg.schedule(
        job=job, cron_schedule="30 0 * * *", execution_timezone="UTC", name="daily_close_schedule"
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        at = context.scheduled_execution_time
        known = set(daily_partitions.get_partition_keys(current_time=at))
        days = [
            (at - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(1, RESTATEMENT_DAYS + 1)
        ]
        return [
            dg.RunRequest(run_key=f"close:{at:%Y-%m-%d}:{d}", partition_key=d)
            for d in days
            if d in known
        ]

    return _schedule
