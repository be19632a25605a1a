"""The billing ledger: every Stripe meter event intended, sent, cancelled or credited, exactly once.

Reporting a period's overage is a state machine over `billing_ledger` rows (one per intended
meter event or pending credit), keyed by `identifier = cp-<tenant>-<period>-<sequence>`, which
is also the Stripe `identifier` (Stripe's dedup key) and the `Idempotency-Key`:

1. *Resend*: rows still `intended`, `failed` or `cancel_intended` (a crash or an outage hit
   between writing the intent and recording the outcome) are sent again with the SAME
   identifier, key and parameters, so Stripe deduplicates instead of billing twice.
   *Confirm*: a resend cannot settle an event whose key Stripe answers with a replayed stored
   error (it replays the same 500 forever), and after `CONFIRM_AFTER` since the first attempt
   the key may be pruned. Such an event is confirmed against the meter's event summary for its
   customer and minute (`confirm_in_window`): if the summary shows its value it is `sent`; if it
   shows the event absent it is re-sent under a FRESH idempotency key with the SAME identifier
   (Stripe dedups meter events by identifier); if the summary cannot tell, it stays open.
2. *Cancel*: when a recomputed amount falls below what was reported, the newest events still
   inside Stripe's 24 h adjustment window are cancelled (meter event adjustments) until the
   reported total is at or below the new amount.
3. *Report*: each tenant's new overage (computed cents minus committed cents) becomes ONE new
   intent row, written under a lock BEFORE it is sent, its outcome recorded after. What still
   exceeds the computed amount after cancelling becomes a `pending_credit` row (never a negative
   event) for a person to decide; `resolve_pending_credit` records that decision.
4. *Hold*: a number that cannot be right never reaches an invoice. New overage of a period whose
   computed total exceeds the configured ceiling (`billing.max_overage_usd_per_period`), or
   whose usage includes calls not priced (`pricing_status != 'priced'`), is not planned as an
   event: it becomes a `hold` row (status `held`, `hold_reason` saying why, value = the
   period's computed total), alerted, and nothing is sent. `billing_release_job` marks it
   `released` (who, when, why); the next run then sends the period's overage up to the
   released total. A larger total later is held again; a hold no longer needed (usage priced,
   amount back under the ceiling) or replaced by a newer one becomes `hold_lifted`.

The value of an event is the overage amount in cents (the Stripe meter's price is $0.01 per
unit), so the sum of a customer's events equals `overage_charges.amount_cents` exactly.
Dry-run (no Stripe key) runs the same machine with status `dry_run` and `mode = dry_run`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

import pandas as pd

from cost_pipeline.catalog import BILLING_LEDGER
from cost_pipeline.lib.config import Billing

LOCK_KEY = "billing_ledger"
STRIPE_WINDOW = timedelta(days=35)
WINDOW_MARGIN = timedelta(hours=1)  # stay clear of Stripe's edge: a retry may come later
CANCEL_WINDOW = timedelta(hours=23)  # Stripe allows 24 h; keep an hour for retries
# Past this age since its first attempt an open event is confirmed, not blindly resent: Stripe
# may prune its idempotency key after 24 h, and the summary check must run well inside that.
CONFIRM_AFTER = timedelta(hours=1)
SUMMARY_MINUTE = 60  # event summary windows must be aligned with minute boundaries
MAX_CONFIRM_UNKNOWNS = 12  # subsets checked per window: 2**12; beyond, a person decides

# Statuses. A meter event counts as committed (reported, or about to be) unless cancelled.
INTENDED, SENT, FAILED, DRY_RUN = "intended", "sent", "failed", "dry_run"
CANCEL_INTENDED, CANCELLED = "cancel_intended", "cancelled"
PENDING_CREDIT, CREDIT_RESOLVED, CREDIT_SUPERSEDED = (
    "pending_credit",
    "credit_resolved",
    "credit_superseded",
)
UNCONFIRMED = (INTENDED, FAILED)
WAITING = (*UNCONFIRMED, CANCEL_INTENDED)  # events the month close waits on
COMMITTED = (INTENDED, FAILED, SENT, DRY_RUN)
# Holds (kind `hold`): overage kept from Stripe until a person releases it.
HOLD = "hold"
HELD, RELEASED, HOLD_LIFTED = "held", "released", "hold_lifted"
ABOVE_CEILING, UNPRICED_USAGE = "overage above ceiling", "unpriced usage"
DEFAULT_CEILING_CENTS = int(Billing().max_overage_usd_per_period * 100)

Status = Literal["sent", "failed", "unconfirmed", "dry_run"]


@dataclass(frozen=True)
class SendOutcome:
    """The result of one call to Stripe: `sent` (recorded, or already there), `failed`
    (rejected: not recorded), `unconfirmed` (unknown after retries) or `dry_run`. `replayed`:
    Stripe answered with the response it stored for the key, so resending cannot change it."""

    status: Status
    error: str | None = None
    replayed: bool = False


class MeterEventSender(Protocol):
    """What the ledger needs from Stripe (`resources.stripe_billing` implements it)."""

    live: bool
    event_name: str

    def send_meter_event(
        self,
        *,
        identifier: str,
        customer: str,
        value: int,
        timestamp: int,
        idempotency_key: str | None = None,
    ) -> SendOutcome: ...

    def cancel_meter_event(self, *, identifier: str) -> SendOutcome: ...

    def meter_event_total(self, *, customer: str, start: int, end: int) -> int | None:
        """The meter's summed value for `customer` in [start, end), or None if unavailable."""
        ...


