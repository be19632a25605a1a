"""Sensors that decide which alerts are due and request `alert_delivery_job` runs for them.

They never send: each returns run requests with deterministic run keys (a hash of the facts), so
re-evaluating the same materialization, or restarting the daemon, launches nothing twice; facts
already in `alert_outbox` are dropped before a run is requested.
"""

# No `from __future__ import annotations`: Dagster reads the sensor annotations.
import hashlib
import json
from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd

from cost_pipeline import environment
from cost_pipeline.defs.alerts.jobs import alert_delivery_job
from cost_pipeline.lib import anomaly
from cost_pipeline.lib.anomaly import ANOMALY_SCORES
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.resources.warehouse import WarehouseResource
from cost_pipeline.store import outbox

ALERT_SEVERITIES = ("high", "critical")
PIPELINE = "__pipeline__"


def _run_config(facts: list[dict]) -> dict:
    return {"ops": {"enqueue_alerts": {"config": {"facts_json": json.dumps(facts, default=str)}}}}


def _run_key(prefix: str, facts: pd.DataFrame) -> str:
    keys = sorted(
        outbox.alert_key(*k)
        for k in zip(facts["tenant_id"], facts["period"], facts["kind"], facts["ref"], strict=True)
    )
    return f"{prefix}:{hashlib.sha1('|'.join(keys).encode()).hexdigest()[:16]}"


def _new_materializations(
    context: dg.SensorEvaluationContext, *assets: str, limit: int = 1000
) -> tuple[list, str | None]:
    """Materializations of `assets` after the cursor, oldest first. Storage ids are global to the
    instance, so one cursor serves several assets; when a fetch is cut at `limit`, the others stop
    where it stopped, so nothing between is skipped."""
    after = int(context.cursor) if context.cursor else None
    fetched = [
        context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), after_storage_id=after),
            limit=limit,
            ascending=True,
        ).records
        for asset in assets
    ]
    cut = min((f[-1].storage_id for f in fetched if len(f) >= limit), default=None)
    records = sorted(
        (r for f in fetched for r in f if cut is None or r.storage_id <= cut),
        key=lambda r: r.storage_id,
    )
    cursor = str(records[-1].storage_id) if records else context.cursor
    return records, cursor


def _request(prefix: str, facts: pd.DataFrame, cursor: str | None, what: str) -> dg.SensorResult:
    if facts.empty:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new {what}"), cursor=cursor)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=_run_key(prefix, facts),
                run_config=_run_config(facts.to_dict("records")),
                tags={"cost_pipeline/alerts": str(len(facts))},
            )
        ],
        cursor=cursor,
    )


def _new_facts(warehouse: WarehouseResource, facts: pd.DataFrame) -> pd.DataFrame:
    """One row per fact — its latest day, whose numbers are the freshest — not yet in the outbox."""
    latest = facts.sort_values("day").drop_duplicates(
        ["tenant_id", "period", "kind", "ref"], keep="last"
    )
    return outbox.unseen(warehouse.get(), latest)


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    job=alert_delivery_job,
    minimum_interval_seconds=environment.sensor_interval_seconds(),
    description=(
        "Threshold crossings, forecast breaches and daily limits in new `budget_status` "
        "results (closed days and today so far, `budget_status_today`) and at every node of "
        "the budget hierarchy (`budget_node_status`)."
    ),
)
def budget_alert_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult:
    records, cursor = _new_materializations(
        context, "budget_status", "budget_status_today", "budget_node_status"
    )
    rows = []
    for record in records:
        metadata = record.asset_materialization.metadata
        meta = metadata.get("alert_facts")
        day = record.partition_key or getattr(metadata.get("day"), "value", None)
        # A run over a range of days records every day's facts, each with its own day.
        rows += [{"day": day, **fact} for fact in (meta.value if meta is not None else [])]
    facts = pd.DataFrame(rows, columns=["tenant_id", "period", "kind", "ref", "day"])
    facts = facts.drop_duplicates(["tenant_id", "period", "kind", "ref"])
    return _request("budget", _new_facts(warehouse, facts), cursor, "budget crossings")


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    job=alert_delivery_job,
    minimum_interval_seconds=environment.sensor_interval_seconds(),
    description="High and critical rows in new `anomaly_scores` materializations.",
)
def anomaly_alert_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult:
    records, cursor = _new_materializations(context, "anomaly_scores")
    days = sorted({date.fromisoformat(r.partition_key) for r in records if r.partition_key})
    scores = warehouse.get().read(
        ANOMALY_SCORES, days=days, where={"severity": ["high", "critical"]}
    )
    scores = scores[scores["tenant_id"] != COMPANY]
    start = scores["since_day"].where(scores["since_day"].notna(), scores["day"]).astype(str)
    # One incident, one message: of a tenant's drivers flagged from the same start, the most
    # specific of the large ones speaks for the episode (its reason names the driver).
    scores = anomaly.episode_speakers(scores.assign(_start=start), ["tenant_id", "_start"])
    facts = scores.assign(
        period=scores["_start"].str[:7], kind="anomaly", ref="incident@" + scores["_start"]
    ).drop(columns=["_start"])
    return _request("anomaly", _new_facts(warehouse, facts), cursor, "high or critical anomalies")


@dg.sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    job=alert_delivery_job,
    minimum_interval_seconds=environment.sensor_interval_seconds(),
    description=(
        "Retries alerts whose send failed once their backoff is over, and alerts left in "
        "`sending` by a run that died, once their lease is over."
    ),
)
def alert_outbox_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult | dg.SkipReason:
    due, fingerprint = outbox.due_fingerprint(warehouse.get(), now=datetime.now(UTC))
    if not due:
        return dg.SkipReason("no alert is due (pending past backoff, or sending past its lease)")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"drain:{fingerprint}", run_config=_run_config([]))]
    )


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    request_job=alert_delivery_job,
    minimum_interval_seconds=environment.sensor_interval_seconds(),
    description="Alerts the default channel when a run of the pipeline fails.",
)
def pipeline_failure_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    if run.job_name == alert_delivery_job.name:
        # The alert job reporting its own failure through itself would loop.
        return dg.SkipReason("the alert job's own failure is not alerted through itself")
    fact = {
        "tenant_id": PIPELINE,
        "period": datetime.now(UTC).strftime("%Y-%m"),
        "kind": "run_failure",
        "ref": run.run_id,
        "job_name": run.job_name,
        "error": context.failure_event.message or "",
    }
    return dg.RunRequest(run_key=f"run_failure:{run.run_id}", run_config=_run_config([fact]))
