"""Protects the email channel's wire: real smtplib against a real SMTP server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cost_pipeline.lib.messages import email_body, email_subject, message_id
from cost_pipeline.lib.outbox import SendError
from cost_pipeline.resources.email import EmailResource
from cost_pipeline_tests.fakes.smtp import FakeSmtp

KEY = "pro1:2026-10:budget_threshold:90"
BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "Budget 90% reached — Pro One"}},
    {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": "*Spend vs budget*\n$279.00 / $310.00 (90.0%)"}],
    },
    {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "<http://ui.test/assets/budget_status|in Dagster>"}
        ],
    },
]


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    fake = FakeSmtp().start()
    try:
        yield fake
    finally:
        fake.stop()


def _email(fake: FakeSmtp, **kwargs: object) -> EmailResource:
    return EmailResource(
        host=fake.host,
        port=fake.port,
        security="none",
        from_address="alerts@costs.example",
        timeout_seconds=1,
        **kwargs,
    )


def _send(resource: EmailResource, key: str = KEY) -> str | None:
    return resource.send(
        to=["finops@example.com", "cfo@example.com"],
        subject=email_subject("Budget 90% reached: Pro One has spent $279.00", BLOCKS),
        body=email_body("Budget 90% reached: Pro One has spent $279.00", BLOCKS, fact_key=key),
        fact_key=key,
    )


def test_an_alert_is_one_plain_text_message_with_a_message_id_stable_per_alert(smtp) -> None:
    first = _send(_email(smtp))
    again = _send(_email(smtp))
    other = _send(_email(smtp), key="pro1:2026-10:budget_threshold:100")
    assert first == again == message_id(KEY, "costs.example") != other
    received = smtp.messages[0]
    assert received.rcpt_tos == ["finops@example.com", "cfo@example.com"]
    assert received.mail_from == "alerts@costs.example"
    message = received.message
    assert message["Subject"] == "[Cost alert] Budget 90% reached — Pro One"
    assert message["Message-ID"] == first and message["X-Cost-Pipeline-Alert-Key"] == KEY
    body = message.get_content()
    assert "Spend vs budget: $279.00 / $310.00 (90.0%)" in body
    assert "in Dagster (http://ui.test/assets/budget_status)" in body
    assert f"Alert key: {KEY}" in body


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login_uses_the_configured_credentials() -> None:
    fake = FakeSmtp(credentials=("relay-user", "s3cret")).start()
    try:
        assert _send(_email(fake, username="relay-user", password="s3cret"))
        with pytest.raises(SendError) as bad:
            _send(_email(fake, username="relay-user", password="wrong"))
        assert not bad.value.retryable  # 535: wrong credentials do not fix themselves
        assert "s3cret" not in str(bad.value) and "wrong" not in str(bad.value)
    finally:
        fake.stop()
    assert len(fake.messages) == 1


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [("451 4.3.0 Try again later", True), ("554 5.6.0 Message rejected", False)],
)
def test_a_refusal_is_retried_only_when_transient(smtp, reply: str, retryable: bool) -> None:
    smtp.refuse(1, reply)
    with pytest.raises(SendError) as exc:
        _send(_email(smtp))
    assert exc.value.retryable is retryable
    assert reply.split()[0] in str(exc.value)
    assert smtp.messages == []


def test_refused_recipients_are_permanent(smtp) -> None:
    smtp.refuse_recipients("550 5.1.1 No such user")
    with pytest.raises(SendError) as exc:
        _send(_email(smtp))
    assert not exc.value.retryable and "550" in str(exc.value)


def test_a_timeout_or_no_server_is_retryable(smtp) -> None:
    smtp.stall_before_accept(1, seconds=2)
    with pytest.raises(SendError) as timed_out:
        _send(_email(smtp))
    assert timed_out.value.retryable
    nobody = EmailResource(host="127.0.0.1", port=1, security="none", timeout_seconds=1)
    with pytest.raises(SendError) as refused:
        _send(nobody)
    assert refused.value.retryable
    assert smtp.messages == []


def test_without_a_host_it_is_a_dry_run(smtp) -> None:
    resource = EmailResource()
    assert resource.dry_run and _send(resource) is None
    assert smtp.sessions == 0
