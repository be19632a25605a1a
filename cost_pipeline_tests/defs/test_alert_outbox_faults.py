"""Protects exactly-once Slack delivery across lost answers, crashes and expired leases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import time_machine
import yaml

from cost_pipeline.catalog import ALERT_OUTBOX
from cost_pipeline.defs.alerts.jobs import alert_delivery_job
from cost_pipeline.defs.alerts.sensors import alert_outbox_sensor
from cost_pipeline.lib.outbox import message_metadata
from cost_pipeline.resources.email import EmailResource
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.resources.webhook import WebhookResource
from cost_pipeline.store import outbox
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes.slack import FakeSlack

T0 = datetime(2026, 10, 5, 12, tzinfo=UTC)
CHANNEL = "#cost-alerts"
CONFIG = {
    "tiers": {"pro": {"name": "Pro", "included_usage_usd": 200}},
    "alerts": {"default_channel": CHANNEL, "dagster_ui_url": "http://ui.test"},
    "tenants": [{"id": "pro1", "name": "Pro One", "tier": "pro"}],
}


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def env(tmp_path, fake_slack: FakeSlack, warehouse_url: str) -> dict:
    """Resources on each engine; Slack answers within 1 s or the client times out."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return {
        "warehouse": Warehouse(warehouse_url),
        "resources": {
            "warehouse": WarehouseResource(url=warehouse_url),
            "cost_config": CostConfigResource(path=str(path)),
            "slack": SlackResource(
                bot_token=fake_slack.token, base_url=fake_slack.base_url, timeout_seconds=1
            ),
            "email": EmailResource(),
            "webhook": WebhookResource(),
        },
    }


def _enqueue(wh: Warehouse, ref: str) -> str:
    alert = pd.DataFrame(
        [
            {
                "tenant_id": "pro1",
                "period": "2026-10",
                "kind": "budget_threshold",
                "ref": ref,
                "day": date(2026, 10, 5),
                "channel": CHANNEL,
                "text": f"Budget {ref}% reached",
                "blocks": "[]",
            }
        ]
    )
    (key,) = outbox.enqueue(wh, alert, now=T0).inserted
    return key


def _evaluate(instance: dg.DagsterInstance, env: dict) -> dg.RunRequest | None:
    """One outbox-sensor evaluation, then the run it requests (as the daemon would)."""
    context = dg.build_sensor_context(
        instance=instance, resources={"warehouse": env["resources"]["warehouse"]}
    )
    result = alert_outbox_sensor(context)
    if isinstance(result, dg.SkipReason):
        return None
    (request,) = result.run_requests
    run = alert_delivery_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources=env["resources"]
    )
    assert run.success
    return request


def _row(wh: Warehouse, key: str) -> pd.Series:
    return wh.read(ALERT_OUTBOX, where={"alert_key": [key]}).iloc[0]


def test_an_accepted_message_whose_answer_timed_out_is_not_sent_again(
    env, fake_slack: FakeSlack, dagster_instance: dg.DagsterInstance
) -> None:
    wh = env["warehouse"]
    with time_machine.travel(T0, tick=True) as clock:
        key = _enqueue(wh, "90")
        fake_slack.accept_then_stall(1, seconds=3)
        assert _evaluate(dagster_instance, env) is not None  # Slack stores it; the client times out
        assert len(fake_slack.messages) == 1
        assert (_row(wh, key)["status"], _row(wh, key)["attempts"]) == ("pending", 1)
        clock.move_to(T0 + timedelta(minutes=2))  # past the first backoff
        assert _evaluate(dagster_instance, env) is not None
        assert _evaluate(dagster_instance, env) is None
    (message,) = fake_slack.messages
    assert message.metadata == message_metadata([key])
    row = _row(wh, key)
    assert (row["status"], row["slack_ts"]) == ("sent", message.ts)


def test_a_crash_after_slack_accepted_is_recorded_sent_without_a_second_message(
    env, fake_slack: FakeSlack, dagster_instance: dg.DagsterInstance
) -> None:
    wh = env["warehouse"]
    with time_machine.travel(T0, tick=True) as clock:
        key = _enqueue(wh, "90")
        assert len(outbox.claim(wh, now=T0)) == 1
        # The run posts, Slack accepts, and the run dies before recording anything.
        env["resources"]["slack"].post_message(
            channel=CHANNEL, text="Budget 90% reached", metadata=message_metadata([key])
        )
        clock.move_to(T0 + timedelta(minutes=5))
        assert _evaluate(dagster_instance, env) is None  # the claim is still leased
        clock.move_to(T0 + timedelta(minutes=16))
        assert _evaluate(dagster_instance, env) is not None
        assert _evaluate(dagster_instance, env) is None
    (message,) = fake_slack.messages
    row = _row(wh, key)
    assert (row["status"], row["slack_ts"]) == ("sent", message.ts)


def test_a_crash_before_slack_accepted_is_sent_once_after_the_lease(
    env, fake_slack: FakeSlack, dagster_instance: dg.DagsterInstance
) -> None:
    wh = env["warehouse"]
    with time_machine.travel(T0, tick=True) as clock:
        fake_slack.channel_id(CHANNEL)  # the channel exists, empty
        key = _enqueue(wh, "90")
        assert len(outbox.claim(wh, now=T0)) == 1  # the run dies before posting
        clock.move_to(T0 + timedelta(minutes=16))
        assert _evaluate(dagster_instance, env) is not None
        assert _evaluate(dagster_instance, env) is None
    (message,) = fake_slack.messages
    assert message.metadata == message_metadata([key])
    # Looked up (name -> id, then history) before it was posted.
    assert fake_slack.methods == ["conversations.list", "conversations.history", "chat.postMessage"]
    row = _row(wh, key)
    assert (row["status"], row["slack_ts"]) == ("sent", message.ts)


def test_an_expired_lease_is_reclaimed_by_the_sensor_alone_and_a_live_one_is_not(
    env, fake_slack: FakeSlack, dagster_instance: dg.DagsterInstance
) -> None:
    wh = env["warehouse"]
    with time_machine.travel(T0, tick=True) as clock:
        dead = _enqueue(wh, "90")
        outbox.claim(wh, now=T0)  # a run that died 16 minutes before the evaluation
        live = _enqueue(wh, "100")
        outbox.claim(wh, now=T0 + timedelta(minutes=10))  # a run still sending
        clock.move_to(T0 + timedelta(minutes=16))
        # No new alert arrives: the sensor requests the run on its own.
        assert _evaluate(dagster_instance, env) is not None
        assert _evaluate(dagster_instance, env) is None
    (message,) = fake_slack.messages
    assert message.text == "Budget 90% reached"
    assert _row(wh, dead)["status"] == "sent"
    assert _row(wh, live)["status"] == "sending"
