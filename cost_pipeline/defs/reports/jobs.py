"""Jobs of the reports domain: digests into the alert outbox (then delivered), and statements
and FOCUS exports on demand for any range of days.

A digest is a fact of the outbox like any alert — one row per channel, unique per tenant and
ISO week or month — so it is sent once per channel whatever runs it: `report_digest_job` records
the period's digests not yet recorded and drains the outbox (`send_alerts`), and a failed send
is retried by `alert_outbox_sensor` like any other row.
"""

# No `from __future__ import annotations`: Dagster reads op annotations at definition time.
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
from pydantic import Field

from cost_pipeline.catalog import BUDGET_STATUS, DAILY_COST_SUMMARY
from cost_pipeline.defs.alerts.jobs import send_alerts
from cost_pipeline.defs.reports.assets import cloud_costs, write_statements
from cost_pipeline.lib.anomaly import ANOMALY_SCORES
from cost_pipeline.lib.digests import (
    KINDS,
    build_digests,
    digest_rows,
    last_complete_period,
    parse_period,
)
from cost_pipeline.lib.focus_export import (
    FOCUS_VERSION,
    focus_csv,
    ledger_to_focus_range,
    validate_focus,
)
from cost_pipeline.lib.forecasting import COST_FORECASTS
from cost_pipeline.lib.outbox import route_alerts
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import outbox
from cost_pipeline.store.reports import read_optional

SUMMARY_COLUMNS = ["day", "tenant_id", "cost_category", "provider", "model_or_service", "cost_usd"]
# How long after a period's end its budget status and forecast are still read (a monthly
# digest on the 4th shows the new month's forecast as of the 3rd).
AS_OF_DAYS = 7


class DigestConfig(dg.Config):
    """Which digests: `kind` weekly or monthly; `period` `2026-W41` / `2026-10` (empty: the
    last complete one before today, UTC); `tenant_ids` empty: every tenant and the company."""

    kind: str = "weekly"
    period: str = ""
    tenant_ids: list[str] = Field(default_factory=list)


class StatementRangeConfig(dg.Config):
    """A range of UTC days `start..end` (ISO dates, inclusive) and the tenants (empty: all)."""

    start: str
    end: str
    tenant_ids: list[str] = Field(default_factory=list)


def _today() -> date:
    return datetime.now(UTC).date()


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dg.op(description="Record the period's weekly or monthly digests in `alert_outbox` (new only).")
def enqueue_digests(
    context: dg.OpExecutionContext,
    config: DigestConfig,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> int:
    if config.kind not in KINDS:
        raise dg.Failure(f"digest kind {config.kind!r}: expected one of {', '.join(KINDS)}")
    try:
        period = (
            parse_period(config.kind, config.period)
            if config.period
            else last_complete_period(config.kind, _today())
        )
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None
    wh, cfg = warehouse.get(), cost_config.get()
    known = {t.id for t in cfg.tenants} | {COMPANY}
    unknown = sorted(set(config.tenant_ids) - known)
    if unknown:
        raise dg.Failure(f"unknown tenant(s) {', '.join(unknown)} (known: {sorted(known)})")
    targets = pd.DataFrame({"tenant_id": config.tenant_ids or sorted(known)}).assign(
        period=period.label, kind=period.alert_kind, ref=period.label
    )
    # Only what the outbox does not know yet is built (charts cost time); a re-run adds nothing.
    fresh = outbox.unseen(wh, targets)["tenant_id"].tolist()
    if not fresh:
        context.log.info(f"every {period.alert_kind} of {period.label} is already recorded")
        return 0
    as_of = max(period.end, min(period.end + timedelta(days=AS_OF_DAYS), _today() - timedelta(1)))
    previous = period.previous()
    late = _days(period.end, as_of)
    digests = build_digests(
        wh.read(
            DAILY_COST_SUMMARY, days=_days(previous.start, period.end), columns=SUMMARY_COLUMNS
        ),
        budget_status=wh.read(BUDGET_STATUS, days=late, where={"tenant_id": fresh}),
        forecasts=wh.read(COST_FORECASTS, days=late, where={"tenant_id": fresh}),
        anomalies=wh.read(ANOMALY_SCORES, days=period.days),
        recommendations=read_optional(wh, "cost_recommendations"),
        config=cfg,
        period=period,
        as_of=as_of,
        tenant_ids=fresh,
    )
    rows = digest_rows(digests, cfg)
    result = outbox.enqueue(wh, route_alerts(rows, cfg.channels), now=datetime.now(UTC))
    context.log.info(
        f"{period.alert_kind} {period.label}: {len(result.inserted)} outbox row(s) for "
        f"{len(digests)} digest(s); {len(result.skipped)} already recorded"
    )
    return len(result.inserted)


@dg.job(
    description=(
        "Record the weekly or monthly cost digests (per tenant and for the company, each with "
        "its chart) in the alert outbox and deliver them once to each routed channel."
    ),
    tags={"cost_pipeline/kind": "reports"},
)
def report_digest_job() -> None:
    send_alerts(enqueue_digests())


@dg.op(
    description=(
        "Write each tenant's statement (CSV, XLSX, HTML) and FOCUS rows for a range of days, "
        "and the range's FOCUS 1.2 export of those tenants."
    )
)
def write_range_statements(
    context: dg.OpExecutionContext,
    config: StatementRangeConfig,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.Output:
    try:
        start, end = date.fromisoformat(config.start), date.fromisoformat(config.end)
    except ValueError as exc:
        raise dg.Failure(f"start / end: {exc} (expected ISO dates, e.g. 2026-10-01)") from None
    if end < start:
        raise dg.Failure(f"end {end} is before start {start}")
    cfg = cost_config.get()
    unknown = sorted(set(config.tenant_ids) - set(cfg.tenants_by_id))
    if unknown:
        raise dg.Failure(f"unknown tenant(s) {', '.join(unknown)}")
    wh = warehouse.get()
    folder, bundles, summary = write_statements(
        wh, cfg, start, end, tenant_ids=config.tenant_ids or None
    )
    cloud = cloud_costs(wh, summary)
    focus = ledger_to_focus_range(
        summary,
        config=cfg,
        start=start,
        end=end,
        cloud_costs=cloud,
        tenant_ids=config.tenant_ids or None,
    )
    suffix = f"_{'-'.join(sorted(config.tenant_ids))}" if config.tenant_ids else ""
    export = folder.write(
        f"exports/focus-{FOCUS_VERSION}_{start}_{end}{suffix}.csv", focus_csv(focus)
    )
    problems = validate_focus(focus) if len(focus) else []
    for problem in problems:
        context.log.warning(f"FOCUS export {export}: {problem}")
    return dg.Output(
        len(bundles),
        metadata={
            "tenants": len(bundles),
            "total_usd": float(sum(b.statement.total for b in bundles)),
            "folder": folder.path(f"statements/{bundles[0].statement.label}")
            if bundles
            else folder.url,
            "focus_export": export,
            "focus_rows": len(focus),
            "focus_problems": len(problems),
        },
    )


@dg.job(
    description=(
        "On demand: statements and the FOCUS export for a range of days and some tenants "
        "(run config: `ops.write_range_statements.config` start, end, tenant_ids)."
    ),
    tags={"cost_pipeline/kind": "reports"},
)
def statement_job() -> None:
    write_range_statements()
