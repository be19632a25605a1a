"""Protects exactly-once overage billing: ledger + real StripeClient vs the fake under faults."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from cost_pipeline.defs.billing.run import report_overage, resolve_pending_credit
from cost_pipeline.lib.billing_ledger import (
    MeterEventSender,
    SendOutcome,
    confirm_in_window,
    event_timestamp,
    make_identifier,
    needs_confirmation,
    reconcile_period,
    summary_window,
)
from cost_pipeline.resources.stripe_billing import DEFAULT_EVENT_NAME, StripeBillingResource
from cost_pipeline.store.billing import close_period, read_ledger
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes.stripe import METER_EVENTS, FakeStripe, running

NOW = datetime(2026, 9, 20, 12, 0, tzinfo=UTC)
SEPT_END = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with running(hang_seconds=0.5) as server:
        server.clock = lambda: NOW.timestamp() + 60
        yield server


@pytest.fixture
def wh(warehouse: Warehouse) -> Warehouse:
    """The warehouse on SQLite and on Postgres (conftest's `warehouse`)."""
    return warehouse


def stripe_resource(fake: FakeStripe, **overrides: object) -> StripeBillingResource:
    settings: dict[str, object] = {
        "api_key": "sk_test_x",
        "api_base": fake.url,
        "max_network_retries": 3,
        "backoff_seconds": 0.01,
        "timeout_seconds": 0.25,
    }
    settings.update(overrides)
    return StripeBillingResource(**settings)  # type: ignore[arg-type]


def charges(amounts: dict[str, int], period: str = "2026-09") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenant_id": list(amounts),
            "period": period,
            "stripe_customer_id": [f"cus_{t}" for t in amounts],
            "period_end": pd.Timestamp(SEPT_END),
            "amount_cents": list(amounts.values()),
        }
    )


def at(fake: FakeStripe, when: datetime) -> datetime:
    """Move the fake's clock with the run's `now` (Stripe rejects events from its future)."""
    fake.clock = lambda: when.timestamp()
    return when


def ledger_of(wh: Warehouse) -> pd.DataFrame:
    return read_ledger(wh).sort_values("identifier").reset_index(drop=True)


def test_five_repeated_runs_send_one_event_per_unit_of_overage(
    wh: Warehouse, fake: FakeStripe
) -> None:
    sender = stripe_resource(fake).sender()
    want = {"acme": 12_345, "beacon": 99, "cedar": 0}
    for _ in range(5):
        report_overage(wh, charges(want), sender, now=NOW)
    assert len(fake.live_events()) == 2
    assert fake.meter_event_posts() == 2
    assert fake.totals_by_customer() == {"cus_acme": 12_345, "cus_beacon": 99}
    ledger = ledger_of(wh)
    assert list(ledger["status"]) == ["sent", "sent"]
    assert list(ledger["identifier"]) == ["cp-acme-2026-09-00001", "cp-beacon-2026-09-00001"]
    # Stripe dates the usage inside the period, within its window.
    assert {e["timestamp"] for e in fake.live_events()} == {int(NOW.timestamp())}


def test_answer_lost_after_accept_resolves_to_committed_without_second_unit(
    wh: Warehouse, fake: FakeStripe
) -> None:
    sender = stripe_resource(fake).sender()
    fake.fail_next("500_after_record")  # Stripe records the event, stores and replays a 500
    first = report_overage(wh, charges({"acme": 500}), sender, now=NOW)
    # The replayed 500 is confirmed at once against the event summary: it holds the event.
    assert (first.sent, first.confirmed, first.unconfirmed) == (1, 1, 0)
    assert [a["action"] for a in first.actions] == ["confirm"]
    assert ledger_of(wh)["status"].tolist() == ["sent"]
    assert {r["key"] for r in fake.state.requests if r["path"] == METER_EVENTS} == {
        "cp-acme-2026-09-00001"
    }  # never re-sent under another key
    for hours in (0, 25):
        fake.forget_idempotency_keys()
        report_overage(
            wh, charges({"acme": 500}), sender, now=at(fake, NOW + timedelta(hours=hours))
        )
    assert fake.totals_by_customer() == {"cus_acme": 500}
    assert len(fake.state.events) == 1
    assert fake.meter_event_posts() == 4  # the first call and stripe-python's 3 retries


