"""The one daily partitioning of the pipeline: UTC days."""

from __future__ import annotations

from datetime import date

import dagster as dg

PARTITIONS_START = "2026-01-01"

# end_offset=1: today is a partition too, refreshed hourly while the day is still running.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START, timezone="UTC", end_offset=1
)


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    """The UTC day of the partition being materialized or checked."""
    return date.fromisoformat(context.partition_key)


# Calendar months (UTC) for month-level outputs: the FOCUS export and the billing close.
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
