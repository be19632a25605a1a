"""Protects budget assets, alert sensors (run keys, cursors) and the alert job end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import time_machine
import yaml

from cost_pipeline.catalog import (
    ALERT_OUTBOX,
    BUDGET_STATUS,
    DAILY_COST_SUMMARY,
    TENANT_ENFORCEMENT,
)
from cost_pipeline.defs.alerts.jobs import alert_delivery_job
from cost_pipeline.defs.alerts.schedules import daily_close_schedule, hourly_refresh_schedule
from cost_pipeline.defs.alerts.sensors import (
    alert_outbox_sensor,
    anomaly_alert_sensor,
    budget_alert_sensor,
    pipeline_failure_sensor,
)
from cost_pipeline.defs.budgets.assets import (
    budget_status,
    budget_status_today,
    tenant_enforcement,
)
from cost_pipeline.defs.partitions import daily_partitions
from cost_pipeline.enforcement import is_allowed
from cost_pipeline.resources.email import EmailResource
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.resources.webhook import WebhookResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes.slack import FakeSlack

DAY = date(2026, 10, 10)
CONFIG = {
    # The spend below is cloud cost: this tier counts the whole cost toward its cap.
    "tiers": {
        "free": {
            "name": "Free",
            "included_usage_usd": 5,
            "hard_cap_usd": 5,
            "allowance_counts": "all",
        }
    },
    "alerts": {"default_channel": "#alerts", "dagster_ui_url": "http://ui.test"},
    "tenants": [{"id": "free1", "name": "Free One", "tier": "free", "slack_channel": "#free1"}],
}


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def env(tmp_path, fake_slack, warehouse_url: str) -> dict:
    """Resources on the warehouse of each engine (SQLite and Postgres)."""
    return _env(tmp_path, fake_slack, warehouse_url)


def _env(tmp_path, fake_slack: FakeSlack, url: str) -> dict:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return {
        "url": url,
        "resources": {
            "warehouse": WarehouseResource(url=url),
            "cost_config": CostConfigResource(path=str(path)),
            "slack": SlackResource(bot_token=fake_slack.token, base_url=fake_slack.base_url),
            "email": EmailResource(),  # dry-run: the config routes every alert to Slack only
            "webhook": WebhookResource(),
        },
    }


def _spend(url: str, day: date, usd: float) -> None:
    Warehouse(url).replace_partition(
        DAILY_COST_SUMMARY,
        day,
        pd.DataFrame(
            {"day": [day], "tenant_id": "free1", "cost_category": "cloud", "cost_usd": usd}
        ).assign(requests=0, input_tokens=0, output_tokens=0, unpriced_requests=0),
    )


def _materialize(env: dict, instance: dg.DagsterInstance, day: date) -> None:
    result = dg.materialize(
        [budget_status, tenant_enforcement],
        instance=instance,
        partition_key=day.isoformat(),
        resources=env["resources"],
    )
    assert result.success


def _tick(instance: dg.DagsterInstance, env: dict, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"warehouse": env["resources"]["warehouse"]}
    )
    result = budget_alert_sensor(context)
    return result, context.cursor if result.cursor is None else result.cursor


def test_sensor_requests_once_per_new_crossing_and_the_run_sends_once(
    env, fake_slack, dagster_instance: dg.DagsterInstance
) -> None:
    instance = dagster_instance
    _spend(env["url"], DAY, 3.0)  # 60 % of the $5 hard cap
    _materialize(env, instance, DAY)
    first, cursor = _tick(instance, env, None)
    (request,) = first.run_requests
    # Same materialization, evaluated again: nothing new; from scratch: the same run key.
    again, _ = _tick(instance, env, cursor)
    assert again.run_requests == [] and "no new budget crossings" in str(again.skip_reason)
    replay, _ = _tick(instance, env, None)
    assert [r.run_key for r in replay.run_requests] == [request.run_key]

    run = alert_delivery_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources=env["resources"]
    )
    assert run.success
    # 60 % reached, and the run rate ($0.30 a day) breaks the cap before the month ends.
    threshold, forecast = sorted(fake_slack.messages, key=lambda m: m.text)
    assert threshold.channel == "#free1" and threshold.text.startswith("Budget 50% reached")
    assert "$3.00 of $5.00 tier hard cap (60.0%)" in threshold.text
    assert forecast.text.startswith("Forecast to exceed budget")
    assert "Projected breach" in json.dumps(forecast.blocks)

    # A re-materialization of the same facts requests nothing: the outbox has them.
    _materialize(env, instance, DAY)
    rerun, cursor = _tick(instance, env, cursor)
    assert rerun.run_requests == []

    # A new crossing (50 -> 100 % on the next day) requests exactly one run.
    _spend(env["url"], date(2026, 10, 11), 2.5)
    _materialize(env, instance, date(2026, 10, 11))
    new, cursor = _tick(instance, env, cursor)
    (request2,) = new.run_requests
    facts = json.loads(request2.run_config["ops"]["enqueue_alerts"]["config"]["facts_json"])
    assert {(f["kind"], f["ref"]) for f in facts} == {("budget_threshold", "100")}
    assert request2.run_key != request.run_key
    alert_delivery_job.execute_in_process(
        run_config=request2.run_config, instance=instance, resources=env["resources"]
    )
    assert fake_slack.messages[-1].text.startswith("Budget 100% reached")
    assert len(fake_slack.messages) == 3
    outbox = Warehouse(env["url"]).read(ALERT_OUTBOX)
    assert sorted(outbox["status"]) == ["sent", "sent", "sent"]

    # The hard cap is reached: the gateway's flag blocks the Free tenant until its month ends.
    assert not is_allowed("free1", env["url"], now=datetime(2026, 10, 12, tzinfo=UTC))
    assert is_allowed("free1", env["url"], now=datetime(2026, 11, 1, tzinfo=UTC))
    assert is_allowed("someone-else", env["url"])


def test_outbox_sensor_requests_a_drain_only_when_something_is_due(
    env, fake_slack, dagster_instance: dg.DagsterInstance
) -> None:
    instance = dagster_instance
    context = dg.build_sensor_context(
        instance=instance, resources={"warehouse": env["resources"]["warehouse"]}
    )
    assert isinstance(alert_outbox_sensor(context), dg.SkipReason)
    _spend(env["url"], DAY, 3.0)
    _materialize(env, instance, DAY)
    (request,) = _tick(instance, env, None)[0].run_requests
    fake_slack.down_for(1)
    alert_delivery_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources=env["resources"]
    )
    assert fake_slack.messages == []
    rows = Warehouse(env["url"]).read(ALERT_OUTBOX)
    assert set(rows["status"]) == {"pending"} and sorted(rows["attempts"]) == [0, 1]


def test_definitions_load_and_schedules_request_today_and_the_restatement_window(
    tmp_path, fake_slack, sqlite_url: str
) -> None:
    env = _env(tmp_path, fake_slack, sqlite_url)  # touches no database: SQLite only
    selection = dg.AssetSelection.assets(budget_status, tenant_enforcement)
    today = dg.AssetSelection.assets(budget_status_today)
    close, hourly = daily_close_schedule(selection), hourly_refresh_schedule(today)
    defs = dg.Definitions(
        assets=[budget_status, tenant_enforcement, budget_status_today],
        jobs=[alert_delivery_job],
        schedules=[close, hourly],
        sensors=[
            budget_alert_sensor,
            alert_outbox_sensor,
            anomaly_alert_sensor,
            pipeline_failure_sensor,
        ],
        resources=env["resources"],
    )
    repo = defs.get_repository_def()
    context = dg.build_schedule_context(
        repository_def=repo, scheduled_execution_time=datetime(2026, 10, 10, 0, 30, tzinfo=UTC)
    )
    requests = close.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == ["2026-10-09", "2026-10-08", "2026-10-07"]
    context = dg.build_schedule_context(
        repository_def=repo, scheduled_execution_time=datetime(2026, 10, 10, 13, 5, tzinfo=UTC)
    )
    data = hourly.evaluate_tick(context)
    # The daily partitions end at yesterday; the hourly refresh rebuilds today so far.
    (request,) = data.run_requests
    assert request.partition_key is None and request.run_key == "hourly:2026-10-10T13"
    assert "2026-10-10" not in daily_partitions.get_partition_keys(
        current_time=datetime(2026, 10, 10, 13, 5, tzinfo=UTC)
    )


def test_today_so_far_writes_todays_status_blocks_and_alerts(
    env, dagster_instance: dg.DagsterInstance
) -> None:
    """Today is not a partition: `budget_status_today` writes its rows, blocks a tenant whose
    cap is reached, and the budget sensor alerts on it like on a closed day."""
    _spend(env["url"], DAY - timedelta(days=1), 6.0)  # over the $5 hard cap since yesterday
    with time_machine.travel(datetime(2026, 10, 10, 14, 0, tzinfo=UTC), tick=False):
        result = dg.materialize(
            [budget_status_today], instance=dagster_instance, resources=env["resources"]
        )
        assert result.success
        wh = Warehouse(env["url"])
        status = wh.read(BUDGET_STATUS, days=[DAY])
        row = status[status["tenant_id"] == "free1"].iloc[0]
        assert row["spend_usd"] == pytest.approx(6.0) and row["status"] == "exceeded"
        assert row["as_of"] == pd.Timestamp("2026-10-10T14:00", tz="UTC")
        blocked = wh.read(TENANT_ENFORCEMENT, days=[DAY])
        assert not blocked.set_index("tenant_id").loc["free1", "allowed"]
        assert not is_allowed("free1", env["url"])
    (request,) = _tick(dagster_instance, env, None)[0].run_requests
    facts = json.loads(request.run_config["ops"]["enqueue_alerts"]["config"]["facts_json"])
    assert {(f["tenant_id"], f["kind"], f["ref"], f["day"]) for f in facts} >= {
        ("free1", "budget_threshold", "100", "2026-10-10")
    }