@pytest.mark.parametrize("retries", [3, 0])
def test_stored_500_resolves_to_exactly_one_committed_event(
    wh: Warehouse, fake: FakeStripe, retries: int
) -> None:
    sender = stripe_resource(fake, max_network_retries=retries).sender()
    fake.fail_next("500_stored")  # nothing recorded; the key replays the same 500 forever
    runs = [report_overage(wh, charges({"acme": 500}), sender, now=NOW) for _ in range(2)]
    if retries == 0:
        # The first 500 is not known to be stored; the next run's resend sees the replay.
        assert runs[0].unconfirmed == 1
    resolved = runs[0] if retries else runs[1]
    assert [a["action"] for a in resolved.actions] == ["resend"]
    assert resolved.sent == 1
    [row] = ledger_of(wh).to_dict("records")
    assert row["status"] == "sent"
    assert row["idempotency_key"].startswith("cp-acme-2026-09-00001-r")
    last = fake.state.requests[-1]
    assert (last["key"], last["params"]["identifier"]) == (
        row["idempotency_key"],
        row["identifier"],
    )
    assert len(fake.summary_requests()) == 1
    for _ in range(3):
        report_overage(wh, charges({"acme": 500}), sender, now=NOW)
    assert fake.totals_by_customer() == {"cus_acme": 500}
    assert len(fake.state.events) == 1


def test_pruned_key_and_lagging_summary_resend_with_same_identifier_does_not_double_count(
    wh: Warehouse, fake: FakeStripe
) -> None:
    sender = stripe_resource(fake, max_network_retries=0).sender()
    fake.summaries_lag = True  # Stripe accepted it but has not aggregated it yet
    fake.fail_next("500_after_record")
    report_overage(wh, charges({"acme": 500}), sender, now=NOW)
    assert ledger_of(wh)["status"].tolist() == ["intended"]
    fake.forget_idempotency_keys()
    # Past the confirmation age: confirmed, not resent blindly. The summary does not show the
    # event yet, so it is re-sent under a fresh key; Stripe's identifier dedup keeps one unit.
    later = at(fake, NOW + timedelta(hours=2))
    summary = report_overage(
        wh, charges({"acme": 500}), sender, now=later, confirm_after=timedelta(hours=1)
    )
    assert [(a["action"], a["outcome"]) for a in summary.actions] == [("resend", "sent")]
    assert fake.totals_by_customer() == {"cus_acme": 500}
    assert len(fake.state.events) == 1
    fake.catch_up_summaries()
    start, end = summary_window(int(NOW.timestamp()))
    assert sender.meter_event_total(customer="cus_acme", start=start, end=end) == 500
    assert ledger_of(wh)["status"].tolist() == ["sent"]


def test_resends_stop_at_the_confirmation_age(wh: Warehouse, fake: FakeStripe) -> None:
    sender = stripe_resource(fake, max_network_retries=0).sender()
    fake.fail_next("503", times=2)
    report_overage(wh, charges({"acme": 80}), sender, now=NOW)
    soon = at(fake, NOW + timedelta(minutes=30))
    young = report_overage(wh, charges({"acme": 80}), sender, now=soon)
    assert [a["action"] for a in young.actions] == ["event"]  # same key, still young
    before = len(fake.state.requests)
    old = report_overage(wh, charges({"acme": 80}), sender, now=at(fake, NOW + timedelta(hours=3)))
    # Past the age, Stripe is asked what it holds before anything is sent again.
    paths = [r["path"] for r in fake.state.requests[before:]]
    assert paths == [
        "/v1/billing/meters",
        "/v1/billing/meters/mtr_0001/event_summaries",
        METER_EVENTS,
    ]
    assert fake.state.requests[-1]["key"] != "cp-acme-2026-09-00001"
    assert [a["action"] for a in old.actions] == ["resend"]
    assert fake.totals_by_customer() == {"cus_acme": 80}
    assert len(fake.state.events) == 1


