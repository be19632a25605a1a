"""Late data: when an ingestion adds calls to a day, that day's downstream partitions re-run.

Chosen over declarative automation because the ingester is unpartitioned and knows exactly which
days it touched (its `new_rows_by_day` metadata): the sensor turns each touched day into one
run request of the daily job, with a run key that names the ingestion, so a day is refreshed once
per ingestion that changed it — and not at all if it was already re-materialized since.
"""

from __future__ import annotations

import dagster as dg

from cost_pipeline.defs.ingestion.assets import llm_interactions, new_rows_by_day
from cost_pipeline.defs.pricing.assets import priced_interactions

MAX_EVENTS_PER_TICK = 50


def late_interactions_sensor_for(job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name="late_interactions_sensor",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Re-materializes the days an ingestion of the interaction log added calls to.",
    )
    def late_interactions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        result = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=llm_interactions.key, after_storage_id=after),
            limit=MAX_EVENTS_PER_TICK,
            ascending=True,
        )
        if not result.records:
            return dg.SensorResult(skip_reason="no new ingestion of llm_interactions")
        touched: dict[str, int] = {}
        for record in result.records:
            materialization = record.asset_materialization
            metadata = materialization.metadata if materialization else {}
            for day in new_rows_by_day(metadata):
                touched[day] = max(touched.get(day, 0), record.storage_id)
        requests = []
        for day, storage_id in sorted(touched.items()):
            latest = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=priced_interactions.key, asset_partitions=[day]),
                limit=1,
            ).records
            if latest and latest[0].storage_id > storage_id:
                continue  # already re-materialized after this ingestion
            requests.append(dg.RunRequest(partition_key=day, run_key=f"{day}:{storage_id}"))
        cursor = str(result.records[-1].storage_id)
        if not requests:
            return dg.SensorResult(
                skip_reason=f"{len(touched)} touched day(s) already up to date", cursor=cursor
            )
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return late_interactions_sensor