@dataclass
class BillingRunSummary:
    """What one billing run did; `actions` has one row per row of the ledger it touched."""

    sent: int = 0
    confirmed: int = 0
    dry_run: int = 0
    failed: int = 0
    unconfirmed: int = 0
    cancelled: int = 0
    new_pending_credits: pd.DataFrame = field(default_factory=pd.DataFrame)
    new_holds: pd.DataFrame = field(default_factory=pd.DataFrame)
    open_holds: pd.DataFrame = field(default_factory=pd.DataFrame)
    actions: list[dict[str, object]] = field(default_factory=list)

    def record(self, row: pd.Series, outcome: SendOutcome, action: str) -> None:
        key = "cancelled" if action == "cancel" and outcome.status == "sent" else outcome.status
        setattr(self, key, getattr(self, key) + 1)
        if action == "confirm" and outcome.status == "sent":
            self.confirmed += 1
        self.actions.append(
            {
                "action": action,
                "identifier": row["identifier"],
                "tenant_id": row["tenant_id"],
                "period": row["period"],
                "value_cents": int(row["value_cents"]),
                "outcome": outcome.status,
                "error": outcome.error,
            }
        )


def make_identifier(tenant_id: str, period: str, sequence: int) -> str:
    """`cp-<tenant>-<period>-<seq>`; stable, ≤ 100 chars (long tenant ids are hashed)."""
    tenant = tenant_id
    if len(tenant) > 60:
        tenant = hashlib.sha256(tenant.encode()).hexdigest()[:24]
    return f"cp-{tenant}-{period}-{sequence:05d}"


def event_timestamp(period_end: datetime, now: datetime) -> datetime | None:
    """When to date an event: now, or the last second of an ended period (so Stripe bills it
    in that period); None when that is outside Stripe's 35-day window."""
    ts = min(now, period_end - timedelta(seconds=1)).replace(microsecond=0)
    return ts if ts >= now - STRIPE_WINDOW + WINDOW_MARGIN else None


# -- confirming an open event against Stripe's meter event summaries ----------------------------

Verdict = Literal["landed", "absent", "unknown"]


def summary_window(timestamp: int) -> tuple[int, int]:
    """The minute-aligned [start, end) summary window holding an event's Unix timestamp."""
    start = timestamp - timestamp % SUMMARY_MINUTE
    return start, start + SUMMARY_MINUTE