def test_other_usage_in_the_window_leaves_the_event_waiting(
    wh: Warehouse, fake: FakeStripe
) -> None:
    sender = stripe_resource(fake).sender()
    fake.fail_next("500_stored")
    fake.state.events["foreign"] = {
        "event_name": DEFAULT_EVENT_NAME,
        "identifier": "foreign",
        "payload": {"stripe_customer_id": "cus_acme", "value": "7"},
        "timestamp": int(NOW.timestamp()),
    }
    summary = report_overage(wh, charges({"acme": 500}), sender, now=NOW)
    assert summary.unconfirmed == 1
    [row] = ledger_of(wh).to_dict("records")
    assert row["status"] == "intended"
    assert "does not settle" in row["last_error"]
    recon = reconcile_period(ledger_of(wh), charges({"acme": 500}), "2026-09", "live")
    assert recon["waiting_on"].tolist() == ["cp-acme-2026-09-00001"]
    assert fake.totals_by_customer() == {"cus_acme": 7}  # nothing billed on a guess


@pytest.mark.parametrize(
    ("peers", "total", "verdict"),
    [
        ([("t", "intended", 500)], 500, "landed"),
        ([("t", "intended", 500)], 0, "absent"),
        ([("t", "intended", 500)], 507, "unknown"),  # usage from elsewhere on the meter
        ([("a", "sent", 300), ("t", "intended", 500)], 800, "landed"),
        ([("a", "sent", 300), ("t", "intended", 500)], 300, "absent"),
        ([("a", "cancelled", 300), ("t", "intended", 500)], 500, "landed"),
        ([("b", "intended", 200), ("t", "failed", 500)], 700, "landed"),
        ([("b", "intended", 200), ("t", "intended", 500)], 200, "absent"),
        ([("b", "intended", 500), ("t", "intended", 500)], 500, "unknown"),  # which one?
        ([("b", "cancel_intended", 500), ("t", "intended", 500)], 1_000, "landed"),
    ],
)
def test_confirm_in_window(peers: list[tuple[str, str, int]], total: int, verdict: str) -> None:
    frame = pd.DataFrame(peers, columns=["identifier", "status", "value_cents"])
    assert confirm_in_window(frame, "t", total) == verdict


@pytest.mark.parametrize(
    ("status", "attempts", "age", "due"),
    [
        ("intended", 1, timedelta(minutes=59), False),
        ("intended", 1, timedelta(hours=1), True),
        ("failed", 3, timedelta(hours=2), True),
        ("intended", 0, timedelta(hours=2), False),  # never sent: nothing to confirm
        ("sent", 1, timedelta(hours=2), False),
    ],
)
def test_needs_confirmation_after_the_configured_age(
    status: str, attempts: int, age: timedelta, due: bool
) -> None:
    row = pd.Series(
        {
            "mode": "live",
            "status": status,
            "attempts": attempts,
            "first_attempt_at": NOW - age,
            "created_at": NOW - age,
        }
    )
    assert needs_confirmation(row, now=NOW, confirm_after=timedelta(hours=1)) is due


class CrashAfterSend:
    """Wraps a real sender and dies after Stripe answered, before the ledger is written."""

    def __init__(self, inner: MeterEventSender) -> None:
        self.inner = inner
        self.live = inner.live
        self.event_name = inner.event_name

    def send_meter_event(self, **kwargs: object) -> SendOutcome:
        self.inner.send_meter_event(**kwargs)  # type: ignore[arg-type]
        raise SystemExit("crash between send and ledger write")

    def cancel_meter_event(self, **kwargs: object) -> SendOutcome:
        return self.inner.cancel_meter_event(**kwargs)  # type: ignore[arg-type]

    def meter_event_total(self, **kwargs: object) -> int | None:
        return self.inner.meter_event_total(**kwargs)  # type: ignore[arg-type]


