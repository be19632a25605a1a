"""Protects `enforcement.decide` on the warehouse of each engine: the ingestion updates the live
counters in its own transaction, so a file that pushes a tenant over its cap is denied after that
ingestion alone; overrides are audited; counters equal the stored calls."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import time_machine
import yaml

from cost_pipeline.catalog import ENFORCEMENT_AUDIT, SPEND_COUNTERS
from cost_pipeline.defs.ingestion.assets import llm_interactions
from cost_pipeline.defs.pricing.assets import priced_interactions, spend_counters_match_calls
from cost_pipeline.enforcement import Enforcer
from cost_pipeline.resources.landing import LandingFolderResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import enforcement as store
from cost_pipeline.store.enforcement import counters_against_calls
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.defs.test_ingestion_assets import event, write_jsonl

DAY = "2026-10-05"
CONFIG = {
    "tiers": {
        "free": {"name": "Free", "hard_cap_usd": 0.05, "fail_mode": "closed"},
        "pro": {"name": "Pro", "monthly_price_usd": 99},
    },
    "tenants": [
        {"id": "acme", "name": "Acme", "tier": "free", "timezone": "America/New_York"},
        {
            "id": "beta",
            "name": "Beta",
            "tier": "pro",
            "limits": [{"scope": "agent", "value": "support-bot", "monthly_usd": 0.02}],
        },
    ],
    "partitions": {"first_day": "2026-09-01"},
}


@pytest.fixture
def setup(tmp_path: Path, warehouse_url: str):
    # The calls are of 2026-10-05; the ingestions run that evening.
    with time_machine.travel(datetime(2026, 10, 5, 18, tzinfo=UTC), tick=True):
        yield _setup(tmp_path, warehouse_url)


def _setup(tmp_path: Path, warehouse_url: str):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(path=str(config)),
        "interaction_log": LandingFolderResource(path=str(log_dir)),
    }

    def ingest() -> None:
        assert dg.materialize([llm_interactions], resources=resources).success

    enforcer = Enforcer(warehouse_url, config)
    return log_dir, ingest, enforcer, Warehouse(warehouse_url), resources


def calls(tenant: str, first: int, n: int) -> list[dict]:
    # 100k input tokens of gpt-4o-mini: $0.015 a call.
    return [
        event(i, DAY, tenant_id=tenant, input_tokens=100_000, cache_read_tokens=0, output_tokens=0)
        for i in range(first, first + n)
    ]


def test_a_file_over_the_cap_is_denied_after_its_ingestion_alone(setup) -> None:
    log_dir, ingest, enforcer, _, _ = setup
    # Before any ingestion the spend state is unknown: the Free tier fails closed.
    before = enforcer.decide("acme")
    assert not before.allowed and before.state == "unknown"

    write_jsonl(log_dir / "a.jsonl", calls("acme", 0, 2))
    ingest()
    d = enforcer.decide("acme")
    assert d.allowed and d.spent == pytest.approx(0.03)

    write_jsonl(log_dir / "b.jsonl", calls("acme", 2, 2))
    ingest()  # no daily build, no hourly refresh: the counters moved with the load
    # The cache is per tenant for a few seconds; a new enforcer reads what is stored now.
    fresh = Enforcer(enforcer.warehouse.url, enforcer._config_source)
    d = fresh.decide("acme")
    assert not d.allowed and d.state == "open"
    assert "tier hard cap reached: 0.06 of 0.05 USD spent in 2026-10" in d.reason

    # An unknown tenant is denied by default, and says so.
    d = fresh.decide("nobody")
    assert not d.allowed and "unknown tenant 'nobody'" in d.reason


def test_an_agent_limit_blocks_that_agent_only_and_overrides_are_audited(setup) -> None:
    log_dir, ingest, enforcer, wh, _ = setup
    write_jsonl(log_dir / "a.jsonl", calls("beta", 0, 2))  # support-bot: $0.03 > $0.02
    ingest()
    now = datetime.now(UTC)
    assert not enforcer.decide("beta", agent="support-bot", now=now).allowed
    assert enforcer.decide("beta", agent="sql-copilot", now=now).allowed

    action = store.record_action(
        wh,
        kind="override",
        tenant_id="beta",
        scope="agent",
        scope_value="support-bot",
        reason="customer demo",
        actor="ops@example.com",
        expires_at=now + timedelta(hours=1),
        now=now - timedelta(seconds=1),
    )
    fresh = Enforcer(enforcer.warehouse.url, enforcer._config_source)
    d = fresh.decide("beta", agent="support-bot", now=now)
    assert d.allowed and "override for agent support-bot by ops@example.com" in d.reason
    expired = Enforcer(enforcer.warehouse.url, enforcer._config_source)
    assert not expired.decide("beta", agent="support-bot", now=now + timedelta(hours=2)).allowed

    assert store.revoke_action(wh, action, actor="ops@example.com", reason="done", now=now)
    audit = wh.read(ENFORCEMENT_AUDIT).sort_values("at")
    assert list(audit["action"]) == ["override", "revoke"]
    assert set(audit["subject"]) == {"agent:support-bot"}
    assert (
        audit.iloc[0]["actor"] == "ops@example.com" and audit.iloc[0]["reason"] == "customer demo"
    )


def test_counters_equal_the_stored_calls_and_the_close_recounts_a_drift(setup) -> None:
    log_dir, ingest, _, wh, resources = setup
    write_jsonl(log_dir / "a.jsonl", calls("acme", 0, 3) + calls("beta", 10, 2))
    ingest()
    day = date.fromisoformat(DAY)
    both = counters_against_calls(wh, day)
    assert list(both["counted_calls"]) == [3, 2]
    assert list(both["counted_usd"]) == pytest.approx(list(both["cost_usd"]))

    # Counters lost (e.g. a day loaded before they existed): the daily build recounts them,
    # says so, and its check passes.
    with wh.transaction() as conn:
        conn.exec_driver_sql("DELETE FROM spend_counters")
    with time_machine.travel(datetime(2026, 10, 6, 0, 30, tzinfo=UTC)):  # the daily close
        result = dg.materialize(
            [priced_interactions, spend_counters_match_calls],
            resources=resources,
            partition_key=DAY,
            selection=[priced_interactions],
        )
    assert result.success
    mat = result.asset_materializations_for_node("priced_interactions")[0]
    assert mat.metadata["counters_recounted_tenants"].value == 2
    (check,) = result.get_asset_check_evaluations()
    assert check.passed


def test_configuration_changes_between_runs_are_audited(setup, tmp_path: Path) -> None:
    from cost_pipeline.defs.enforcement.assets import config_audit

    _, _, _, wh, resources = setup
    first = dg.materialize([config_audit], resources=resources)
    assert first.asset_materializations_for_node("config_audit")[0].metadata["baseline"].value
    changed = {**CONFIG, "tiers": {**CONFIG["tiers"], "free": {**CONFIG["tiers"]["free"]}}}
    changed["tiers"]["free"]["hard_cap_usd"] = 0.5
    changed["tenants"] = [*CONFIG["tenants"], {"id": "gamma", "name": "G", "tier": "pro"}]
    Path(resources["cost_config"].path).write_text(yaml.safe_dump(changed))
    resources = {**resources, "cost_config": CostConfigResource(path=resources["cost_config"].path)}
    second = dg.materialize([config_audit], resources=resources)
    assert second.asset_materializations_for_node("config_audit")[0].metadata["changes"].value == 5
    audit = wh.read(ENFORCEMENT_AUDIT)
    audit = audit[audit["action"] == "config_change"].set_index("subject")
    assert '"hard_cap_usd": "0.05"' in audit.loc["tiers.free", "old_value"]
    assert '"hard_cap_usd": "0.5"' in audit.loc["tiers.free", "new_value"]
    assert audit.loc["tenants.gamma.tier", "old_value"] is None
    # The same configuration again: nothing new.
    third = dg.materialize([config_audit], resources=resources)
    assert third.asset_materializations_for_node("config_audit")[0].metadata["changes"].value == 0


def test_counters_split_the_month_edge_by_each_tenant_local_month(tmp_path, warehouse_url) -> None:
    """Calls on the last UTC day of a month and the first of the next count in each tenant's
    own local month (acme is New York, UTC-4 in October; beta is UTC), while a mid-month day
    is counted whole: the same totals either way."""
    with time_machine.travel(datetime(2026, 11, 2, 18, tzinfo=UTC), tick=True):
        log_dir, ingest, _, wh, _ = _setup(tmp_path, warehouse_url)
        stamps = {
            "2026-10-15": ["2026-10-15T02:00:00Z"],
            "2026-10-31": ["2026-10-31T23:30:00Z"],
            "2026-11-01": ["2026-11-01T02:00:00Z", "2026-11-01T05:00:00Z"],
        }
        lines = [
            event(
                i,
                day,
                event_id=f"{tenant}-{day}-{i}",
                tenant_id=tenant,
                occurred_at=at,
                input_tokens=100_000,
            )
            for day, ats in stamps.items()
            for i, at in enumerate(ats)
            for tenant in ("acme", "beta")
        ]
        write_jsonl(log_dir / "calls.jsonl", lines)
        ingest()
        rows = wh.read(SPEND_COUNTERS, where={"scope": ["tenant"]})
        calls = rows.groupby(["tenant_id", "period"])["calls"].sum().to_dict()
    # New York: 10-31 23:30Z and 11-01 02:00Z are still October there; 11-01 05:00Z is not.
    assert calls == {
        ("acme", "2026-10"): 3,
        ("acme", "2026-11"): 1,
        ("beta", "2026-10"): 2,
        ("beta", "2026-11"): 2,
    }
