"""Protects the Stripe wire: real StripeClient vs the stateful fake, retries, dedup, dry-run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cost_pipeline.resources.stripe_billing import StripeBillingResource
from cost_pipeline_tests.fakes.stripe import ADJUSTMENTS, FakeStripe, running

SECRET = "sk_test_do_not_leak_123"


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with running(hang_seconds=0.6) as server:
        yield server


def resource(fake: FakeStripe, **overrides: object) -> StripeBillingResource:
    settings: dict[str, object] = {
        "api_key": SECRET,
        "api_base": fake.url,
        "meter_event_name": "overage_cents",
        "max_network_retries": 3,
        "backoff_seconds": 0.01,
        "timeout_seconds": 0.3,
    }
    settings.update(overrides)
    return StripeBillingResource(**settings)  # type: ignore[arg-type]


def send(res: StripeBillingResource, identifier: str = "cp-acme-2026-09-00001", value: int = 1234):
    return res.sender().send_meter_event(
        identifier=identifier, customer="cus_acme", value=value, timestamp=1_790_000_000
    )


@pytest.fixture(autouse=True)
def _fixed_clock(fake: FakeStripe) -> None:
    fake.clock = lambda: 1_790_000_100.0


def test_meter_event_carries_identifier_as_idempotency_key_and_value_as_string(
    fake: FakeStripe,
) -> None:
    outcome = send(resource(fake))
    assert outcome.status == "sent"
    [event] = fake.live_events()
    assert event["identifier"] == "cp-acme-2026-09-00001"
    assert event["payload"] == {"stripe_customer_id": "cus_acme", "value": "1234"}
    assert event["event_name"] == "overage_cents"
    assert fake.state.requests[0]["key"] == "cp-acme-2026-09-00001"


def test_same_identifier_twice_is_one_event_and_reported_as_sent(fake: FakeStripe) -> None:
    res = resource(fake)
    assert send(res).status == "sent"
    fake.forget_idempotency_keys()  # past 24 h: only the identifier dedups now
    assert send(res).status == "sent"
    assert fake.totals_by_customer() == {"cus_acme": 1234}


def test_500_after_recording_is_replayed_unconfirmed_then_confirmed_by_identifier(
    fake: FakeStripe,
) -> None:
    res = resource(fake)
    fake.fail_next("500_after_record")
    first = send(res)
    # Stripe replays the stored 500 for the key, so every retry sees it: unknown outcome.
    assert first.status == "unconfirmed"
    assert "500" in (first.error or "")
    assert len(fake.live_events()) == 1
    fake.forget_idempotency_keys()
    assert send(res).status == "sent"
    assert fake.totals_by_customer() == {"cus_acme": 1234}


@pytest.mark.parametrize("fault", ["429", "503", "hang"])
def test_transient_faults_are_retried_into_exactly_one_event(fake: FakeStripe, fault: str) -> None:
    fake.fail_next(fault, times=2)
    assert send(resource(fake)).status == "sent"
    assert fake.meter_event_posts() == 3
    assert fake.totals_by_customer() == {"cus_acme": 1234}


def test_429_waits_for_retry_after(fake: FakeStripe) -> None:
    import time

    fake.retry_after = "0.3"
    fake.fail_next("429")
    start = time.monotonic()
    assert send(resource(fake)).status == "sent"
    assert time.monotonic() - start >= 0.3


def test_retries_run_out_as_unconfirmed_not_as_a_crash(fake: FakeStripe) -> None:
    fake.fail_next("503", times=10)
    outcome = send(resource(fake, max_network_retries=2))
    assert outcome.status == "unconfirmed"
    assert fake.meter_event_posts() == 3
    assert fake.live_events() == []


def test_rejected_request_fails_without_leaking_the_key(fake: FakeStripe) -> None:
    fake.reject_customer("cus_acme")
    outcome = send(resource(fake))
    assert outcome.status == "failed"
    assert "No such customer" in (outcome.error or "")
    assert SECRET not in (outcome.error or "")


def test_cancel_adjustment_within_window_and_refused_after(fake: FakeStripe) -> None:
    res = resource(fake)
    sender = res.sender()
    send(res, "cp-acme-2026-09-00001")
    send(res, "cp-acme-2026-09-00002", 66)
    assert sender.cancel_meter_event(identifier="cp-acme-2026-09-00002").status == "sent"
    assert fake.totals_by_customer() == {"cus_acme": 1234}
    assert fake.state.requests[-1]["path"] == ADJUSTMENTS
    assert fake.state.requests[-1]["key"] == "cancel-cp-acme-2026-09-00002"
    fake.clock = lambda: 1_790_000_100.0 + 25 * 3600
    refused = sender.cancel_meter_event(identifier="cp-acme-2026-09-00001")
    assert refused.status == "failed"
    assert fake.totals_by_customer() == {"cus_acme": 1234}


def test_without_key_the_resource_dry_runs_and_sends_nothing(fake: FakeStripe) -> None:
    res = resource(fake, api_key="")
    assert res.dry_run
    sender = res.sender()
    assert sender.live is False
    assert send(res).status == "dry_run"
    assert fake.state.requests == []


def test_stored_500_is_replayed_and_flagged_so_the_ledger_confirms(fake: FakeStripe) -> None:
    res = resource(fake)
    fake.fail_next("500_stored")
    outcome = send(res)
    assert (outcome.status, outcome.replayed) == ("unconfirmed", True)
    assert fake.meter_event_posts() == 4  # every retry got the stored 500 back
    assert fake.live_events() == []
    sender = res.sender()
    window = {"start": 1_789_999_980, "end": 1_790_000_040}  # the event's minute
    assert sender.meter_event_total(customer="cus_acme", **window) == 0
    fresh = sender.send_meter_event(
        identifier="cp-acme-2026-09-00001",
        customer="cus_acme",
        value=1234,
        timestamp=1_790_000_000,
        idempotency_key="cp-acme-2026-09-00001-r2",
    )
    assert (fresh.status, fresh.replayed) == ("sent", False)
    assert sender.meter_event_total(customer="cus_acme", **window) == 1234


def test_fresh_key_with_a_used_identifier_is_deduplicated(fake: FakeStripe) -> None:
    res = resource(fake)
    assert send(res).status == "sent"
    again = res.sender().send_meter_event(
        identifier="cp-acme-2026-09-00001",
        customer="cus_acme",
        value=1234,
        timestamp=1_790_000_000,
        idempotency_key="cp-acme-2026-09-00001-r9",
    )
    assert again.status == "sent"  # Stripe refused a second event with that identifier
    assert fake.totals_by_customer() == {"cus_acme": 1234}


def test_event_summaries_sum_per_customer_meter_and_window(fake: FakeStripe) -> None:
    res = resource(fake)
    sender = res.sender()
    send(res, "cp-acme-2026-09-00001", 100)
    send(res, "cp-acme-2026-09-00002", 23)
    sender.send_meter_event(
        identifier="cp-beta-2026-09-00001", customer="cus_beta", value=5, timestamp=1_790_000_000
    )
    sender.send_meter_event(
        identifier="cp-acme-2026-09-00003", customer="cus_acme", value=7, timestamp=1_789_999_000
    )
    sender.cancel_meter_event(identifier="cp-acme-2026-09-00002")
    window = {"start": 1_789_999_980, "end": 1_790_000_040}
    assert sender.meter_event_total(customer="cus_acme", **window) == 100
    assert sender.meter_event_total(customer="cus_beta", **window) == 5
    [request] = fake.summary_requests()[:1]
    assert request["path"] == "/v1/billing/meters/mtr_0002/event_summaries"  # "overage_cents"
    assert request["params"] == {
        "customer": "cus_acme",
        "start_time": "1789999980",
        "end_time": "1790000040",
    }


def test_unavailable_summary_is_none_not_zero(fake: FakeStripe) -> None:
    sender = resource(fake, max_network_retries=0, meter_id="mtr_missing").sender()
    assert sender.meter_event_total(customer="cus_acme", start=0, end=60) is None