def test_crash_between_send_and_ledger_write_then_rerun_is_one_event(
    wh: Warehouse, fake: FakeStripe
) -> None:
    sender = stripe_resource(fake).sender()
    with pytest.raises(SystemExit):
        report_overage(wh, charges({"acme": 700}), CrashAfterSend(sender), now=NOW)
    assert ledger_of(wh)["status"].tolist() == ["intended"]
    assert len(fake.state.events) == 1
    report_overage(wh, charges({"acme": 700}), sender, now=at(fake, NOW + timedelta(minutes=5)))
    assert fake.totals_by_customer() == {"cus_acme": 700}
    assert len(fake.state.events) == 1
    ledger = ledger_of(wh)
    assert ledger["status"].tolist() == ["sent"]
    assert fake.state.requests[-1]["key"] == ledger["identifier"].iloc[0]


@pytest.mark.parametrize("fault", ["429", "hang"])
def test_rate_limits_and_timeouts_are_retried(wh: Warehouse, fake: FakeStripe, fault: str) -> None:
    fake.fail_next(fault, times=2)
    summary = report_overage(wh, charges({"acme": 42}), stripe_resource(fake).sender(), now=NOW)
    assert summary.sent == 1
    assert fake.totals_by_customer() == {"cus_acme": 42}
    assert fake.meter_event_posts() == 3


def test_restatement_up_adds_exactly_the_difference(wh: Warehouse, fake: FakeStripe) -> None:
    sender = stripe_resource(fake).sender()
    report_overage(wh, charges({"acme": 1_000}), sender, now=NOW)
    report_overage(wh, charges({"acme": 1_250}), sender, now=at(fake, NOW + timedelta(hours=2)))
    values = sorted(int(e["payload"]["value"]) for e in fake.live_events())
    assert values == [250, 1_000]
    assert fake.totals_by_customer() == {"cus_acme": 1_250}


def test_restatement_down_inside_24h_cancels_and_tops_up(wh: Warehouse, fake: FakeStripe) -> None:
    sender = stripe_resource(fake).sender()
    report_overage(wh, charges({"acme": 600}), sender, now=NOW)
    report_overage(wh, charges({"acme": 1_000}), sender, now=at(fake, NOW + timedelta(hours=1)))
    two_hours = at(fake, NOW + timedelta(hours=2))
    summary = report_overage(wh, charges({"acme": 700}), sender, now=two_hours)
    assert summary.cancelled == 1
    assert fake.totals_by_customer() == {"cus_acme": 700}
    assert all(int(e["payload"]["value"]) > 0 for e in fake.state.events.values())
    assert ledger_of(wh)["status"].tolist() == ["sent", "cancelled", "sent"]
    assert summary.new_pending_credits.empty


def test_restatement_down_after_24h_sends_nothing_negative_and_records_credit(
    wh: Warehouse, fake: FakeStripe
) -> None:
    sender = stripe_resource(fake).sender()
    report_overage(wh, charges({"acme": 1_000}), sender, now=NOW)
    later = at(fake, NOW + timedelta(days=2))
    posts = fake.meter_event_posts()
    summary = report_overage(wh, charges({"acme": 800}), sender, now=later)
    assert fake.meter_event_posts() == posts
    assert fake.totals_by_customer() == {"cus_acme": 1_000}
    [credit] = summary.new_pending_credits.to_dict("records")
    assert (credit["kind"], credit["status"], credit["value_cents"]) == (
        "pending_credit",
        "pending_credit",
        200,
    )
    # Re-running changes nothing; a deeper cut replaces the credit; a rise consumes it first.
    again = report_overage(wh, charges({"acme": 800}), sender, now=later)
    assert again.new_pending_credits.empty
    deeper = report_overage(wh, charges({"acme": 700}), sender, now=later)
    assert deeper.new_pending_credits["value_cents"].tolist() == [300]
    report_overage(wh, charges({"acme": 1_100}), sender, now=later)
    assert fake.totals_by_customer() == {"cus_acme": 1_100}
    ledger = ledger_of(wh)
    assert ledger[ledger["kind"].eq("pending_credit")]["status"].tolist() == [
        "credit_superseded",
        "credit_superseded",
    ]


