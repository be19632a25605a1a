"""Late data: when an ingestion changes a day, that day's downstream partitions re-run.

Chosen over declarative automation because the ingesters (`llm_interactions`, `cloud_costs`) are
not partitioned but know exactly which days each run changed (`new_rows_by_day` /
`changed_days` in their metadata). The sensor turns each changed day into one run request of the
daily job, keyed by the ingestion's storage id, so a day is refreshed once per ingestion that
changed it — and not at all if its `daily_cost_summary` was re-materialized after that ingestion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from cost_pipeline import environment
from cost_pipeline.defs.partitions import daily_partitions

MAX_EVENTS_PER_TICK = 50
NEW_ROWS_BY_DAY = "new_rows_by_day"
CHANGED_DAYS = "changed_days"
# Ingester asset -> the metadata entry that lists the days it changed.
WATCHED: dict[str, str] = {"llm_interactions": NEW_ROWS_BY_DAY, "cloud_costs": CHANGED_DAYS}
FRESHNESS_ASSET = dg.AssetKey("daily_cost_summary")


def changed_days(metadata: Mapping[str, Any], entry: str) -> list[str]:
    """The days listed in one ingestion's metadata entry (a {day: count} map or a day list)."""
    value = metadata.get(entry)
    data = getattr(value, "value", value)
    if isinstance(data, str):
        data = json.loads(data)
    if isinstance(data, Mapping):
        return sorted(str(day) for day, n in data.items() if int(n) > 0)
    return sorted(str(day) for day in data or [])


def late_data_sensor_for(job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="late_data_sensor",
        job=job,
        minimum_interval_seconds=environment.sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Re-materializes the days that an ingestion of the interaction log or of the FOCUS "
            "exports changed."
        ),
    )
    def late_data_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        touched: dict[str, int] = {}
        for asset, entry in WATCHED.items():
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey(asset), after_storage_id=cursor.get(asset)
                ),
                limit=MAX_EVENTS_PER_TICK,
                ascending=True,
            ).records
            for record in records:
                materialization = record.asset_materialization
                for day in changed_days(materialization.metadata if materialization else {}, entry):
                    touched[day] = max(touched.get(day, 0), record.storage_id)
            if records:
                cursor[asset] = records[-1].storage_id
        valid = set(daily_partitions.get_partition_keys())
        requests = []
        for day, storage_id in sorted(touched.items()):
            if day not in valid:
                if valid and day > max(valid):
                    context.log.info(f"{day} is not over: the hourly refresh and close build it")
                else:
                    context.log.warning(f"ingested data for {day}, outside the daily partitions")
                continue
            latest = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=FRESHNESS_ASSET, asset_partitions=[day]), limit=1
            ).records
            if latest and latest[0].storage_id > storage_id:
                continue  # already re-materialized after this ingestion
            requests.append(dg.RunRequest(partition_key=day, run_key=f"{day}:{storage_id}"))
        new_cursor = json.dumps(cursor, sort_keys=True)
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=new_cursor)
        reason = (
            f"{len(touched)} changed day(s) already up to date"
            if touched
            else "no new ingestion changed a day"
        )
        return dg.SensorResult(skip_reason=reason, cursor=new_cursor)

    return late_data_sensor
