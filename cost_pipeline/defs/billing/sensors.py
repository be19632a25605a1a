"""The billing sensor: a new `overage_charges` state, or a release of a held tenant-period,
requests one billing run, never two."""

from __future__ import annotations

import json

import dagster as dg

from cost_pipeline import environment
from cost_pipeline.defs.billing.assets import overage_charges
from cost_pipeline.defs.billing.jobs import billing_release_job, billing_run_job


def _latest_release(context: dg.SensorEvaluationContext) -> str | None:
    """Run id of the latest successful `billing_release_job`: a release is sent by a new run."""
    records = context.instance.get_run_records(
        dg.RunsFilter(job_name=billing_release_job.name, statuses=[dg.DagsterRunStatus.SUCCESS]),
        limit=1,
    )
    return records[0].dagster_run.run_id if records else None


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    job=billing_run_job,
    minimum_interval_seconds=environment.sensor_interval_seconds(),
    description=(
        "Requests a billing run when `overage_charges` is materialized with amounts that differ "
        "from the last run requested (run_key = billing:<materialization storage id>), or when "
        "billing_release_job released a held period (run_key = billing:release:<run id>)."
    ),
)
def billing_run_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    cursor = json.loads(context.cursor) if context.cursor else {}
    release = _latest_release(context)
    if release is not None and release != cursor.get("release"):
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"billing:release:{release}")],
            cursor=json.dumps({**cursor, "release": release}),
        )
    records = context.instance.fetch_materializations(overage_charges.key, limit=1).records
    if not records:
        return dg.SkipReason("overage_charges has never been materialized")
    latest = records[0]
    if latest.storage_id <= cursor.get("storage_id", -1):
        return dg.SkipReason(f"no materialization after storage id {cursor['storage_id']}")
    materialization = latest.asset_materialization
    entry = materialization.metadata.get("charges_fingerprint") if materialization else None
    fingerprint = str(entry.value) if entry is not None else str(latest.storage_id)
    new_cursor = json.dumps({**cursor, "storage_id": latest.storage_id, "fingerprint": fingerprint})
    if fingerprint == cursor.get("fingerprint"):
        # Same amounts as the last billing run requested: nothing new to report.
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"overage amounts unchanged ({fingerprint})"),
            cursor=new_cursor,
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"billing:{latest.storage_id}",
                tags={"cost_pipeline/charges_fingerprint": fingerprint},
            )
        ],
        cursor=new_cursor,
    )
