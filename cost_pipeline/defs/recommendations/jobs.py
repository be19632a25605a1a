"""The weekly Slack digest of the top cost recommendations, sent once per ISO week.

The job records the week's digest as ONE `alert_outbox` row (kind `recommendations_digest`,
fact key `__company__:<week>:recommendations_digest:<week>`), then runs the alerts domain's own
`send_alerts` op: the digest is delivered by the same outbox drain as every alert, so a re-run,
a retry or a second schedule tick of the same week sends nothing more.
"""

# No `from __future__ import annotations`: Dagster reads op annotations at definition time.
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from cost_pipeline.defs.alerts.jobs import send_alerts
from cost_pipeline.lib import recommendation_digest as digest
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.lib.recommendations import ACTIVE
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import outbox
from cost_pipeline.store import recommendations as store


class DigestConfig(dg.Config):
    """The ISO week the digest is for, e.g. `2026-W41` (empty: the current UTC week)."""

    week: str = ""


def _now() -> datetime:
    return datetime.now(UTC)


def _monday(week: str) -> date:
    year, _, number = week.partition("-W")
    try:
        return date.fromisocalendar(int(year), int(number), 1)
    except ValueError as exc:
        raise ValueError(f"week {week!r} is not an ISO week like 2026-W41") from exc


@dg.op(
    description=(
        "Insert the week's digest of the top open cost recommendations into `alert_outbox` "
        "(once per ISO week)."
    )
)
def enqueue_recommendations_digest(
    context: dg.OpExecutionContext,
    config: DigestConfig,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> int:
    wh, cfg, now = warehouse.get(), cost_config.get(), _now()
    week = config.week or digest.iso_week(now.date())
    monday = _monday(week)
    # The latest recommendations the week knows: built by its Monday morning, the previous
    # week's last day; a digest asked mid-week takes the latest complete day.
    last = min(monday + timedelta(days=6), now.date() - timedelta(days=1))
    day = store.latest_day(wh, first=monday - timedelta(days=7), last=last)
    if day is None:
        context.log.info(f"no cost recommendations between {monday - timedelta(days=7)} and {last}")
        return 0
    rows = store.on_day(wh, day)
    if not rows["status"].isin(ACTIVE).any():
        context.log.info(f"nothing to recommend on {day}: no digest for {week}")
        return 0
    if "slack" not in cfg.channels.channels_for(COMPANY, digest.DIGEST_KIND):
        context.log.info(f"routing sends no {digest.DIGEST_KIND} to Slack: no digest for {week}")
        return 0
    row = digest.digest_outbox_row(
        rows,
        week=week,
        tenant_id=COMPANY,
        channel=cfg.alerts.default_channel,
        tenant_names={t.id: t.name for t in cfg.tenants},
        ui_url=cfg.alerts.dagster_ui_url,
        top=cfg.recommendations.digest_top,
    )
    result = outbox.enqueue(wh, row, now=now)
    context.log.info(
        f"digest of {day} for {week}: "
        + ("enqueued" if result.inserted else "already in the outbox, not enqueued again")
    )
    return len(result.inserted)


@dg.job(
    description=(
        "Record the week's digest of the top cost recommendations in the outbox and deliver "
        "every due alert (the digest once per ISO week)."
    ),
    tags={"cost_pipeline/kind": "alerts"},
)
def recommendations_digest_job() -> None:
    send_alerts(enqueue_recommendations_digest())


@dg.schedule(
    job=recommendations_digest_job,
    cron_schedule="0 9 * * 1",
    execution_timezone="UTC",
    name="recommendations_digest_schedule",
    description="Every Monday at 09:00 UTC, the week's digest of the top cost recommendations.",
)
def recommendations_digest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    week = digest.iso_week(context.scheduled_execution_time.date())
    return dg.RunRequest(
        run_key=f"recommendations_digest:{week}",
        run_config={"ops": {"enqueue_recommendations_digest": {"config": {"week": week}}}},
    )
