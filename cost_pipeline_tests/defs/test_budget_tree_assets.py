"""Protects `budget_node_status` on SQLite and Postgres: spend of each node in its local period
read from the warehouse, rollover across a DST month boundary, its alert facts and its check."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from cost_pipeline.catalog import BUDGET_NODE_STATUS, DAILY_COST_SUMMARY
from cost_pipeline.defs.budgets.assets import ALERT_FACTS_KEY
from cost_pipeline.defs.budgets.hierarchy import budget_node_status, children_sum_to_parents
from cost_pipeline.lib.budget_tree import to_nano
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.billing_helpers import seed

CONFIG = {
    "tiers": {"t": {"name": "T"}},
    "tenants": [
        {"id": "a", "name": "A", "tier": "t", "timezone": "America/New_York"},
        {"id": "b", "name": "B", "tier": "t", "timezone": "Europe/Berlin"},
        {"id": "c", "name": "C", "tier": "t"},
        {"id": "d", "name": "D", "tier": "t"},
    ],
    "budget_hierarchy": {
        "timezone": "America/New_York",
        "budget": {"monthly_usd": 2000},
        "nodes": [
            {"id": "eng", "kind": "department", "budget": {"monthly_usd": 1000}},
            {
                "id": "search",
                "kind": "team",
                "parent": "eng",
                "tenants": ["a", "b"],
                "budget": {
                    "monthly_usd": 500,
                    "rollover": "capped",
                    "rollover_cap_usd": 200,
                    "thresholds": [50, 100, 150],
                },
            },
            {
                "id": "ops",
                "kind": "team",
                "parent": "eng",
                "tenants": ["c"],
                "pooled": False,
                "budget": {"monthly_usd": 100, "rollover": "full"},
            },
        ],
    },
}
CALLS = [
    ("a", datetime(2026, 10, 10, 12, tzinfo=UTC), 100.000000001, 10),
    # 23:30 on Oct 31 in New York: October's, though its UTC day is Nov 1.
    ("a", datetime(2026, 11, 1, 3, 30, tzinfo=UTC), 150.0, 10),
    ("a", datetime(2026, 11, 1, 4, 30, tzinfo=UTC), 60.0, 10),  # Nov 1, 00:30 EDT
    ("b", datetime(2026, 10, 15, 9, tzinfo=UTC), 99.999999999, 10),
    ("d", datetime(2026, 10, 12, 9, tzinfo=UTC), 7.0, 10),
]
FIRST, LAST = date(2026, 10, 31), date(2026, 11, 1)


@pytest.fixture
def resources(tmp_path: Path, warehouse_url: str) -> dict:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    wh = Warehouse(warehouse_url)
    seed(wh, CALLS)
    cloud = pd.DataFrame(
        {"day": [date(2026, 10, 20)], "tenant_id": "c", "cost_category": "cloud", "cost_usd": 30.0}
    ).assign(requests=0, input_tokens=0, output_tokens=0, unpriced_requests=0)
    wh.replace_partition(DAILY_COST_SUMMARY, date(2026, 10, 20), cloud)
    wh.dispose()
    return {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(path=str(path)),
    }


def _materialize(resources: dict, **kwargs: object) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [budget_node_status, children_sum_to_parents], resources=resources, **kwargs
    )
    assert result.success
    return result


def _rows(resources: dict, day: date) -> dict[str, dict]:
    status = resources["warehouse"].get().read(BUDGET_NODE_STATUS, days=[day])
    return {f"{r['node_id']} {r['period']}": r for r in status.to_dict("records")}


def test_nodes_roll_up_tenants_with_rollover_across_the_dst_month_end(resources: dict) -> None:
    result = _materialize(
        resources,
        tags={
            "dagster/asset_partition_range_start": FIRST.isoformat(),
            "dagster/asset_partition_range_end": LAST.isoformat(),
        },
    )
    checks = {e.partition: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {FIRST.isoformat(): True, LAST.isoformat(): True}

    rows = _rows(resources, LAST)
    # UTC Nov 1 holds New York's month end (04:00 UTC): October's and November's rows.
    assert sorted(rows) == [
        f"{node} {period}"
        for node in ("department:eng", "organization", "team:ops", "team:ops/c", "team:search")
        for period in ("2026-10", "2026-11")
    ]
    october, november = rows["team:search 2026-10"], rows["team:search 2026-11"]
    assert to_nano(october["spend_usd"]) == to_nano("350")  # 100.000000001 + 150 + 99.999999999
    assert october["threshold_reached"] == 50.0
    # 150 unused in October, under the 200 cap: exactly 150 carried into November.
    assert (november["rollover_usd"], november["limit_usd"]) == (150.0, 650.0)
    assert november["spend_usd"] == 60.0 and november["day_spend_usd"] == 210.0
    member = rows["team:ops/c 2026-11"]
    assert (member["rollover_usd"], member["limit_usd"]) == (70.0, 170.0)  # 100 - 30, full
    assert pd.isna(rows["team:ops 2026-11"]["limit_usd"])  # unpooled: the members have budgets

    eng, organization = rows["department:eng 2026-10"], rows["organization 2026-10"]
    assert to_nano(eng["spend_usd"]) == to_nano(october["spend_usd"]) + to_nano("30")
    assert to_nano(organization["spend_usd"]) == to_nano(eng["spend_usd"]) + to_nano("7")
    assert organization["tenants_spend_usd"] == 7.0 and organization["tenant_count"] == 4

    # One materialization per day of the range, each with the whole run's facts, day by day.
    materialization = result.asset_materializations_for_node("budget_node_status")[-1]
    facts = materialization.metadata[ALERT_FACTS_KEY].value
    assert {"day": "2026-11-01", "tenant_id": "team:search", "period": "2026-10"}.items() <= (
        facts[-1].items()
    )
    assert {(f["kind"], f["ref"]) for f in facts} == {("budget_threshold", "50")}


def test_a_rerun_replaces_its_day_and_the_check_catches_a_broken_sum(resources: dict) -> None:
    _materialize(resources, partition_key=LAST.isoformat())
    before = _rows(resources, LAST)
    _materialize(resources, partition_key=LAST.isoformat())
    assert _rows(resources, LAST).keys() == before.keys()

    wh = resources["warehouse"].get()
    status = wh.read(BUDGET_NODE_STATUS, days=[LAST])
    search = status["node_id"] == "team:search"
    status.loc[search, ["spend_usd", "llm_cost_usd", "tenants_spend_usd"]] += 0.000000001
    wh.replace_partition(BUDGET_NODE_STATUS, LAST, status)
    # The check alone, on the tampered day (a one-day range: Dagster runs a partitioned
    # check without its asset only through the range tags).
    check = dg.materialize(
        [budget_node_status, children_sum_to_parents],
        resources=resources,
        selection=dg.AssetSelection.checks(children_sum_to_parents),
        tags={
            "dagster/asset_partition_range_start": LAST.isoformat(),
            "dagster/asset_partition_range_end": LAST.isoformat(),
        },
    )
    (evaluation,) = check.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "department:eng 2026-11: children rows sum to" in str(
        evaluation.metadata["examples"].value
    )


def test_a_node_crossing_alerts_through_the_sensor_to_its_own_channel(
    tmp_path: Path, resources: dict, dagster_instance: dg.DagsterInstance
) -> None:
    from cost_pipeline.catalog import ALERT_OUTBOX
    from cost_pipeline.defs.alerts.jobs import alert_delivery_job
    from cost_pipeline.defs.alerts.sensors import budget_alert_sensor
    from cost_pipeline.resources.email import EmailResource
    from cost_pipeline.resources.slack import SlackResource
    from cost_pipeline.resources.webhook import WebhookResource

    raw = yaml.safe_load(Path(resources["cost_config"].path).read_text())
    raw["budget_hierarchy"]["nodes"][1]["slack_channel"] = "#search-team"
    Path(resources["cost_config"].path).write_text(yaml.safe_dump(raw))
    resources = {**resources, "cost_config": CostConfigResource(path=resources["cost_config"].path)}
    _materialize(resources, partition_key=LAST.isoformat(), instance=dagster_instance)

    context = dg.build_sensor_context(
        instance=dagster_instance, resources={"warehouse": resources["warehouse"]}
    )
    (request,) = budget_alert_sensor(context).run_requests
    run = alert_delivery_job.execute_in_process(
        run_config=request.run_config,
        instance=dagster_instance,
        resources={
            **resources,
            "slack": SlackResource(),  # no token: dry run
            "email": EmailResource(),
            "webhook": WebhookResource(),
        },
    )
    assert run.success
    outbox = resources["warehouse"].get().read(ALERT_OUTBOX)
    row = outbox[outbox["tenant_id"] == "team:search"].iloc[0]
    assert row["kind"] == "budget_threshold" and row["channel"] == "#search-team"
    # October's limit: 500 plus September's unused 500, capped at 200.
    assert row["text"] == (
        "Budget 50% reached: search has spent $350.00 of $700.00 budget (incl. $200.00 rolled "
        "over) (50.0%) in 2026-10"
    )
