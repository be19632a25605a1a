"""Protects the alert outbox: each fact sent once across re-runs, outages, crashes; digests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.defs.alerts.delivery import drain
from cost_pipeline.lib.budgets import alert_facts
from cost_pipeline.lib.config import parse_config
from cost_pipeline.lib.slack_messages import budget_alerts, digest_message
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.store import outbox
from cost_pipeline.store.spend import evaluate_day
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes.slack import FakeSlack

T0 = datetime(2026, 10, 5, 12, tzinfo=UTC)
CONFIG = parse_config(
    {
        "tiers": {"pro": {"name": "Pro", "included_usage_usd": 200}},
        "alerts": {"digest_after": 10, "dagster_ui_url": "http://dagster.test"},
        "tenants": [
            {
                "id": "pro1",
                "name": "Pro One",
                "tier": "pro",
                "timezone": "America/New_York",
                "slack_channel": "#pro1",
                "budget": {"monthly_usd": 310},
            },
            {"id": "pro2", "name": "Pro Two", "tier": "pro"},
        ],
    }
)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def wh(warehouse: Warehouse) -> Warehouse:
    """The warehouse on SQLite and on Postgres (conftest's `warehouse`)."""
    return warehouse


def _drain(
    wh: Warehouse, fake: FakeSlack, now: datetime, *, timeout: int = 15
) -> outbox.DrainResult:
    slack = SlackResource(bot_token=fake.token, base_url=fake.base_url, timeout_seconds=timeout)
    return drain(
        wh,
        lambda m: slack.post_message(
            channel=m.channel, text=m.text, blocks=m.blocks, metadata=m.metadata
        ),
        now=now,
        dry_run=slack.dry_run,
        digest_after=10,
        build_digest=digest_message,
        find=lambda ch, oldest, keys: slack.find_sent(channel=ch, oldest=oldest, keys=keys),
    )


def _alerts(n: int, kind: str = "anomaly") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenant_id": "pro2",
            "period": "2026-10",
            "kind": kind,
            "ref": [f"r{i}" for i in range(n)],
            "day": date(2026, 10, 5),
            "channel": "#cost-alerts",
            "text": [f"alert {i}" for i in range(n)],
            "blocks": "[]",
        }
    )


def _statuses(wh: Warehouse) -> dict[str, str]:
    df = wh.read(outbox.ALERT_OUTBOX)
    return dict(zip(df["alert_key"], df["status"], strict=True))


def test_each_crossing_of_a_month_is_received_once_across_a_rerun(wh, fake_slack) -> None:
    # pro1 spends $10 a (UTC) day against $310: 50 % on day 16, 75 % on 24, 90 % on 28, 100 % on 31.
    days = [date(2026, 10, d) for d in range(1, 32)]
    wh.append(
        DAILY_COST_SUMMARY,
        pd.DataFrame(
            {"day": days, "tenant_id": "pro1", "cost_category": "cloud", "cost_usd": 10.0}
        ).assign(requests=0, input_tokens=0, output_tokens=0, unpriced_requests=0),
    )
    for _ in range(2):  # the whole month, then a re-run of the whole month
        for day in days:
            status = evaluate_day(wh, CONFIG, day)
            facts = alert_facts(status)
            facts = facts[facts["kind"] == "budget_threshold"]
            outbox.enqueue(wh, budget_alerts(status, facts, CONFIG), now=T0)
            _drain(wh, fake_slack, T0)
    pro1 = [m for m in fake_slack.messages if m.channel == "#pro1"]
    assert [m.text.split(":")[0] for m in pro1] == [
        f"Budget {t}% reached" for t in (50, 75, 90, 100)
    ]
    first = pro1[0]
    assert "$160.00 of $310.00 budget (51.6%)" in first.text
    assert "http://dagster.test/assets/budget_status?partition=2026-10-16" in str(first.blocks)
    assert "cloud" in str(first.blocks)  # a top driver


def test_fifty_then_ninety_in_one_evaluation_sends_only_ninety(wh, fake_slack) -> None:
    alerts = _alerts(2, kind="budget_threshold").assign(ref=["50", "90"])
    result = outbox.enqueue(wh, alerts, now=T0)
    assert result.inserted == ["pro2:2026-10:budget_threshold:90"]
    # A stale pending 50 % is superseded when 90 % arrives before it was sent.
    outbox.enqueue(wh, _alerts(1, kind="budget_threshold").assign(ref="75", tenant_id="x"), now=T0)
    outbox.enqueue(wh, _alerts(1, kind="budget_threshold").assign(ref="90", tenant_id="x"), now=T0)
    assert _statuses(wh)["x:2026-10:budget_threshold:75"] == "superseded"
    assert outbox.enqueue(wh, alerts, now=T0).inserted == []
    _drain(wh, fake_slack, T0)
    assert sorted(m.text for m in fake_slack.messages) == ["alert 0", "alert 1"]  # x 90, pro2 90
    assert sorted(_statuses(wh).values()) == ["sent", "sent", "superseded"]


