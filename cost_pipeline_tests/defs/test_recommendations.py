"""Protects the recommendations wiring on SQLite and Postgres: `cost_recommendations` builds a
range of days in one run with statuses carried from day to day (new, open, applied), a re-run
replaces its rows, and the weekly digest reaches Slack exactly once across re-runs."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations.
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from cost_pipeline.catalog import ALERT_OUTBOX, COST_RECOMMENDATIONS, PRICED_INTERACTIONS
from cost_pipeline.defs.recommendations.assets import cost_recommendations
from cost_pipeline.defs.recommendations.jobs import (
    recommendations_digest_job,
    recommendations_digest_schedule,
)
from cost_pipeline.lib.pricing import PricingEngine
from cost_pipeline.lib.schemas import TOKEN_COLUMNS
from cost_pipeline.resources.email import EmailResource
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.resources.webhook import WebhookResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes.slack import FakeSlack

FIRST, LAST = date(2026, 9, 1), date(2026, 9, 16)  # the agent moves to gpt-4o-mini on LAST
CONFIG = {
    "tiers": {"pro": {"name": "Pro"}},
    "tenants": [{"id": "t1", "name": "Tenant One", "tier": "pro"}],
    "alerts": {"default_channel": "#finops", "dagster_ui_url": "http://ui.test"},
    "recommendations": {
        "substitutions": [{"provider": "openai", "model": "gpt-4o", "alternative": "gpt-4o-mini"}],
        "caching": {"min_input_tokens": 10_000_000},
        "min_calls": 5,
        "min_monthly_saving_usd": 0.01,
    },
}


def _calls() -> pd.DataFrame:
    rows = []
    day = FIRST
    while day <= LAST:
        model = "gpt-4o-mini" if day == LAST else "gpt-4o"
        for i in range(40):
            rows.append(
                {
                    "event_id": f"e-{day}-{i}",
                    "occurred_at": datetime.combine(day, time(8), UTC) + timedelta(minutes=9 * i),
                    "day": day,
                    "tenant_id": "t1",
                    "agent_id": "writer",
                    "provider": "openai",
                    "model": model,
                    **dict.fromkeys(TOKEN_COLUMNS, 0),
                    "input_tokens": 10_000,
                    "output_tokens": 500,
                    "status": "ok",
                }
            )
        day += timedelta(days=1)
    return PRICED_INTERACTIONS.conform(PricingEngine().price(pd.DataFrame(rows)))


@pytest.fixture
def env(tmp_path: Path, warehouse_url: str) -> Iterator[dict]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    wh = Warehouse(warehouse_url)
    for day, part in _calls().groupby("day"):
        wh.replace_partition(PRICED_INTERACTIONS, day, part)
    slack = FakeSlack().start()
    try:
        yield {
            "warehouse": wh,
            "slack": slack,
            "resources": {
                "warehouse": WarehouseResource(url=warehouse_url),
                "cost_config": CostConfigResource(path=str(path)),
                "slack": SlackResource(
                    bot_token=slack.token, base_url=slack.base_url, timeout_seconds=1
                ),
                "email": EmailResource(),
                "webhook": WebhookResource(),
            },
        }
    finally:
        slack.stop()
        wh.dispose()


def _materialize(resources: dict, first: date, last: date) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [cost_recommendations],
        resources={k: resources[k] for k in ("warehouse", "cost_config")},
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
    )


def _status(wh: Warehouse, day: date) -> list[tuple]:
    rows = wh.read(COST_RECOMMENDATIONS, days=[day])
    return list(zip(rows["kind"], rows["option"], rows["status"], rows["since_day"], strict=True))


def test_a_range_tracks_status_day_to_day_and_a_rerun_replaces_it(env: dict) -> None:
    wh, resources = env["warehouse"], env["resources"]
    first = LAST - timedelta(days=2)
    for _ in range(2):
        result = _materialize(resources, first, LAST)
        assert result.success
    move = ("model_substitution", "gpt-4o-mini")
    assert _status(wh, first) == [(*move, "new", first)]
    assert _status(wh, first + timedelta(days=1)) == [(*move, "open", first)]
    assert _status(wh, LAST) == [(*move, "applied", first)]

    row = wh.read(COST_RECOMMENDATIONS, days=[first]).iloc[0]
    # 14 covered days of 40 calls: 10,000 input and 500 output tokens at $2.50 / $10 per MTok
    # now, $0.15 / $0.60 on gpt-4o-mini.
    per_month = 40 * 30.4375
    assert row["current_monthly_usd"] == pytest.approx(0.03 * per_month, abs=1e-8)
    assert row["saving_monthly_usd"] == pytest.approx((0.03 - 0.0018) * per_month, abs=1e-8)
    assert (row["evidence_calls"], row["evidence_days"], row["covered_days"]) == (560, 14, 14)
    meta = result.asset_materializations_for_node("cost_recommendations")[0].metadata
    assert meta["days"].value == 3 and meta["last_day_applied_recommendations"].value == 1
    assert "| day" in meta["per_day"].value

    # One day rebuilt alone reads its predecessor's rows: the same answer.
    assert _materialize(resources, LAST, LAST).success
    assert _status(wh, LAST) == [(*move, "applied", first)]


def test_the_weekly_digest_reaches_slack_once_across_reruns(env: dict) -> None:
    wh, resources, slack = env["warehouse"], env["resources"], env["slack"]
    assert _materialize(resources, LAST - timedelta(days=2), LAST - timedelta(days=1)).success
    week = "2026-W38"  # Monday 2026-09-14: the digest of Sunday's (or the latest) rows
    run_config = {"ops": {"enqueue_recommendations_digest": {"config": {"week": week}}}}
    for _ in range(2):
        result = recommendations_digest_job.execute_in_process(
            run_config=run_config, resources=resources
        )
        assert result.success
    assert len(slack.messages) == 1
    [message] = slack.messages
    assert message.channel == "#finops"
    assert message.text.startswith(f"Cost recommendations — week {week}: 1 recommendation(s)")
    assert "Tenant One" in str(message.blocks)
    outbox = wh.read(ALERT_OUTBOX)
    assert outbox[["kind", "period", "status"]].values.tolist() == [
        ["recommendations_digest", week, "sent"]
    ]


def test_the_schedule_names_the_week_in_its_run_key() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 9, 21, 9, tzinfo=UTC)
    )
    request = recommendations_digest_schedule.evaluate_tick(context).run_requests[0]
    assert request.run_key == "recommendations_digest:2026-W39"
    config = request.run_config["ops"]["enqueue_recommendations_digest"]["config"]
    assert config == {"week": "2026-W39"}
