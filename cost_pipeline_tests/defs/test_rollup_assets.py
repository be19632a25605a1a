"""Protects the rollups wiring on SQLite and Postgres: the four assets materialize from priced
interactions, add up to the day (checks pass, and fail when a row goes missing), re-runs
replace their rows, a ranged run builds each day, and agents get their share of revenue."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations.
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from cost_pipeline.catalog import (
    AGENT_COSTS,
    AGENT_UNIT_ECONOMICS,
    END_USER_COSTS,
    PRICED_INTERACTIONS,
    TENANT_UNIT_ECONOMICS,
    WORKFLOW_RUNS,
)
from cost_pipeline.defs.billing.assets import tenant_unit_economics
from cost_pipeline.defs.rollups.definitions import defs as rollup_defs
from cost_pipeline.lib.schemas import TOKEN_COLUMNS
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.billing_helpers import RAW_CONFIG

DAY = date(2026, 9, 10)
BEFORE = date(2026, 9, 9)
ASSETS = list(rollup_defs.assets or ())
CHECKS = list(rollup_defs.asset_checks or ())

# (event_id, UTC time, tenant, agent, user, workflow_id, parent, cost, pricing_status, status)
CALLS = [
    ("p0", "2026-09-09T23:59:50", "pronto", "support", "u1", "wf-night", None, 1.5, "priced", "ok"),
    ("b0", "2026-09-09T08:00:00", "acme", "support", "u7", None, None, 0.75, "priced", "ok"),
    ("n1", "2026-09-10T00:00:05", "pronto", "support", "u1", "wf-night", "p0", 0.5, "priced", "ok"),
    ("a0", "2026-09-10T10:00:00", "pronto", "support", "u1", "wf1", None, 1.0, "priced", "ok"),
    ("a1", "2026-09-10T10:00:02", "pronto", "support", "u1", "wf1", "a0", 2.0, "priced", "ok"),
    ("a2", "2026-09-10T10:00:04", "pronto", "coder", "u2", "wf1", "a1", 0.0, "unknown_model",
     "error"),
    ("o1", "2026-09-10T11:00:00", "acme", "support", "u7", "wf2", "gone", 0.25, "priced", "ok"),
    ("l1", "2026-09-10T12:00:00", "acme", "coder", "u9", None, None, 4.0, "priced", "ok"),
    ("s1", "2026-09-10T13:00:00", "stranger", None, None, "wf3", None, 3.0, "priced", "ok"),
]  # fmt: skip
DAY_COST = 0.5 + 1.0 + 2.0 + 0.25 + 4.0 + 3.0


def _name(check: dg.AssetChecksDefinition) -> str:
    return next(iter(check.check_keys)).name


def priced_calls() -> pd.DataFrame:
    df = pd.DataFrame(
        CALLS,
        columns=[
            "event_id",
            "occurred_at",
            "tenant_id",
            "agent_id",
            "user_id",
            "workflow_id",
            "parent_event_id",
            "cost_usd",
            "pricing_status",
            "status",
        ],
    )
    df["occurred_at"] = pd.to_datetime(df["occurred_at"], utc=True)
    df["day"] = df["occurred_at"].dt.date
    df["provider"], df["model"], df["latency_ms"] = "openai", "gpt-x", 1_000
    for c in TOKEN_COLUMNS:
        df[c] = 0
    df["input_tokens"], df["cache_read_tokens"], df["output_tokens"] = 1_000, 250, 100
    for c in ("cost_input_usd", "cost_cache_read_usd", "cost_cache_write_usd", "cost_other_usd"):
        df[c] = 0.0
    df["cost_output_usd"] = df["cost_usd"]
    return PRICED_INTERACTIONS.conform(df)


@pytest.fixture
def setup(tmp_path: Path, warehouse_url: str) -> tuple[str, dict]:
    """Two days of priced calls on each engine, and resources with the billing config."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(RAW_CONFIG))
    wh = Warehouse(warehouse_url)
    wh.migrate()
    for day, part in priced_calls().groupby("day"):
        wh.replace_partition(PRICED_INTERACTIONS, day, part)
    wh.dispose()
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(path=str(config)),
    }
    return warehouse_url, resources


def _materialize(resources: dict, **kwargs: object) -> dg.ExecuteInProcessResult:
    return dg.materialize([tenant_unit_economics, *ASSETS, *CHECKS], resources=resources, **kwargs)