def needs_confirmation(row: pd.Series, *, now: datetime, confirm_after: timedelta) -> bool:
    """A live, open event first attempted at least `confirm_after` ago (or before the ledger
    recorded first attempts, judged by its intent): confirm it instead of resending blindly."""
    if row["mode"] != "live" or row["status"] not in UNCONFIRMED or int(row["attempts"]) == 0:
        return False
    first = row.get("first_attempt_at")
    if first is None or pd.isna(first):
        first = row["created_at"]
    return bool(pd.Timestamp(first) <= pd.Timestamp(now) - confirm_after)


def window_peers(ledger: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """The live meter events that one summary (the row's customer, meter and minute) adds up."""
    start, end = summary_window(int(pd.Timestamp(row["event_timestamp"]).timestamp()))
    stamps = pd.to_datetime(ledger["event_timestamp"], utc=True)
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    same = (
        ledger["mode"].eq("live")
        & ledger["kind"].eq("meter_event")
        & ledger["stripe_customer_id"].eq(row["stripe_customer_id"])
        & ledger["event_name"].eq(row["event_name"])
        & seconds.ge(start)
        & seconds.lt(end)
    )
    return ledger[same.fillna(False).astype(bool)]


def confirm_in_window(peers: pd.DataFrame, identifier: str, total: int) -> Verdict:
    """Is event `identifier` inside `total`, the summary of its window (its `peers`)?

    `sent` peers are in the total, `cancelled` ones are not; open ones (intended, failed,
    cancel_intended) may or may not be. The verdict is `landed` or `absent` only when every
    choice of open peers that adds up to `total` agrees on the event; otherwise — other usage
    on the meter, or too many open peers to tell apart — it is `unknown` and the event waits.
    """
    sent = int(peers.loc[peers["status"].eq(SENT), "value_cents"].sum())
    open_ = peers[peers["status"].isin(WAITING)]
    ids = list(open_["identifier"])
    if identifier not in ids or len(ids) > MAX_CONFIRM_UNKNOWNS:
        return "unknown"
    values = [int(v) for v in open_["value_cents"]]
    target = ids.index(identifier)
    found = total - sent
    verdicts = {
        bool(mask >> target & 1)
        for mask in range(1 << len(values))
        if sum(v for i, v in enumerate(values) if mask >> i & 1) == found
    }
    if verdicts == {True}:
        return "landed"
    if verdicts == {False}:
        return "absent"
    return "unknown"


def fresh_idempotency_key(identifier: str, attempt: int) -> str:
    """A key Stripe has never seen for this event: the identifier (the dedup key) stays."""
    return f"{identifier}-r{attempt}"


# -- the pure part: how much is committed and what to do ---------------------------------------


def committed_cents(ledger: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Per (tenant, period): events committed (not cancelled) minus credits a person resolved.

    `cancel_intended` events count as cancelled: their cancellation is retried with the same key
    until Stripe answers; if it is refused they return to `sent` and show up as excess.
    """
    rows = ledger[ledger["mode"] == mode]
    events = rows["kind"].eq("meter_event") & rows["status"].isin(COMMITTED)
    resolved = rows["kind"].eq("pending_credit") & rows["status"].eq(CREDIT_RESOLVED)
    signed = rows["value_cents"].where(events, 0) - rows["value_cents"].where(resolved, 0)
    out = signed.groupby([rows["tenant_id"], rows["period"]]).sum()
    return out.rename("committed_cents").reset_index()


def diff_against(ledger: pd.DataFrame, charges: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Charges joined to what is committed: `diff_cents` > 0 is new overage, < 0 is excess."""
    target = charges[["tenant_id", "period", "stripe_customer_id", "period_end", "amount_cents"]]
    merged = target.merge(committed_cents(ledger, mode), on=["tenant_id", "period"], how="left")
    merged["committed_cents"] = merged["committed_cents"].fillna(0).astype("int64")
    merged["diff_cents"] = merged["amount_cents"].astype("int64") - merged["committed_cents"]
    return merged


def select_cancellations(
    ledger: pd.DataFrame, excess: pd.DataFrame, *, now: datetime
) -> pd.DataFrame:
    """Newest live events still inside the adjustment window, until each excess is covered."""
    if excess.empty:
        return ledger.iloc[0:0]
    sent = ledger[
        ledger["mode"].eq("live")
        & ledger["kind"].eq("meter_event")
        & ledger["status"].eq(SENT)
        # created_at (the intent) is never later than Stripe's receipt: a safe lower bound.
        & (ledger["created_at"] >= now - CANCEL_WINDOW)
        # A cancellation Stripe already refused is not asked for again.
        & ledger["last_error"].isna()
    ]
    cand = sent.merge(excess[["tenant_id", "period", "diff_cents"]], on=["tenant_id", "period"])
    cand = cand.sort_values(["tenant_id", "period", "sequence"], ascending=[True, True, False])
    before = cand.groupby(["tenant_id", "period"])["value_cents"].cumsum() - cand["value_cents"]
    # Cancel while what has been cancelled so far is still short of the excess.
    chosen = cand[before < -cand["diff_cents"]]
    return ledger[ledger["identifier"].isin(chosen["identifier"])]


def _next_sequences(ledger: pd.DataFrame, keys: pd.DataFrame) -> pd.Series:
    last = ledger.groupby(["tenant_id", "period"])["sequence"].max().rename("last").reset_index()
    merged = keys[["tenant_id", "period"]].merge(last, on=["tenant_id", "period"], how="left")
    return (merged["last"].fillna(0).astype("int64") + 1).set_axis(keys.index)


def _new_rows(
    base: pd.DataFrame, *, kind: str, mode: str, status: str, event_name: str | None, now: datetime
) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "tenant_id": base["tenant_id"],
            "period": base["period"],
            "sequence": base["sequence"],
            "kind": kind,
            "mode": mode,
            "stripe_customer_id": base["stripe_customer_id"],
            "event_name": event_name,
            "value_cents": base["value_cents"].astype("int64"),
            "event_timestamp": base.get("event_timestamp"),
            "status": status,
            "attempts": 0,
            "last_error": base.get("last_error"),
            "created_at": now,
            "updated_at": now,
        }
    )
    out["identifier"] = [
        make_identifier(t, p, s)
        for t, p, s in zip(out["tenant_id"], out["period"], out["sequence"], strict=True)
    ]
    return BILLING_LEDGER.conform(out)


