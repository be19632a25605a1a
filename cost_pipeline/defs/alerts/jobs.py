"""The alert delivery job: record the facts a sensor decided on in the outbox, then drain it.

Sending happens here, in a run, never in a sensor: it is logged, retried on the next tick and,
through the outbox, done once per fact and channel. Routing (`channels` in the configuration)
decides which channels — Slack, email, the signed webhook — get a row for each fact; each
channel is drained on its own, so one that is down does not hold up the others. A row carrying
files (a report digest's chart) sends them too: on Slack into its message's thread, completed
when the message is found again after a failure; by email inline in an HTML part.
"""

# No `from __future__ import annotations`: Dagster reads op annotations at definition time.
import json
from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import ALERT_OUTBOX, BUDGET_NODE_STATUS, BUDGET_STATUS
from cost_pipeline.defs.alerts.delivery import drain
from cost_pipeline.lib.email_html import email_html
from cost_pipeline.lib.messages import email_body, email_subject, webhook_event
from cost_pipeline.lib.outbox import (
    Attachment,
    Outgoing,
    SendError,
    decode_attachments,
    route_alerts,
)
from cost_pipeline.lib.slack_messages import (
    anomaly_alerts,
    budget_alerts,
    channel_for,
    digest_message,
    run_failure_message,
)
from cost_pipeline.resources.email import EmailResource
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.resources.webhook import WebhookResource
from cost_pipeline.store import outbox
from cost_pipeline.store.warehouse import Warehouse


class AlertFactsConfig(dg.Config):
    """What the sensor decided: JSON list of facts ({kind, tenant_id, period, ref, day, ...})."""

    facts_json: str = "[]"


# Facts of `budget_status` rows (see `lib.budgets.alert_facts`).
BUDGET_KINDS = ("budget_threshold", "forecast_breach", "daily_limit")


def _now() -> datetime:
    return datetime.now(UTC)


