"""The billing run: resend what is unconfirmed, cancel what is in excess, report new overage.

The state machine is described in `lib.billing_ledger`; every row is written under the ledger
lock before its Stripe call and its outcome recorded after, through `store.billing`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from cost_pipeline.lib.billing_ledger import (
    CANCEL_INTENDED,
    CANCELLED,
    CREDIT_RESOLVED,
    DRY_RUN,
    FAILED,
    INTENDED,
    LOCK_KEY,
    PENDING_CREDIT,
    SENT,
    UNCONFIRMED,
    BillingRunSummary,
    MeterEventSender,
    SendOutcome,
    diff_against,
    plan_credits,
    plan_events,
    select_cancellations,
)
from cost_pipeline.store.billing import closed_keys, read_ledger, record_row, upsert_rows
from cost_pipeline.store.warehouse import Warehouse


def report_overage(
    warehouse: Warehouse,
    charges: pd.DataFrame,
    sender: MeterEventSender,
    *,
    now: datetime | None = None,
) -> BillingRunSummary:
    """Bring Stripe (or, in dry-run, the ledger) to exactly `charges` for every open period."""
    now = now or datetime.now(UTC)
    mode = "live" if sender.live else "dry_run"
    summary = BillingRunSummary()
    closed = closed_keys(warehouse)
    keys = list(zip(charges["tenant_id"], charges["period"], strict=True))
    charges = charges[[k not in closed for k in keys]].reset_index(drop=True)

    _resend_unconfirmed(warehouse, sender, mode, summary, now)
    _cancel_excess(warehouse, charges, sender, mode, summary, now)

    with warehouse.transaction(LOCK_KEY) as conn:
        ledger = read_ledger(warehouse, conn)
        diff = diff_against(ledger, charges, mode)
        intents = plan_events(ledger, diff[diff["diff_cents"] > 0], sender, mode, now)
        credits, superseded = plan_credits(ledger, diff, mode, now)
        upsert_rows(warehouse, conn, pd.concat([intents, credits, superseded], ignore_index=True))
    summary.new_pending_credits = credits

    for _, row in intents[intents["status"].isin([INTENDED])].iterrows():
        _send(warehouse, sender, row, summary, now)
    for _, row in intents[intents["status"].eq(DRY_RUN)].iterrows():
        summary.record(row, SendOutcome("dry_run"), "event")
    for _, row in intents[intents["status"].eq(FAILED)].iterrows():
        summary.record(row, SendOutcome("failed", row["last_error"]), "event")
    return summary


def _resend_unconfirmed(
    warehouse: Warehouse,
    sender: MeterEventSender,
    mode: str,
    summary: BillingRunSummary,
    now: datetime,
) -> None:
    ledger = read_ledger(warehouse)
    ledger = ledger[ledger["mode"].eq(mode) & ledger["kind"].eq("meter_event")]
    for _, row in ledger[ledger["status"].isin(UNCONFIRMED)].iterrows():
        if pd.isna(row["stripe_customer_id"]) or pd.isna(row["event_timestamp"]):
            continue  # cannot be sent as recorded; the close check reports it
        _send(warehouse, sender, row, summary, now)
    for _, row in ledger[ledger["status"].eq(CANCEL_INTENDED)].iterrows():
        _cancel(warehouse, sender, row, summary, now)


def _cancel_excess(
    warehouse: Warehouse,
    charges: pd.DataFrame,
    sender: MeterEventSender,
    mode: str,
    summary: BillingRunSummary,
    now: datetime,
) -> None:
    if mode != "live":
        return  # a dry run shows the excess as a pending credit; nothing to adjust in Stripe
    with warehouse.transaction(LOCK_KEY) as conn:
        ledger = read_ledger(warehouse, conn)
        diff = diff_against(ledger, charges, mode)
        chosen = select_cancellations(ledger, diff[diff["diff_cents"] < 0], now=now)
        chosen = chosen.assign(status=CANCEL_INTENDED, updated_at=now)
        upsert_rows(warehouse, conn, chosen)
    for _, row in chosen.iterrows():
        _cancel(warehouse, sender, row, summary, now)


def _send(
    warehouse: Warehouse,
    sender: MeterEventSender,
    row: pd.Series,
    summary: BillingRunSummary,
    now: datetime,
) -> None:
    ts = pd.Timestamp(row["event_timestamp"])
    outcome = sender.send_meter_event(
        identifier=row["identifier"],
        customer=row["stripe_customer_id"],
        value=int(row["value_cents"]),
        timestamp=int(ts.timestamp()),
    )
    status = {"sent": SENT, "failed": FAILED, "unconfirmed": INTENDED, "dry_run": DRY_RUN}
    record_row(
        warehouse,
        row,
        status=status[outcome.status],
        attempts=int(row["attempts"]) + 1,
        last_error=outcome.error,
        updated_at=now,
    )
    summary.record(row, outcome, "event")


def _cancel(
    warehouse: Warehouse,
    sender: MeterEventSender,
    row: pd.Series,
    summary: BillingRunSummary,
    now: datetime,
) -> None:
    outcome = sender.cancel_meter_event(identifier=row["identifier"])
    # Refused (too late): the event stands and its amount becomes a pending credit.
    status = {"sent": CANCELLED, "failed": SENT, "unconfirmed": CANCEL_INTENDED}
    record_row(
        warehouse,
        row,
        status=status.get(outcome.status, CANCELLED),
        attempts=int(row["attempts"]) + 1,
        last_error=outcome.error,
        updated_at=now,
    )
    summary.record(row, outcome, "cancel")


def resolve_pending_credit(
    warehouse: Warehouse, identifier: str, *, now: datetime | None = None, note: str = ""
) -> None:
    """Record that a person settled a pending credit (e.g. a credit note issued in Stripe)."""
    with warehouse.transaction(LOCK_KEY) as conn:
        ledger = read_ledger(warehouse, conn)
        row = ledger[ledger["identifier"].eq(identifier) & ledger["status"].eq(PENDING_CREDIT)]
        if row.empty:
            raise ValueError(f"billing_ledger has no pending credit {identifier!r}")
        changed = row.assign(
            status=CREDIT_RESOLVED, last_error=note or None, updated_at=now or datetime.now(UTC)
        )
        upsert_rows(warehouse, conn, changed)