# -- the run -------------------------------------------------------------------------------------


def plan_events(
    ledger: pd.DataFrame, new: pd.DataFrame, sender: MeterEventSender, mode: str, now: datetime
) -> pd.DataFrame:
    new = new.assign(value_cents=new["diff_cents"]).reset_index(drop=True)
    new["sequence"] = _next_sequences(ledger, new)
    stamps = [event_timestamp(pd.Timestamp(e).to_pydatetime(), now) for e in new["period_end"]]
    new["event_timestamp"] = pd.Series(stamps, index=new.index, dtype="object")
    problems = pd.Series(None, index=new.index, dtype="object")
    problems[new["event_timestamp"].isna()] = "period ended outside Stripe's 35-day window"
    problems[new["stripe_customer_id"].isna()] = "tenant has no stripe_customer_id in config"
    new["last_error"] = problems
    status = DRY_RUN if mode == "dry_run" else INTENDED
    rows = _new_rows(new, kind="meter_event", mode=mode, status=status, event_name=None, now=now)
    rows["event_name"] = sender.event_name
    # An event that cannot be sent is still recorded as committed: the close check will stop
    # on it, instead of a later run planning the same amount again under a new identifier.
    rows.loc[problems.notna().to_numpy(), "status"] = FAILED
    return rows


