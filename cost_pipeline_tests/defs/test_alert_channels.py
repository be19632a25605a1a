"""Protects email and webhook delivery through the outbox: routing, dry-run, and what each channel
promises under faults (exactly once at a receiver honouring the event id; email once except when
the server's answer is lost), on SQLite and Postgres."""

from __future__ import annotations

import json
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
from cost_pipeline.lib.messages import message_id, webhook_event
from cost_pipeline.resources.email import EmailResource
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.resources.webhook import WebhookResource
from cost_pipeline.store import outbox
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes.slack import FakeSlack
from cost_pipeline_tests.fakes.smtp import FakeSmtp
from cost_pipeline_tests.fakes.webhook import FakeWebhookReceiver

T0 = datetime(2026, 10, 5, 12, tzinfo=UTC)
FACT = "pro1:2026-10:budget_threshold:90"
CONFIG = {
    "tiers": {"pro": {"name": "Pro", "included_usage_usd": 200}},
    "alerts": {"default_channel": "#cost-alerts", "dagster_ui_url": "http://ui.test"},
    "tenants": [
        {"id": "pro1", "name": "Pro One", "tier": "pro"},
        {"id": "pro2", "name": "Pro Two", "tier": "pro", "slack_channel": "#pro2"},
    ],
    "channels": {
        "email_to": ["finops@example.com"],
        "routes": [
            {"kinds": ["run_failure"], "channels": ["slack", "webhook"]},
            {"kinds": ["anomaly"], "channels": ["slack", "email", "webhook"]},
        ],
        # pro2's alerts go to its own people by email only, never to the shared channels.
        "tenants": {
            "pro2": {"email_to": ["ops@pro2.example"], "routes": [{"channels": ["email"]}]}
        },
    },
}


@pytest.fixture
def fakes() -> Iterator[dict]:
    slack, smtp, hook = FakeSlack().start(), FakeSmtp().start(), FakeWebhookReceiver().start()
    try:
        yield {"slack": slack, "smtp": smtp, "hook": hook}
    finally:
        slack.stop(), smtp.stop(), hook.stop()