def test_slack_down_for_two_ticks_then_up_delivers_every_alert_once(wh, fake_slack) -> None:
    outbox.enqueue(wh, _alerts(3), now=T0)
    fake_slack.down_for(2)
    first = _drain(wh, fake_slack, T0)
    assert first.sent == [] and len(first.failed) == 3
    # Not due yet: backoff keeps the next tick from hammering Slack.
    assert _drain(wh, fake_slack, T0 + timedelta(seconds=5)).failed == []
    second = _drain(wh, fake_slack, T0 + timedelta(minutes=2))
    assert second.sent == []
    third = _drain(wh, fake_slack, T0 + timedelta(minutes=10))
    assert len(third.sent) == 3
    assert sorted(m.text for m in fake_slack.messages) == ["alert 0", "alert 1", "alert 2"]
    assert _drain(wh, fake_slack, T0 + timedelta(hours=2)).sent == []
    row = wh.read(outbox.ALERT_OUTBOX).set_index("ref").loc["r0"]
    assert (row["status"], row["attempts"]) == ("sent", 2)


def test_a_failed_send_gives_up_after_max_attempts_and_permanent_errors_at_once(
    wh, fake_slack
) -> None:
    outbox.enqueue(wh, _alerts(1), now=T0)
    fake_slack.fail_with("channel_not_found")
    _drain(wh, fake_slack, T0)
    row = wh.read(outbox.ALERT_OUTBOX).iloc[0]
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "channel_not_found" in row["last_error"]


def test_fifty_alerts_in_one_tick_arrive_as_one_digest(wh, fake_slack) -> None:
    outbox.enqueue(wh, _alerts(50), now=T0)
    result = _drain(wh, fake_slack, T0)
    assert (result.messages, result.digests, len(result.sent)) == (1, 1, 50)
    (message,) = fake_slack.messages
    assert message.text.startswith("Cost alerts: 50 alerts")
    assert "alert 49" in str(message.blocks)
    assert set(_statuses(wh).values()) == {"sent"}


def test_a_crash_after_claim_is_retried_after_the_lease(wh, fake_slack) -> None:
    outbox.enqueue(wh, _alerts(1), now=T0)
    assert len(outbox.claim(wh, now=T0)) == 1  # the run dies here
    assert _drain(wh, fake_slack, T0 + timedelta(minutes=1)).sent == []
    assert len(_drain(wh, fake_slack, T0 + timedelta(minutes=20)).sent) == 1
    assert len(fake_slack.messages) == 1


def test_dry_run_records_dry_run_once(wh) -> None:
    slack = SlackResource(bot_token=None, default_channel="#a")

    def send(m: outbox.Outgoing) -> str | None:
        return slack.post_message(
            channel=m.channel, text=m.text, blocks=m.blocks, metadata=m.metadata
        )

    for _ in range(2):
        outbox.enqueue(wh, _alerts(2), now=T0)
        drain(wh, send, now=T0, dry_run=True, digest_after=10, build_digest=digest_message)
    assert sorted(_statuses(wh).values()) == ["dry_run", "dry_run"]


def test_an_anomaly_episode_whose_start_moves_is_one_message() -> None:
    """A step's estimated start moves by a day or two as days are added: the same tenant's
    anomaly starting within a week of an alerted one is the same episode; another tenant's,
    or one a month later, is not."""
    from cost_pipeline.lib.outbox import new_episodes

    alerted = pd.DataFrame(
        {"tenant_id": ["a"], "kind": ["anomaly"], "ref": ["incident@2026-11-16"]}
    )
    facts = pd.DataFrame(
        {
            "tenant_id": ["a", "a", "b", "b", "a"],
            "kind": ["anomaly", "anomaly", "anomaly", "anomaly", "budget_threshold"],
            "ref": [
                "incident@2026-11-18",
                "incident@2026-12-20",
                "incident@2026-11-17",
                "incident@2026-11-19",
                "90",
            ],
        }
    )
    assert new_episodes(facts, alerted).tolist() == [False, True, True, False, True]


def test_a_new_spike_days_after_an_alerted_one_is_its_own_message() -> None:
    """A spike starts on its own day for sure: only a shift, whose start is an estimate before
    its day, merges with an alerted episode of the same week."""
    from cost_pipeline.lib.outbox import new_episodes

    alerted = pd.DataFrame(
        {"tenant_id": ["a"], "kind": ["anomaly"], "ref": ["incident@2026-11-10"]}
    )
    facts = pd.DataFrame(
        {
            "tenant_id": ["a", "a"],
            "kind": ["anomaly", "anomaly"],
            "ref": ["incident@2026-11-16", "incident@2026-11-12"],
            "day": ["2026-11-16", "2026-11-14"],
            "since_day": [None, "2026-11-12"],  # a spike on the 16th; a shift seen on the 14th
        }
    )
    assert new_episodes(facts, alerted).tolist() == [True, False]
