"""The billing run: resend or confirm what is unconfirmed, cancel excess, report new overage,
hold what cannot be right (above the ceiling, unpriced usage) until a person releases it.

The state machine is described in `lib.billing_ledger`; every row is written under the ledger
lock before its Stripe call and its outcome recorded after, through `store.billing`.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import pandas as pd

from cost_pipeline.lib.billing_ledger import (
    CANCEL_INTENDED,
    CANCELLED,
    CONFIRM_AFTER,
    CREDIT_RESOLVED,
    DEFAULT_CEILING_CENTS,
    DRY_RUN,
    FAILED,
    HELD,
    HOLD,
    INTENDED,
    LOCK_KEY,
    PENDING_CREDIT,
    SENT,
    UNCONFIRMED,
    BillingRunSummary,
    MeterEventSender,
    SendOutcome,
    approved_cents,
    confirm_in_window,
    diff_against,
    fresh_idempotency_key,
    hold_reasons,
    needs_confirmation,
    plan_credits,
    plan_events,
    plan_holds,
    release_holds,
    select_cancellations,
    summary_window,
    window_peers,
)
from cost_pipeline.store.billing import closed_keys, read_ledger, record_row, upsert_rows
from cost_pipeline.store.spend import unpriced_periods
from cost_pipeline.store.warehouse import Warehouse


def report_overage(
    warehouse: Warehouse,
    charges: pd.DataFrame,
    sender: MeterEventSender,
    *,
    now: datetime | None = None,
    confirm_after: timedelta = CONFIRM_AFTER,
    ceiling_cents: int = DEFAULT_CEILING_CENTS,
    unpriced: Collection[tuple[str, str]] | None = None,
) -> BillingRunSummary:
    """Bring Stripe (or, in dry-run, the ledger) to exactly `charges` for every open period,
    except periods held: a total above `ceiling_cents`, or usage not fully priced (`unpriced`
    (tenant, period) keys; by default read from the warehouse for the charges' windows), is
    recorded as a `held` row and sent only once released (`release_held_period`).

    Open events first attempted `confirm_after` ago or more are confirmed against Stripe's meter
    event summaries rather than resent under a key Stripe may have pruned.
    """
    now = now or datetime.now(UTC)
    if unpriced is None:
        unpriced = unpriced_periods(warehouse, charges)
    mode = "live" if sender.live else "dry_run"
    summary = BillingRunSummary()
    closed = closed_keys(warehouse)
    keys = list(zip(charges["tenant_id"], charges["period"], strict=True))
    charges = charges[[k not in closed for k in keys]].reset_index(drop=True)

    _resend_unconfirmed(warehouse, sender, mode, summary, now, confirm_after)
    _cancel_excess(warehouse, charges, sender, mode, summary, now)

    with warehouse.transaction(LOCK_KEY) as conn:
        ledger = read_ledger(warehouse, conn)
        diff = diff_against(ledger, charges, mode)
        new = diff[diff["diff_cents"] > 0]
        reasons = hold_reasons(
            new,
            ceiling_cents=ceiling_cents,
            unpriced=unpriced,
            approved=approved_cents(ledger, mode),
        )
        holds, lifted = plan_holds(ledger, diff, reasons, mode, now)
        intents = plan_events(ledger, new[reasons.isna()], sender, mode, now)
        credits, superseded = plan_credits(ledger, diff, mode, now)
        changed = [intents, credits, superseded, holds, lifted]
        upsert_rows(warehouse, conn, pd.concat(changed, ignore_index=True))
        after = read_ledger(warehouse, conn)
    summary.new_pending_credits = credits
    summary.new_holds = holds
    summary.open_holds = after[after["kind"].eq(HOLD) & after["status"].eq(HELD)]

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
    confirm_after: timedelta,
) -> None:
    ledger = read_ledger(warehouse)
    ledger = ledger[ledger["mode"].eq(mode) & ledger["kind"].eq("meter_event")]
    for _, row in ledger[ledger["status"].isin(UNCONFIRMED)].iterrows():
        if pd.isna(row["stripe_customer_id"]) or pd.isna(row["event_timestamp"]):
            continue  # cannot be sent as recorded; the close check reports it
        if needs_confirmation(row, now=now, confirm_after=confirm_after):
            _confirm(warehouse, sender, row, summary, now)
        else:
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
    """Send under the row's key; a replayed stored error goes straight to confirmation."""
    row, outcome = _post(warehouse, sender, row, now)
    if outcome.status == "unconfirmed" and outcome.replayed:
        _confirm(warehouse, sender, row, summary, now)
    else:
        summary.record(row, outcome, "event")


def _post(
    warehouse: Warehouse, sender: MeterEventSender, row: pd.Series, now: datetime
) -> tuple[pd.Series, SendOutcome]:
    ts = pd.Timestamp(row["event_timestamp"])
    key = row.get("idempotency_key")
    outcome = sender.send_meter_event(
        identifier=row["identifier"],
        customer=row["stripe_customer_id"],
        value=int(row["value_cents"]),
        timestamp=int(ts.timestamp()),
        idempotency_key=None if key is None or pd.isna(key) else str(key),
    )
    status = {"sent": SENT, "failed": FAILED, "unconfirmed": INTENDED, "dry_run": DRY_RUN}
    first = row.get("first_attempt_at")
    updated = record_row(
        warehouse,
        row,
        status=status[outcome.status],
        attempts=int(row["attempts"]) + 1,
        last_error=outcome.error,
        updated_at=now,
        first_attempt_at=now if first is None or pd.isna(first) else first,
    )
    return updated, outcome


def _confirm(
    warehouse: Warehouse,
    sender: MeterEventSender,
    row: pd.Series,
    summary: BillingRunSummary,
    now: datetime,
) -> None:
    """Settle an open event from the meter's summary of its customer and minute: `sent` if the
    summary holds it, re-sent under a fresh key (same identifier) if it is absent, else open."""
    start, end = summary_window(int(pd.Timestamp(row["event_timestamp"]).timestamp()))
    total = sender.meter_event_total(customer=row["stripe_customer_id"], start=start, end=end)
    if total is None:
        outcome = SendOutcome("unconfirmed", "confirmation: Stripe event summary unavailable")
        kept = record_row(warehouse, row, last_error=outcome.error, updated_at=now)
        summary.record(kept, outcome, "confirm")
        return
    with warehouse.transaction(LOCK_KEY) as conn:
        peers = window_peers(read_ledger(warehouse, conn), row)
    verdict = confirm_in_window(peers, row["identifier"], total)
    if verdict == "landed":
        done = record_row(warehouse, row, status=SENT, last_error=None, updated_at=now)
        summary.record(done, SendOutcome("sent"), "confirm")
    elif verdict == "absent":
        # Written before the send: a crash leaves the fresh key, never a reuse of the old one.
        key = fresh_idempotency_key(row["identifier"], int(row["attempts"]) + 1)
        fresh = record_row(warehouse, row, idempotency_key=key, updated_at=now)
        fresh, outcome = _post(warehouse, sender, fresh, now)
        summary.record(fresh, outcome, "resend")
    else:
        outcome = SendOutcome(
            "unconfirmed",
            f"confirmation: summary of {total} cents in its minute does not settle the event",
        )
        kept = record_row(warehouse, row, last_error=outcome.error, updated_at=now)
        summary.record(kept, outcome, "confirm")


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


def release_held_period(
    warehouse: Warehouse,
    tenant_id: str,
    period: str,
    *,
    released_by: str,
    reason: str,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Record that a person released a held tenant-period; the next billing run sends it."""
    with warehouse.transaction(LOCK_KEY) as conn:
        released = release_holds(
            read_ledger(warehouse, conn),
            tenant_id,
            period,
            released_by=released_by,
            reason=reason,
            now=now or datetime.now(UTC),
        )
        upsert_rows(warehouse, conn, released)
    return released


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
