"""Protects SlackResource on the wire: 429s, outages, dry-run, message metadata, history lookup."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from cost_pipeline.lib.outbox import EVENT_TYPE, SendError, message_metadata
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline_tests.fakes.slack import FakeSlack


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


def test_posts_blocks_to_the_channel(fake_slack: FakeSlack) -> None:
    slack = SlackResource(bot_token=fake_slack.token, base_url=fake_slack.base_url)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    ts = slack.post_message(channel="#c", text="fallback", blocks=blocks)
    assert ts == fake_slack.messages[0].ts
    assert (fake_slack.messages[0].channel, fake_slack.messages[0].blocks) == ("#c", blocks)


def test_429_retry_after_is_honoured(fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit(1, retry_after=1)
    slack = SlackResource(bot_token=fake_slack.token, base_url=fake_slack.base_url)
    slack.post_message(channel="#c", text="after a 429")
    assert len(fake_slack.calls) == 2
    assert fake_slack.calls[1] - fake_slack.calls[0] >= 1.0
    assert [m.text for m in fake_slack.messages] == ["after a 429"]


def test_outage_is_retryable_and_bad_channel_is_not(fake_slack: FakeSlack) -> None:
    slack = SlackResource(bot_token=fake_slack.token, base_url=fake_slack.base_url)
    fake_slack.down_for(1)
    with pytest.raises(SendError) as down:
        slack.post_message(channel="#c", text="x")
    assert down.value.retryable and "503" in str(down.value)
    fake_slack.fail_with("channel_not_found")
    with pytest.raises(SendError) as missing:
        slack.post_message(channel="#nope", text="x")
    assert not missing.value.retryable
    assert fake_slack.token not in str(missing.value)
    assert fake_slack.messages == []


def test_unreachable_slack_is_retryable() -> None:
    slack = SlackResource(bot_token="xoxb-t", base_url="http://127.0.0.1:9/api/", timeout_seconds=2)
    with pytest.raises(SendError) as exc:
        slack.post_message(channel="#c", text="x")
    assert exc.value.retryable


def test_without_token_it_is_a_dry_run(fake_slack: FakeSlack, caplog) -> None:
    slack = SlackResource(bot_token=None, default_channel="#alerts", base_url=fake_slack.base_url)
    with caplog.at_level("INFO"):
        assert slack.post_message(channel=None, text="would send this") is None
    assert slack.dry_run and fake_slack.calls == []
    assert "would send this" in caplog.text and "#alerts" in caplog.text


T0 = datetime(2026, 10, 5, 12, tzinfo=UTC)


@time_machine.travel(T0, tick=True)
def test_metadata_is_posted_and_found_across_history_pages(fake_slack: FakeSlack) -> None:
    slack = SlackResource(
        bot_token=fake_slack.token, base_url=fake_slack.base_url, history_page_size=2
    )
    for i in range(5):
        slack.post_message(channel="#c", text=f"m{i}", metadata=message_metadata([f"k{i}"]))
    slack.post_message(channel="#other", text="x", metadata=message_metadata(["k9"]))
    assert fake_slack.messages[0].metadata == {
        "event_type": EVENT_TYPE,
        "event_payload": {"alert_key": "k0"},
    }
    since = datetime.now(UTC) - timedelta(minutes=5)
    found = slack.find_sent(channel="#c", oldest=since, keys=["k0", "k4", "k9"])
    # k0 is on the third page (newest first); k9 is in another channel.
    assert found == {"k0": fake_slack.messages[0].ts, "k4": fake_slack.messages[4].ts}
    assert fake_slack.methods.count("conversations.history") == 3
    assert slack.find_sent(channel="#c", oldest=datetime.now(UTC), keys=["k0"]) == {}


@time_machine.travel(T0, tick=True)
def test_history_lookup_honours_429_and_reports_500_as_retryable(fake_slack: FakeSlack) -> None:
    slack = SlackResource(bot_token=fake_slack.token, base_url=fake_slack.base_url)
    slack.post_message(channel="#c", text="m", metadata=message_metadata(["a", "b"]))
    since = datetime.now(UTC) - timedelta(minutes=5)
    fake_slack.rate_limit(1, retry_after=1)
    assert slack.find_sent(channel="#c", oldest=since, keys=["b"]) == {
        "b": fake_slack.messages[0].ts
    }
    fake_slack.down_for(3, status=500)  # the client retries nothing but 429s
    with pytest.raises(SendError) as exc:
        slack.find_sent(channel="#c", oldest=since, keys=["a"])
    assert exc.value.retryable and "500" in str(exc.value)
    fake_slack.down_for(1, status=500)
    with pytest.raises(SendError) as post:
        slack.post_message(channel="#c", text="x")
    assert post.value.retryable
    assert len(fake_slack.messages) == 1