def test_rollups_materialize_and_add_up(setup: tuple[str, dict]) -> None:
    url, resources = setup
    result = _materialize(resources, partition_key=DAY.isoformat())
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {_name(c) for c in CHECKS}
    assert all(e.passed for e in checks.values()), checks
    assert checks["runs_add_up_to_priced_calls"].metadata["outside_runs_calls"].value == 1

    wh = Warehouse(url)
    runs = wh.read(WORKFLOW_RUNS, days=[DAY]).set_index("root_event_id")
    assert sorted(runs.index) == ["a0", "n1", "o1", "s1"]
    a0 = runs.loc["a0"]
    assert (a0["calls"], a0["depth"], a0["cost_usd"], a0["unpriced_calls"]) == (3, 3, 3.0, 1)
    assert not a0["success"] and a0["duration_ms"] == 5_000
    assert runs.loc["n1", "spans_days"] and not runs.loc["n1", "orphan"]
    assert runs.loc["o1", "orphan"] and not runs.loc["o1", "spans_days"]

    users = wh.read(END_USER_COSTS, days=[DAY])
    assert users["cost_usd"].sum() == pytest.approx(DAY_COST)
    assert users.loc[users["user_id"] == "u2", "unpriced_calls"].tolist() == [1]
    agents = wh.read(AGENT_COSTS, days=[DAY]).set_index(["tenant_id", "agent_id"])
    assert agents.loc[("pronto", "support"), "cost_per_successful_call_usd"] == pytest.approx(
        3.5 / 3
    )
    assert agents.loc[("pronto", "support"), "cache_hit_share"] == pytest.approx(0.25)

    econ = wh.read(AGENT_UNIT_ECONOMICS)
    pronto = econ[econ["tenant_id"] == "pronto"].set_index("agent_id")
    revenue = wh.read(TENANT_UNIT_ECONOMICS).set_index("tenant_id").loc["pronto", "revenue_usd"]
    assert revenue == 299.0  # Pro tier, no overage
    # September so far: p0, n1, a0, a1 by support; a2 by coder (unpriced).
    assert pronto.loc["support", "calls"] == 4 and pronto.loc["coder", "unpriced_calls"] == 1
    assert pronto["revenue_usd"].sum() == pytest.approx(revenue)
    assert pronto.loc["support", "revenue_usd"] == pytest.approx(revenue * 4 / 5)
    stranger = econ[econ["tenant_id"] == "stranger"]
    assert stranger["cost_usd"].tolist() == [3.0] and stranger["revenue_usd"].isna().all()

    meta = result.asset_materializations_for_node("workflow_runs")[0].metadata
    assert "| tenant_id" in meta["top_runs"].value and meta["orphans"].value == 1
    top_agents = result.asset_materializations_for_node("agent_costs")[0].metadata["top_agents"]
    assert "coder" in top_agents.value


def test_reruns_replace_and_a_range_builds_each_day(setup: tuple[str, dict]) -> None:
    url, resources = setup
    for _ in range(2):
        result = _materialize(
            resources,
            tags={
                "dagster/asset_partition_range_start": BEFORE.isoformat(),
                "dagster/asset_partition_range_end": DAY.isoformat(),
            },
        )
        assert result.success
    got = {(e.check_name, e.partition) for e in result.get_asset_check_evaluations() if e.passed}
    assert len(got) == 2 * len(CHECKS)
    wh = Warehouse(url)
    assert wh.count(WORKFLOW_RUNS, days=[BEFORE]) == 1  # p0; b0 is a lone call
    assert wh.count(WORKFLOW_RUNS, days=[DAY]) == 4
    assert wh.count(END_USER_COSTS, days=[BEFORE, DAY]) == 2 + 5
    assert len(wh.read(AGENT_UNIT_ECONOMICS)) == 5


def test_a_missing_row_fails_its_check(setup: tuple[str, dict]) -> None:
    url, resources = setup
    assert _materialize(resources, partition_key=DAY.isoformat()).success
    wh = Warehouse(url)
    users = wh.read(END_USER_COSTS, days=[DAY])
    wh.replace_partition(END_USER_COSTS, DAY, users[users["user_id"] != "u9"])
    check = next(c for c in CHECKS if _name(c) == "end_users_add_up_to_priced_calls")
    # Only the check, on the tampered table: Dagster validates a partition key against the
    # selected assets (none), so the day goes in as a one-day range.
    result = dg.materialize(
        [*ASSETS, check],
        selection=dg.AssetSelection.checks(check),
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": DAY.isoformat(),
            "dagster/asset_partition_range_end": DAY.isoformat(),
        },
    )
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "by 1 call(s), $4.000000" in evaluation.description


def test_an_empty_day_gives_empty_rollups(setup: tuple[str, dict]) -> None:
    url, resources = setup
    result = _materialize(resources, partition_key=date(2026, 9, 20).isoformat())
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert Warehouse(url).count(WORKFLOW_RUNS, days=[date(2026, 9, 20)]) == 0
