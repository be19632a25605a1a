"""The alert delivery job: record the facts a sensor decided on in the outbox, then drain it.

Sending happens here, in a run, never in a sensor: it is logged, retried on the next tick and,
through the outbox, done once per fact.
"""

# No `from __future__ import annotations`: Dagster reads op annotations at definition time.
import json
from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd

from cost_pipeline.defs.alerts.delivery import drain
from cost_pipeline.lib.budgets import BUDGET_STATUS
from cost_pipeline.lib.slack_messages import (
    anomaly_alerts,
    budget_alerts,
    channel_for,
    digest_message,
    run_failure_message,
)
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import outbox


class AlertFactsConfig(dg.Config):
    """What the sensor decided: JSON list of facts ({kind, tenant_id, period, ref, day, ...})."""

    facts_json: str = "[]"


def _now() -> datetime:
    return datetime.now(UTC)


@dg.op(description="Insert the run's alert facts into `alert_outbox` (new facts only).")
def enqueue_alerts(
    context: dg.OpExecutionContext,
    config: AlertFactsConfig,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> int:
    facts = pd.DataFrame(json.loads(config.facts_json))
    if facts.empty:
        return 0
    wh, cfg = warehouse.get(), cost_config.get()
    frames = []
    budget = facts[facts["kind"].isin(["budget_threshold", "forecast_breach"])]
    if not budget.empty:
        days = sorted({date.fromisoformat(d) for d in budget["day"]})
        status = wh.read(
            BUDGET_STATUS, days=days, where={"tenant_id": budget["tenant_id"].unique()}
        )
        # The latest evaluation of each tenant and period carries the numbers people see.
        status = status.sort_values("day").groupby(["tenant_id", "period"]).tail(1)
        frames.append(budget_alerts(status, budget[["tenant_id", "period", "kind", "ref"]], cfg))
    anomalies = facts[facts["kind"] == "anomaly"]
    if not anomalies.empty:
        frames.append(anomaly_alerts(anomalies, cfg))
    for fact in facts[facts["kind"] == "run_failure"].to_dict("records"):
        text, blocks = run_failure_message(
            job_name=fact["job_name"],
            run_id=fact["ref"],
            error=fact.get("error") or "",
            ui_url=cfg.alerts.dagster_ui_url,
        )
        frames.append(
            pd.DataFrame(
                [
                    {
                        **{k: fact[k] for k in ("tenant_id", "period", "kind", "ref")},
                        "day": fact.get("day"),
                        "channel": channel_for(cfg, fact["tenant_id"]),
                        "text": text,
                        "blocks": json.dumps(blocks),
                    }
                ]
            )
        )
    alerts = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    result = outbox.enqueue(wh, alerts, now=_now())
    context.log.info(
        f"outbox: {len(result.inserted)} new, {len(result.skipped)} already known or stale, "
        f"{len(result.superseded)} superseded"
    )
    return len(result.inserted)


@dg.op(description="Send due `alert_outbox` rows to Slack (or record them as dry_run).")
def send_alerts(
    context: dg.OpExecutionContext,
    enqueued: int,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    slack: SlackResource,
) -> dg.Output:
    def send(channel: str, text: str, blocks: list[dict], metadata: dict) -> str | None:
        ts = slack.post_message(channel=channel, text=text, blocks=blocks, metadata=metadata)
        if slack.dry_run:
            context.log.info(f"[dry-run] Slack {channel}: {text}")
        return ts

    def find(channel: str, oldest: datetime, keys: list[str]) -> dict[str, str]:
        return slack.find_sent(channel=channel, oldest=oldest, keys=keys)

    result = drain(
        warehouse.get(),
        send,
        now=_now(),
        dry_run=slack.dry_run,
        digest_after=cost_config.get().alerts.digest_after,
        build_digest=digest_message,
        find=None if slack.dry_run else find,
    )
    if result.found:
        context.log.info(
            f"{len(result.found)} alert(s) were already in Slack from an earlier attempt; "
            "recorded as sent, not posted again"
        )
    if result.failed:
        context.log.warning(f"{len(result.failed)} alert(s) not delivered; retried next tick")
    return dg.Output(
        len(result.sent),
        metadata={
            "enqueued": enqueued,
            "delivered": len(result.sent),
            "found_already_sent": len(result.found),
            "messages": result.messages,
            "digests": result.digests,
            "not_delivered": len(result.failed),
            "dry_run": slack.dry_run,
        },
    )


@dg.job(
    description="Record alert facts in the outbox and deliver every due alert to Slack, once.",
    tags={"cost_pipeline/kind": "alerts"},
)
def alert_delivery_job() -> None:
    send_alerts(enqueue_alerts())