@pytest.fixture
def env(tmp_path, fakes: dict, warehouse_url: str) -> dict:
    """Resources on each engine; every channel answers within 1 s or the client times out, and
    the webhook client does not retry within an attempt, so the outbox does."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    smtp, hook = fakes["smtp"], fakes["hook"]
    return {
        "warehouse": Warehouse(warehouse_url),
        "resources": {
            "warehouse": WarehouseResource(url=warehouse_url),
            "cost_config": CostConfigResource(path=str(path)),
            "slack": SlackResource(
                bot_token=fakes["slack"].token, base_url=fakes["slack"].base_url, timeout_seconds=1
            ),
            "email": EmailResource(
                host=smtp.host,
                port=smtp.port,
                security="none",
                from_address="alerts@costs.example",
                timeout_seconds=1,
            ),
            "webhook": WebhookResource(
                url=hook.url, secret=hook.secret, timeout_seconds=1, max_retries=0
            ),
        },
    }


def _enqueue(wh: Warehouse, *transports: str) -> list[str]:
    """One budget fact, routed to `transports` (one row each, enqueued together)."""
    alert = pd.DataFrame(
        [
            {
                "tenant_id": "pro1",
                "period": "2026-10",
                "kind": "budget_threshold",
                "ref": "90",
                "day": date(2026, 10, 5),
                "channel": "finops@example.com" if transport == "email" else transport,
                "text": "Budget 90% reached",
                "blocks": "[]",
                "transport": transport,
            }
            for transport in transports
        ]
    )
    return outbox.enqueue(wh, alert, now=T0).inserted


def _evaluate(instance: dg.DagsterInstance, env: dict) -> bool:
    """One outbox-sensor evaluation, then the run it requests (as the daemon would)."""
    context = dg.build_sensor_context(
        instance=instance, resources={"warehouse": env["resources"]["warehouse"]}
    )
    result = alert_outbox_sensor(context)
    if isinstance(result, dg.SkipReason):
        return False
    (request,) = result.run_requests
    run = alert_delivery_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources=env["resources"]
    )
    assert run.success
    return True


def _row(wh: Warehouse, key: str) -> pd.Series:
    return wh.read(ALERT_OUTBOX, where={"alert_key": [key]}).iloc[0]


def _after_backoff(instance: dg.DagsterInstance, env: dict, clock) -> None:
    """Past the first backoff: the sensor retries once, and then has nothing left to do."""
    clock.move_to(T0 + timedelta(minutes=2))
    assert _evaluate(instance, env)
    assert not _evaluate(instance, env)


# -- routing and dry-run ----------------------------------------------------------------------


def test_each_kind_reaches_the_routed_channels_once_and_a_rerun_sends_nothing(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    facts = [
        {"tenant_id": "__pipeline__", "period": "2026-10", "kind": "run_failure", "ref": "r1",
         "job_name": "daily_cost_job", "error": "boom"},
        {"tenant_id": "pro1", "period": "2026-10", "kind": "anomaly", "ref": "incident@2026-10-04",
         "day": "2026-10-05", "severity": "high", "reason": "LLM spend 4x its usual level"},
        {"tenant_id": "pro2", "period": "2026-10", "kind": "anomaly", "ref": "incident@2026-10-03",
         "day": "2026-10-05", "severity": "critical", "reason": "k8s spend 9x"},
    ]  # fmt: skip
    config = {"ops": {"enqueue_alerts": {"config": {"facts_json": json.dumps(facts)}}}}
    for _ in range(2):
        run = alert_delivery_job.execute_in_process(
            run_config=config, instance=dagster_instance, resources=env["resources"]
        )
        assert run.success
    slack, smtp, hook = fakes["slack"], fakes["smtp"], fakes["hook"]
    assert sorted(m.text.split(" ")[0] for m in slack.messages) == ["HIGH", "Run"]
    assert all(m.channel == "#cost-alerts" for m in slack.messages)
    assert sorted(tuple(m.rcpt_tos) for m in smtp.messages) == [
        ("finops@example.com",),
        ("ops@pro2.example",),
    ]
    pro2 = next(m for m in smtp.messages if m.rcpt_tos == ["ops@pro2.example"])
    assert "k8s spend 9x" in pro2.message.get_content()
    assert sorted(hook.deliveries) == [
        "__pipeline__:2026-10:run_failure:r1",
        "pro1:2026-10:anomaly:incident@2026-10-04",
    ]
    rows = env["warehouse"].read(ALERT_OUTBOX)
    assert len(rows) == 6 and set(rows["status"]) == {"sent"}
    email_row = rows[(rows["transport"] == "email") & (rows["tenant_id"] == "pro2")].iloc[0]
    assert email_row["receipt"] == pro2.message_id
    assert email_row["alert_key"] == f"{email_row['fact_key']}#email"


def test_an_unconfigured_channel_records_dry_run_and_sends_nothing(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh = env["warehouse"]
    env["resources"].update(email=EmailResource(), webhook=WebhookResource())
    keys = _enqueue(wh, "email", "webhook")
    with time_machine.travel(T0, tick=True):
        assert _evaluate(dagster_instance, env)
        assert not _evaluate(dagster_instance, env)
    assert [_row(wh, k)["status"] for k in keys] == ["dry_run", "dry_run"]
    assert fakes["smtp"].sessions == 0 and fakes["hook"].requests == []


def test_a_channel_that_is_down_does_not_hold_up_the_others(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh = env["warehouse"]
    fakes["hook"].down_for(1)
    hook, mail = _enqueue(wh, "webhook", "email")
    with time_machine.travel(T0, tick=True):
        assert _evaluate(dagster_instance, env)
    assert _row(wh, mail)["status"] == "sent" and len(fakes["smtp"].messages) == 1
    assert (_row(wh, hook)["status"], _row(wh, hook)["attempts"]) == ("pending", 1)


# -- webhook: exactly once as a receiver honouring the event id sees it -------------------------


def test_webhook_5xx_is_retried_after_backoff_and_delivered_once(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh, hook = env["warehouse"], fakes["hook"]
    with time_machine.travel(T0, tick=True) as clock:
        (key,) = _enqueue(wh, "webhook")
        hook.down_for(1, status=500)
        assert _evaluate(dagster_instance, env)
        assert (_row(wh, key)["status"], _row(wh, key)["attempts"]) == ("pending", 1)
        _after_backoff(dagster_instance, env, clock)
    assert [r.status for r in hook.requests] == [500, 200]
    assert list(hook.deliveries) == [FACT]
    assert (_row(wh, key)["status"], _row(wh, key)["receipt"]) == ("sent", FACT)


def test_webhook_timeout_after_the_receiver_acted_is_one_delivery(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh, hook = env["warehouse"], fakes["hook"]
    with time_machine.travel(T0, tick=True) as clock:
        (key,) = _enqueue(wh, "webhook")
        hook.act_then_stall(1, seconds=2)
        assert _evaluate(dagster_instance, env)  # the receiver acts; the client times out
        assert _row(wh, key)["status"] == "pending"
        _after_backoff(dagster_instance, env, clock)
    assert [r.event_id for r in hook.requests] == [FACT, FACT]  # sent twice, same id
    assert list(hook.deliveries) == [FACT]  # acted on once
    assert _row(wh, key)["status"] == "sent"


def test_webhook_crash_after_the_receiver_accepted_is_one_delivery_after_the_lease(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh, hook = env["warehouse"], fakes["hook"]
    with time_machine.travel(T0, tick=True) as clock:
        (key,) = _enqueue(wh, "webhook")
        (row,) = outbox.claim(wh, now=T0, transport="webhook").to_dict("records")
        # The run posts, the receiver accepts, and the run dies before recording anything.
        fact = {**row, "fact_key": FACT, "day": "2026-10-05"}
        event = webhook_event(fact, text=row["text"], blocks=[])
        env["resources"]["webhook"].post_event(event=event, event_id=FACT)
        clock.move_to(T0 + timedelta(minutes=5))
        assert not _evaluate(dagster_instance, env)  # the claim is still leased
        clock.move_to(T0 + timedelta(minutes=16))
        assert _evaluate(dagster_instance, env)
        assert not _evaluate(dagster_instance, env)
    assert len(hook.requests) == 2 and list(hook.deliveries) == [FACT]
    assert json.loads(hook.requests[1].body) == json.loads(hook.requests[0].body)
    assert _row(wh, key)["status"] == "sent"


def test_webhook_crash_before_the_receiver_accepted_is_sent_once_after_the_lease(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh, hook = env["warehouse"], fakes["hook"]
    with time_machine.travel(T0, tick=True) as clock:
        (key,) = _enqueue(wh, "webhook")
        assert len(outbox.claim(wh, now=T0, transport="webhook")) == 1  # dies before posting
        clock.move_to(T0 + timedelta(minutes=16))
        assert _evaluate(dagster_instance, env)
        assert not _evaluate(dagster_instance, env)
    assert len(hook.requests) == 1 and list(hook.deliveries) == [FACT]
    assert _row(wh, key)["status"] == "sent"


def test_webhook_expired_lease_is_reclaimed_and_a_live_one_is_not(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh, hook = env["warehouse"], fakes["hook"]
    with time_machine.travel(T0, tick=True) as clock:
        dead, live = _enqueue(wh, "webhook", "email")
        outbox.claim(wh, now=T0, transport="webhook")  # a run that died
        outbox.claim(wh, now=T0 + timedelta(minutes=10), transport="email")  # still sending
        clock.move_to(T0 + timedelta(minutes=16))
        assert _evaluate(dagster_instance, env)
        assert not _evaluate(dagster_instance, env)
    assert list(hook.deliveries) == [FACT] and fakes["smtp"].messages == []
    assert (_row(wh, dead)["status"], _row(wh, live)["status"]) == ("sent", "sending")


# -- email: exactly one message unless the server's answer was lost ------------------------------


@pytest.mark.parametrize("fault", ["refused_451", "timeout_before_accept"])
def test_email_refused_or_timed_out_before_accept_is_one_message(
    env, fakes: dict, dagster_instance: dg.DagsterInstance, fault: str
) -> None:
    wh, smtp = env["warehouse"], fakes["smtp"]
    with time_machine.travel(T0, tick=True) as clock:
        (key,) = _enqueue(wh, "email")
        if fault == "refused_451":
            smtp.refuse(1, "451 4.3.0 Try again later")
        else:
            smtp.stall_before_accept(1, seconds=2)
        assert _evaluate(dagster_instance, env)
        assert (_row(wh, key)["status"], _row(wh, key)["attempts"]) == ("pending", 1)
        _after_backoff(dagster_instance, env, clock)
    (message,) = smtp.messages
    assert message.message_id == message_id(FACT, "costs.example") == _row(wh, key)["receipt"]
    assert _row(wh, key)["status"] == "sent"


def test_email_permanently_refused_is_failed_not_retried(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh, smtp = env["warehouse"], fakes["smtp"]
    with time_machine.travel(T0, tick=True) as clock:
        (key,) = _enqueue(wh, "email")
        smtp.refuse(1, "554 5.7.1 Relay access denied")
        assert _evaluate(dagster_instance, env)
        clock.move_to(T0 + timedelta(hours=3))
        assert not _evaluate(dagster_instance, env)
    row = _row(wh, key)
    assert (row["status"], row["attempts"]) == ("failed", 1) and "554" in row["last_error"]
    assert smtp.messages == [] and smtp.sessions == 1


def test_email_crash_before_send_is_one_message_after_the_lease(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    wh, smtp = env["warehouse"], fakes["smtp"]
    with time_machine.travel(T0, tick=True) as clock:
        (key,) = _enqueue(wh, "email")
        assert len(outbox.claim(wh, now=T0, transport="email")) == 1  # dies before sending
        clock.move_to(T0 + timedelta(minutes=16))
        assert _evaluate(dagster_instance, env)
        assert not _evaluate(dagster_instance, env)
    assert len(smtp.messages) == 1 and _row(wh, key)["status"] == "sent"


def test_email_answer_lost_after_accept_is_at_least_once_under_one_message_id(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    """What SMTP cannot do: the server took the message, its answer was lost, and nothing can
    be asked. The re-send carries the same Message-ID, the key a mailbox dedupes by."""
    wh, smtp = env["warehouse"], fakes["smtp"]
    with time_machine.travel(T0, tick=True) as clock:
        (key,) = _enqueue(wh, "email")
        smtp.accept_then_stall(1, seconds=2)
        assert _evaluate(dagster_instance, env)
        _after_backoff(dagster_instance, env, clock)
    first, second = smtp.messages
    assert first.message_id == second.message_id == message_id(FACT, "costs.example")
    assert _row(wh, key)["status"] == "sent"