def plan_credits(
    ledger: pd.DataFrame, diff: pd.DataFrame, mode: str, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """New pending credits for excess, and the open ones they replace (or that are now moot)."""
    rows = ledger[ledger["mode"].eq(mode)]
    open_ = rows[rows["kind"].eq("pending_credit") & rows["status"].eq(PENDING_CREDIT)]
    excess = diff[diff["diff_cents"] < 0].assign(value_cents=lambda d: -d["diff_cents"])
    current = open_.merge(
        excess[["tenant_id", "period", "value_cents"]],
        on=["tenant_id", "period"],
        how="left",
        suffixes=("", "_now"),
    )
    unchanged = current["value_cents"].eq(current["value_cents_now"]).to_numpy()
    superseded = open_[~unchanged].assign(status=CREDIT_SUPERSEDED, updated_at=now)
    keep = open_[unchanged][["tenant_id", "period"]]
    need = excess.merge(keep, on=["tenant_id", "period"], how="left", indicator=True)
    need = need[need["_merge"].eq("left_only")].drop(columns="_merge").reset_index(drop=True)
    need["sequence"] = _next_sequences(ledger, need)
    credits = _new_rows(
        need, kind="pending_credit", mode=mode, status=PENDING_CREDIT, event_name=None, now=now
    )
    return credits, BILLING_LEDGER.conform(superseded)


# -- holds: overage that must not reach Stripe without a person ---------------------------------


def approved_cents(ledger: pd.DataFrame, mode: str) -> dict[tuple[str, str], int]:
    """Per (tenant, period): the largest period total a person released for sending."""
    rows = ledger[ledger["mode"].eq(mode) & ledger["kind"].eq(HOLD) & ledger["status"].eq(RELEASED)]
    best = rows.groupby(["tenant_id", "period"])["value_cents"].max()
    return {(t, p): int(v) for (t, p), v in best.items()}


def hold_reasons(
    new: pd.DataFrame,
    *,
    ceiling_cents: int,
    unpriced: Collection[tuple[str, str]],
    approved: Mapping[tuple[str, str], int],
) -> pd.Series:
    """Per row of `new` (tenant_id, period, amount_cents): why its overage must be held, or None.

    Held: a period total above `ceiling_cents`, or a period in `unpriced` (it has calls whose
    price is unknown, so its total cannot be right). A release covers totals up to the one
    released (`approved`); a larger total needs a new release.
    """
    reasons = []
    for t, p, cents in zip(new["tenant_id"], new["period"], new["amount_cents"], strict=True):
        why = []
        if int(cents) > ceiling_cents:
            why.append(ABOVE_CEILING)
        if (t, p) in unpriced:
            why.append(UNPRICED_USAGE)
        released = int(cents) <= approved.get((t, p), -1)
        reasons.append(", ".join(why) if why and not released else None)
    return pd.Series(reasons, index=new.index, dtype="object")


def plan_holds(
    ledger: pd.DataFrame, diff: pd.DataFrame, reasons: pd.Series, mode: str, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """New `held` rows for the rows of `diff` with a reason (`reasons`, aligned on its index),
    and the open holds of `diff`'s periods that they replace or that are no longer needed.

    An open hold with the same total and reason is kept as is (no new row, no new alert)."""
    rows = ledger[ledger["mode"].eq(mode) & ledger["kind"].eq(HOLD)]
    open_ = rows[rows["status"].eq(HELD)]
    want = diff.loc[reasons.dropna().index].assign(
        value_cents=lambda d: d["amount_cents"].astype("int64"), hold_reason=reasons.dropna()
    )
    same = open_.merge(
        want[["tenant_id", "period", "value_cents", "hold_reason"]],
        on=["tenant_id", "period", "value_cents", "hold_reason"],
        how="left",
        indicator=True,
    )["_merge"].eq("both")
    kept = open_[same.to_numpy()]
    keys = set(zip(diff["tenant_id"], diff["period"], strict=True))
    in_run = [k in keys for k in zip(open_["tenant_id"], open_["period"], strict=True)]
    lifted = open_[~same.to_numpy() & pd.Series(in_run, index=open_.index, dtype=bool)]
    lifted = lifted.assign(status=HOLD_LIFTED, updated_at=now)
    kept_keys = set(zip(kept["tenant_id"], kept["period"], strict=True))
    fresh = [k not in kept_keys for k in zip(want["tenant_id"], want["period"], strict=True)]
    need = want[pd.Series(fresh, index=want.index, dtype=bool)]
    need = need.reset_index(drop=True)
    need["sequence"] = _next_sequences(ledger, need)
    holds = _new_rows(need, kind=HOLD, mode=mode, status=HELD, event_name=None, now=now)
    holds["hold_reason"] = need["hold_reason"].to_numpy()
    return BILLING_LEDGER.conform(holds), BILLING_LEDGER.conform(lifted)


def release_holds(
    ledger: pd.DataFrame,
    tenant_id: str,
    period: str,
    *,
    released_by: str,
    reason: str,
    now: datetime,
) -> pd.DataFrame:
    """The open holds of a tenant-period, marked released by a person (who, when, why)."""
    if not released_by.strip() or not reason.strip():
        raise ValueError("a release needs released_by and a reason")
    open_ = ledger[
        ledger["tenant_id"].eq(tenant_id)
        & ledger["period"].eq(period)
        & ledger["kind"].eq(HOLD)
        & ledger["status"].eq(HELD)
    ]
    if open_.empty:
        raise ValueError(f"billing_ledger has no held overage for {tenant_id} in {period}")
    return open_.assign(
        status=RELEASED,
        released_by=released_by,
        released_at=now,
        release_reason=reason,
        updated_at=now,
    )


# -- the month close ------------------------------------------------------------------------------


def reconcile_period(
    ledger: pd.DataFrame, charges: pd.DataFrame, period: str, mode: str
) -> pd.DataFrame:
    """Per tenant: computed cents vs the ledger's confirmed, unconfirmed and pending cents, and
    `waiting_on`: the identifiers of events whose outcome is still open (the close waits)."""
    rows = ledger[ledger["period"].eq(period) & ledger["mode"].eq(mode)]
    events = rows[rows["kind"].eq("meter_event")]
    credits = rows[rows["kind"].eq("pending_credit")]
    holds = rows[rows["kind"].eq(HOLD) & rows["status"].eq(HELD)]

    def total(frame: pd.DataFrame, statuses: Sequence[str], name: str) -> pd.Series:
        picked = frame[frame["status"].isin(statuses)]
        return picked.groupby("tenant_id")["value_cents"].sum().rename(name)

    confirmed = (DRY_RUN,) if mode == "dry_run" else (SENT,)
    parts = [
        total(events, confirmed, "reported_cents"),
        total(events, WAITING, "unconfirmed_cents"),
        total(credits, (PENDING_CREDIT,), "pending_credit_cents"),
        total(credits, (CREDIT_RESOLVED,), "resolved_credit_cents"),
    ]
    computed = charges[charges["period"].eq(period)].set_index("tenant_id")["amount_cents"]
    out = pd.concat([computed.rename("computed_cents"), *parts], axis=1).fillna(0)
    out = out.astype("int64").rename_axis("tenant_id").reset_index()
    out["reported_cents"] = out["reported_cents"] - out["resolved_credit_cents"]
    out["difference_cents"] = out["reported_cents"] - out["computed_cents"]
    out["period"] = period
    out["mode"] = mode
    waiting = events[events["status"].isin(WAITING)]
    names = waiting.groupby("tenant_id")["identifier"].agg(lambda ids: ", ".join(sorted(ids)))
    out["waiting_on"] = out["tenant_id"].map(names).astype("object")
    # What an open hold keeps from Stripe: the computed overage not yet reported or in flight.
    reasons = holds.groupby("tenant_id")["hold_reason"].agg(lambda r: ", ".join(sorted(set(r))))
    out["held_reason"] = out["tenant_id"].map(reasons).astype("object")
    unsent = (out["computed_cents"] - out["reported_cents"] - out["unconfirmed_cents"]).clip(0)
    out["held_cents"] = unsent.where(out["held_reason"].notna(), 0).astype("int64")
    out["ok"] = out["difference_cents"].eq(0) & out["unconfirmed_cents"].eq(0)
    return out