def _files(wh: Warehouse, keys: list[str]) -> dict[str, tuple[Attachment, ...]]:
    """The files of the outbox rows `keys` that carry any (a report digest's chart)."""
    if not keys:
        return {}
    rows = wh.read(ALERT_OUTBOX, where={"alert_key": keys}, columns=["alert_key", "attachments"])
    pairs = zip(rows["alert_key"], rows["attachments"], strict=True)
    files = {k: decode_attachments(a) for k, a in pairs}
    return {k: f for k, f in files.items() if f}


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
    budget = facts[facts["kind"].isin(BUDGET_KINDS)]
    if not budget.empty:
        days = sorted({date.fromisoformat(d) for d in budget["day"]})
        status = wh.read(
            BUDGET_STATUS, days=days, where={"tenant_id": budget["tenant_id"].unique()}
        )
        # Facts of budget nodes (`team:<id>`, ...) are told from their `budget_node_status` row.
        nodes = wh.read(
            BUDGET_NODE_STATUS, days=days, where={"node_id": budget["tenant_id"].unique()}
        )
        status = pd.concat(
            [status, nodes.rename(columns={"node_id": "tenant_id"})], ignore_index=True
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
    result = outbox.enqueue(wh, route_alerts(alerts, cfg.channels), now=_now())
    context.log.info(
        f"outbox: {len(result.inserted)} new, {len(result.skipped)} already known or stale, "
        f"{len(result.superseded)} superseded"
    )
    return len(result.inserted)


@dg.op(
    description=(
        "Send due `alert_outbox` rows to Slack, email and the webhook (or record them as dry_run)."
    )
)
def send_alerts(
    context: dg.OpExecutionContext,
    enqueued: int,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    slack: SlackResource,
    email: EmailResource,
    webhook: WebhookResource,
) -> dg.Output:
    wh, now = warehouse.get(), _now()

    def to_slack(message: Outgoing) -> str | None:
        ts = slack.post_message(
            channel=message.channel,
            text=message.text,
            blocks=message.blocks,
            metadata=message.metadata,
        )
        if slack.dry_run:
            context.log.info(f"[dry-run] Slack {message.channel}: {message.text}")
        elif message.attachments and ts is not None:
            attach(message.channel, ts, message.attachments, key=message.fact_key, retry=False)
        return ts

    def attach(
        channel: str, ts: str, files: tuple[Attachment, ...], *, key: str, retry: bool
    ) -> None:
        """A message's files follow it into its thread. A transient failure fails the row: the
        next attempt finds the message in the history and uploads only what its thread lacks. A
        permanent one (a missing scope) leaves the message delivered without them."""
        try:
            slack.attach_files(channel=channel, thread_ts=ts, attachments=files, check_thread=retry)
        except SendError as exc:
            if exc.retryable:
                raise
            context.log.warning(f"{key}: delivered without its files: {exc}")

    def find(channel: str, oldest: datetime, keys: list[str]) -> dict[str, str]:
        found = slack.find_sent(channel=channel, oldest=oldest, keys=keys)
        # A message found again may have lost its files with the answer: complete its thread.
        for key, files in _files(wh, list(found)).items():
            attach(channel, found[key], files, key=key, retry=True)
        return found

    def to_email(message: Outgoing) -> str | None:
        subject = email_subject(message.text, message.blocks)
        if email.dry_run:
            context.log.info(f"[dry-run] email to {message.channel}: {subject}")
        html = None
        if message.attachments:
            html = email_html(
                message.text,
                message.blocks,
                images=list(message.attachments),
                fact_key=message.fact_key,
            )
        return email.send(
            to=[a.strip() for a in message.channel.split(",") if a.strip()],
            subject=subject,
            body=email_body(message.text, message.blocks, fact_key=message.fact_key),
            fact_key=message.fact_key,
            html=html,
            inline=message.attachments,
        )

    def to_webhook(message: Outgoing) -> str | None:
        if webhook.dry_run:
            context.log.info(f"[dry-run] webhook {message.fact_key}: {message.text}")
        event = webhook_event(message.facts[0], text=message.text, blocks=message.blocks)
        return webhook.post_event(event=event, event_id=message.fact_key)

    results = {
        "slack": drain(
            wh,
            to_slack,
            now=now,
            dry_run=slack.dry_run,
            digest_after=cost_config.get().alerts.digest_after,
            build_digest=digest_message,
            find=None if slack.dry_run else find,
        ),
        # One message per alert: each has its own Message-ID / event id for the receiver.
        "email": drain(
            wh,
            to_email,
            now=now,
            dry_run=email.dry_run,
            digest_after=0,
            build_digest=None,
            transport="email",
        ),
        "webhook": drain(
            wh,
            to_webhook,
            now=now,
            dry_run=webhook.dry_run,
            digest_after=0,
            build_digest=None,
            transport="webhook",
        ),
    }
    found = sum(len(r.found) for r in results.values())
    failed = sum(len(r.failed) for r in results.values())
    if found:
        context.log.info(
            f"{found} alert(s) were already in Slack from an earlier attempt; "
            "recorded as sent, not posted again"
        )
    if failed:
        context.log.warning(f"{failed} alert(s) not delivered; retried next tick")
    delivered = sum(len(r.sent) for r in results.values())
    return dg.Output(
        delivered,
        metadata={
            "enqueued": enqueued,
            "delivered": delivered,
            "found_already_sent": found,
            "messages": sum(r.messages for r in results.values()),
            "digests": sum(r.digests for r in results.values()),
            "not_delivered": failed,
            "dry_run": slack.dry_run,
            **{f"delivered_{name}": len(r.sent) for name, r in results.items()},
            "dry_run_channels": ", ".join(
                name
                for name, resource in (("slack", slack), ("email", email), ("webhook", webhook))
                if resource.dry_run
            )
            or "none",
        },
    )


@dg.job(
    description=(
        "Record alert facts in the outbox and deliver every due alert once to each channel that "
        "routing names (Slack, email, webhook)."
    ),
    tags={"cost_pipeline/kind": "alerts"},
)
def alert_delivery_job() -> None:
    send_alerts(enqueue_alerts())
