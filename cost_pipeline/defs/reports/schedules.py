"""Schedules of the reports domain: the weekly digest on Mondays, the monthly digest and the
monthly statements on the 4th (after the restatement window of the month's last days)."""

# No `from __future__ import annotations`: Dagster reads the schedule annotations.
import dagster as dg

from cost_pipeline.defs.reports.jobs import report_digest_job
from cost_pipeline.lib.digests import DigestKind, last_complete_period


def _digest_schedule(kind: DigestKind, cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        job=report_digest_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        name=f"{kind}_digest_schedule",
        description=f"The {kind} cost digest of the last complete period, per tenant and company.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        period = last_complete_period(kind, context.scheduled_execution_time.date())
        config = {"kind": kind, "period": period.label}
        return dg.RunRequest(
            run_key=f"{period.alert_kind}:{period.label}",
            run_config={"ops": {"enqueue_digests": {"config": config}}},
            tags={"cost_pipeline/digest": f"{kind}:{period.label}"},
        )

    return _schedule


weekly_digest_schedule = _digest_schedule("weekly", "0 8 * * 1")
monthly_digest_schedule = _digest_schedule("monthly", "0 8 4 * *")