def test_resolved_credit_counts_against_reported_and_reconciles(
    wh: Warehouse, fake: FakeStripe
) -> None:
    sender = stripe_resource(fake).sender()
    report_overage(wh, charges({"acme": 1_000}), sender, now=NOW)
    later = at(fake, NOW + timedelta(days=2))
    summary = report_overage(wh, charges({"acme": 900}), sender, now=later)
    recon = reconcile_period(ledger_of(wh), charges({"acme": 900}), "2026-09", "live")
    assert not recon["ok"].all()
    assert recon["pending_credit_cents"].tolist() == [100]
    resolve_pending_credit(wh, summary.new_pending_credits["identifier"].iloc[0], now=later)
    recon = reconcile_period(ledger_of(wh), charges({"acme": 900}), "2026-09", "live")
    assert recon["ok"].all()
    assert recon["reported_cents"].tolist() == [900]
    report_overage(wh, charges({"acme": 900}), sender, now=later)
    assert fake.totals_by_customer() == {"cus_acme": 1_000}  # nothing more sent


def test_reconciliation_flags_unconfirmed_and_mismatched(wh: Warehouse, fake: FakeStripe) -> None:
    fake.reject_customer("cus_beacon")
    report_overage(
        wh, charges({"acme": 300, "beacon": 50}), stripe_resource(fake).sender(), now=NOW
    )
    recon = reconcile_period(ledger_of(wh), charges({"acme": 301, "beacon": 50}), "2026-09", "live")
    by_tenant = recon.set_index("tenant_id")
    assert by_tenant.loc["acme", "difference_cents"] == -1
    assert by_tenant.loc["beacon", "unconfirmed_cents"] == 50
    assert not by_tenant["ok"].any()


def test_dry_run_records_what_would_be_sent(wh: Warehouse, fake: FakeStripe) -> None:
    sender = stripe_resource(fake, api_key="").sender()
    for _ in range(3):
        summary = report_overage(wh, charges({"acme": 321}), sender, now=NOW)
    assert fake.state.requests == []
    ledger = ledger_of(wh)
    assert ledger[["status", "mode", "value_cents"]].values.tolist() == [
        ["dry_run", "dry_run", 321]
    ]
    assert summary.dry_run == 0  # nothing new on the third run
    recon = reconcile_period(ledger, charges({"acme": 321}), "2026-09", "dry_run")
    assert recon["ok"].all()


def test_closed_periods_are_not_billed_again(wh: Warehouse, fake: FakeStripe) -> None:
    sender = stripe_resource(fake).sender()
    report_overage(wh, charges({"acme": 100}), sender, now=NOW)
    recon = reconcile_period(ledger_of(wh), charges({"acme": 100}), "2026-09", "live")
    close_period(wh, recon, now=NOW)
    report_overage(wh, charges({"acme": 150}), sender, now=NOW)
    assert fake.totals_by_customer() == {"cus_acme": 100}


@pytest.mark.parametrize(
    ("period_end", "expected"),
    [
        (datetime(2026, 10, 1, tzinfo=UTC), NOW),
        (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 8, 31, 23, 59, 59, tzinfo=UTC)),
        (datetime(2026, 8, 1, tzinfo=UTC), None),
    ],
)
def test_event_timestamp_stays_in_period_and_stripe_window(
    period_end: datetime, expected: datetime | None
) -> None:
    assert event_timestamp(period_end, NOW) == expected


def test_identifier_is_stable_and_short() -> None:
    assert make_identifier("acme", "2026-09", 3) == "cp-acme-2026-09-00003"
    assert len(make_identifier("x" * 200, "2026-09", 3)) <= 100
