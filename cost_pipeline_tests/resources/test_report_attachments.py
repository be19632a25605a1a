"""Protects files on the wire: a chart uploaded into a Slack thread with slack-sdk's
`files_upload_v2` (once, even when asked again), and an email showing it inline by `cid:`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cost_pipeline.lib.outbox import Attachment, SendError
from cost_pipeline.resources.email import EmailResource
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline_tests.fakes.slack import FakeSlack
from cost_pipeline_tests.fakes.smtp import FakeSmtp

CHART = Attachment("weekly_digest_acme_2026-W41.png", "image/png", b"\x89PNG\r\n-chart", "Chart")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


def _resource(fake: FakeSlack) -> SlackResource:
    return SlackResource(bot_token=fake.token, base_url=fake.base_url, timeout_seconds=2)


def _post(resource: SlackResource) -> str:
    ts = resource.post_message(channel="#costs", text="Weekly cost digest", blocks=[])
    assert ts is not None
    return ts


def test_files_go_into_the_thread_of_their_message_through_the_upload_flow(slack) -> None:
    resource = _resource(slack)
    ts = _post(resource)
    uploaded = resource.attach_files(
        channel="#costs", thread_ts=ts, attachments=[CHART], check_thread=False
    )
    assert uploaded == ["Chart"]
    assert slack.methods[-2:] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    (shared,) = slack.files
    assert (shared.data, shared.filename, shared.channel) == (CHART.data, CHART.filename, "costs")
    (reply,) = slack.thread(ts)
    assert reply.files[0]["title"] == "Chart"
    # Only the digest itself is in the channel's history; the chart is in its thread.
    assert [m.text for m in slack.messages if m.thread_ts is None] == ["Weekly cost digest"]


def test_a_file_the_thread_already_has_is_not_uploaded_again(slack) -> None:
    resource = _resource(slack)
    ts = _post(resource)
    resource.attach_files(channel="#costs", thread_ts=ts, attachments=[CHART], check_thread=False)
    assert resource.attach_files(channel="#costs", thread_ts=ts, attachments=[CHART]) == []
    assert len(slack.files) == 1 and len(slack.thread(ts)) == 1


def test_a_failed_upload_is_a_retryable_send_error_and_leaves_no_file(slack) -> None:
    resource = _resource(slack)
    ts = _post(resource)
    slack.fail_next("files.completeUploadExternal", 1, status=503)
    with pytest.raises(SendError) as failed:
        resource.attach_files(channel="#costs", thread_ts=ts, attachments=[CHART])
    assert failed.value.retryable and slack.files == []
    assert resource.attach_files(channel="#costs", thread_ts=ts, attachments=[CHART]) == ["Chart"]


def test_an_unknown_channel_is_permanent_and_a_dry_run_uploads_nothing(slack) -> None:
    with pytest.raises(SendError) as failed:
        _resource(slack).attach_files(channel="#nowhere", thread_ts="1.0", attachments=[CHART])
    assert not failed.value.retryable
    assert SlackResource().attach_files(channel="#c", thread_ts="1.0", attachments=[CHART]) == []


def test_an_email_shows_its_chart_inline_by_content_id() -> None:
    smtp = FakeSmtp().start()
    try:
        email = EmailResource(
            host=smtp.host, port=smtp.port, security="none", from_address="a@costs.example"
        )
        html = f'<p>Digest</p><img src="cid:{CHART.content_id}">'
        email.send(
            to=["finops@example.com"],
            subject="Weekly cost digest",
            body="Digest (plain text)",
            fact_key="acme:2026-W41:weekly_digest:2026-W41",
            html=html,
            inline=[CHART],
        )
    finally:
        smtp.stop()
    (received,) = smtp.messages
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.get_payload()
    assert plain.get_content().strip() == "Digest (plain text)"
    assert related.get_content_type() == "multipart/related"
    page, image = related.get_payload()
    assert f"cid:{CHART.content_id}" in page.get_content()
    assert image.get_content_type() == "image/png"
    assert image["Content-ID"] == f"<{CHART.content_id}>"
    assert image.get_content() == CHART.data
