"""The one daily partitioning of the pipeline: UTC days."""

from __future__ import annotations

from datetime import date

import dagster as dg

PARTITIONS_START = "2026-01-01"

daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    """The UTC day of the partition being materialized or checked."""
    return date.fromisoformat(context.partition_key)
