"""Protects the signed webhook's wire: real requests/urllib3 against a loopback receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from cost_pipeline.lib.messages import (
    encode_event,
    signature,
    verify_signature,
    webhook_event,
)
from cost_pipeline.lib.outbox import SendError
from cost_pipeline.resources.webhook import WebhookResource
from cost_pipeline_tests.fakes.webhook import FakeWebhookReceiver

KEY = "pro1:2026-10:budget_threshold:90"
FACT = {
    "fact_key": KEY,
    "tenant_id": "pro1",
    "period": "2026-10",
    "kind": "budget_threshold",
    "ref": "90",
    "day": "2026-10-05",
}
EVENT = webhook_event(FACT, text="Budget 90% reached", blocks=[])


@pytest.fixture
def receiver() -> Iterator[FakeWebhookReceiver]:
    fake = FakeWebhookReceiver().start()
    try:
        yield fake
    finally:
        fake.stop()


def _hook(fake: FakeWebhookReceiver, **kwargs: object) -> WebhookResource:
    settings: dict = {
        "url": fake.url,
        "secret": fake.secret,
        "timeout_seconds": 1,
        "max_retries": 2,
        "backoff_seconds": 0.01,
    }
    return WebhookResource(**{**settings, **kwargs})


def test_an_event_is_posted_signed_with_its_id_and_its_json(receiver) -> None:
    assert _hook(receiver).post_event(event=EVENT, event_id=KEY) == KEY
    (request,) = receiver.requests
    assert request.status == 200
    assert request.headers["X-Cost-Pipeline-Event-Id"] == KEY
    assert request.headers["Idempotency-Key"] == KEY
    assert json.loads(request.body) == EVENT == receiver.deliveries[KEY]
    assert EVENT["event_id"] == KEY and EVENT["type"] == "cost_pipeline.alert"
    # The product's own verifier agrees with the receiver's independent check.
    timestamp = request.headers["X-Cost-Pipeline-Timestamp"]
    assert (
        verify_signature(
            receiver.secret,
            timestamp=timestamp,
            signature_header=request.headers["X-Cost-Pipeline-Signature"],
            body=request.body,
            now=time.time(),
        )
        is None
    )


def test_the_signature_rejects_a_changed_body_a_wrong_secret_and_a_replay() -> None:
    body, now = encode_event(EVENT), int(time.time())
    good = signature("s", now, body)

    def verify(secret: str, ts: int, data: bytes, at: float) -> str | None:
        return verify_signature(secret, timestamp=str(ts), signature_header=good, body=data, now=at)

    assert verify("s", now, body, now) is None
    assert verify("s", now, body + b" ", now) == "signature does not match"
    assert verify("other", now, body, now) == "signature does not match"
    assert "tolerance" in str(verify("s", now, body, now + 301))


def test_5xx_within_the_retries_is_delivered_in_the_same_attempt(receiver) -> None:
    receiver.down_for(2, status=502)
    assert _hook(receiver).post_event(event=EVENT, event_id=KEY) == KEY
    assert [r.status for r in receiver.requests] == [502, 502, 200]
    assert list(receiver.deliveries) == [KEY]


def test_5xx_beyond_the_retries_is_a_retryable_failure(receiver) -> None:
    receiver.down_for(3)
    with pytest.raises(SendError) as exc:
        _hook(receiver).post_event(event=EVENT, event_id=KEY)
    assert exc.value.retryable and "503" in str(exc.value)
    assert receiver.deliveries == {}


def test_a_timeout_after_the_receiver_acted_is_retried_and_deduplicated(receiver) -> None:
    receiver.act_then_stall(1, seconds=2)
    assert _hook(receiver).post_event(event=EVENT, event_id=KEY) == KEY
    assert len(receiver.requests) == 2  # urllib3 retried the read timeout with the same id
    assert list(receiver.deliveries) == [KEY]


def test_a_duplicate_answered_409_counts_as_delivered(receiver) -> None:
    receiver.conflict_on_duplicate = True
    hook = _hook(receiver)
    assert hook.post_event(event=EVENT, event_id=KEY) == KEY
    assert hook.post_event(event=EVENT, event_id=KEY) == KEY
    assert [r.status for r in receiver.requests] == [200, 409]


def test_a_wrong_secret_or_none_is_permanent_and_leaks_nothing(receiver) -> None:
    with pytest.raises(SendError) as wrong:
        _hook(receiver, secret="not-the-secret").post_event(event=EVENT, event_id=KEY)
    assert not wrong.value.retryable and "401" in str(wrong.value)
    assert "not-the-secret" not in str(wrong.value) and receiver.url not in str(wrong.value)
    with pytest.raises(SendError) as unsigned:
        _hook(receiver, secret=None).post_event(event=EVENT, event_id=KEY)
    assert not unsigned.value.retryable
    assert receiver.deliveries == {} and len(receiver.requests) == 1


def test_no_receiver_is_retryable_and_no_url_is_a_dry_run(receiver) -> None:
    gone = WebhookResource(url="http://127.0.0.1:1/hook", secret="s", max_retries=0)
    with pytest.raises(SendError) as exc:
        gone.post_event(event=EVENT, event_id=KEY)
    assert exc.value.retryable
    dry = WebhookResource()
    assert dry.dry_run and dry.post_event(event=EVENT, event_id=KEY) is None
