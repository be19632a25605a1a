"""Protects billing holds: overage above the ceiling or with unpriced usage never reaches Stripe
until a person releases it (or the usage is priced); everything else bills as before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import time_machine

from cost_pipeline.catalog import BILLING_RECONCILIATION, PRICED_INTERACTIONS
from cost_pipeline.defs.billing.assets import billing_ledger
from cost_pipeline.defs.billing.jobs import billing_release_job
from cost_pipeline.defs.billing.sensors import billing_run_sensor
from cost_pipeline.lib.billing_ledger import ABOVE_CEILING, UNPRICED_USAGE
from cost_pipeline.store.billing import read_ledger
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.billing_helpers import RAW_CONFIG, interactions, seeded_billing_warehouse
from cost_pipeline_tests.defs.test_billing import (
    live_stripe,
    materialize_september,
    resources,
    run_close,
)
from cost_pipeline_tests.fakes.stripe import running

NOW = datetime(2026, 10, 2, 12, tzinfo=UTC)
NORMAL = {"cus_pronto": 11_500, "cus_bigco": 10_500}  # what test_billing bills for September


@pytest.fixture(autouse=True)
def _frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=True):
        yield


def release(url: str, config: str, tenant_id: str, period: str) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions(jobs=[billing_release_job], resources=resources(url, config))
    return defs.resolve_job_def("billing_release_job").execute_in_process(
        run_config={
            "ops": {
                "release_held_overage": {
                    "config": {
                        "tenant_id": tenant_id,
                        "period": period,
                        "released_by": "finance@example.com",
                        "reason": "checked with the customer",
                    }
                }
            }
        },
        raise_on_error=False,
    )


def holds(url: str) -> list[tuple[str, str, int, str]]:
    ledger = read_ledger(Warehouse(url))
    rows = ledger[ledger["kind"].eq("hold")].sort_values("sequence")
    return list(
        zip(
            rows["tenant_id"], rows["status"], rows["value_cents"], rows["hold_reason"], strict=True
        )
    )


def test_overage_above_ceiling_is_held_and_sent_once_after_release(
    tmp_path: Path, warehouse_url: str
) -> None:
    # The evidence: 1e15 tokens in one call; the default ceiling (50,000 USD) holds it.
    url, config = seeded_billing_warehouse(
        tmp_path,
        warehouse_url,
        RAW_CONFIG,
        [("toki", datetime(2026, 9, 14, tzinfo=UTC), 1.0, 10**15)],
    )
    with running() as fake:
        stripe = live_stripe(fake)
        result = materialize_september(url, config, stripe)
        assert result.success
        materialize_september(url, config, stripe)  # a second run adds no hold, sends nothing
        assert fake.totals_by_customer() == NORMAL  # normal periods are billed unchanged
        [(tenant, status, cents, reason)] = holds(url)
        assert (tenant, status, reason) == ("toki", "held", ABOVE_CEILING)
        assert cents > 5_000_000
        meta = result.asset_materializations_for_node("billing_ledger")[0].metadata
        assert meta["held"].value == 1
        wh = Warehouse(url)
        if "queued" in meta["pending_credit_alerts"].value:
            alerts = wh.query("SELECT kind, tenant_id, text FROM alert_outbox")
            held = alerts[alerts["kind"].eq("billing_overage_held")]
            assert list(held["tenant_id"]) == ["toki"]
            assert "billing_release_job" in held["text"].iloc[0]

        # The close says what is held and does not pass.
        closed = run_close(url, config, stripe)
        assert not closed.success
        recon = wh.read(BILLING_RECONCILIATION).set_index("tenant_id")
        assert recon.loc["toki", "held_cents"] == cents
        assert recon.loc["toki", "held_reason"] == ABOVE_CEILING
        assert recon.loc["pronto", "held_cents"] == 0

        released = release(url, config, "toki", "2026-09")
        assert released.success
        ledger = read_ledger(wh)
        row = ledger[ledger["kind"].eq("hold")].iloc[0]
        assert row["status"] == "released"
        assert row["released_by"] == "finance@example.com"
        assert row["release_reason"] == "checked with the customer"
        assert fake.totals_by_customer() == NORMAL  # the release itself sends nothing

        assert dg.materialize([billing_ledger], resources=resources(url, config, stripe)).success
        assert dg.materialize([billing_ledger], resources=resources(url, config, stripe)).success
        assert fake.totals_by_customer() == {**NORMAL, "cus_toki": cents}
        assert len(fake.state.events) == 3  # sent once
        assert run_close(url, config, stripe).success


def test_release_of_a_period_without_hold_fails(tmp_path: Path, warehouse_url: str) -> None:
    url, config = seeded_billing_warehouse(tmp_path, warehouse_url, RAW_CONFIG, [])
    result = release(url, config, "pronto", "2026-09")
    assert not result.success


def test_configured_ceiling_holds_only_periods_above_it(tmp_path: Path, warehouse_url: str) -> None:
    raw = {**RAW_CONFIG, "billing": {"max_overage_usd_per_period": 110}}
    url, config = seeded_billing_warehouse(tmp_path, warehouse_url, raw, [])
    with running() as fake:
        materialize_september(url, config, live_stripe(fake))
        assert fake.totals_by_customer() == {"cus_bigco": 10_500}
    assert holds(url) == [("pronto", "held", 11_500, ABOVE_CEILING)]


def test_unpriced_usage_holds_the_period_until_priced(tmp_path: Path, warehouse_url: str) -> None:
    url, config = seeded_billing_warehouse(tmp_path, warehouse_url, RAW_CONFIG, [])
    unknown = interactions([("pronto", datetime(2026, 9, 13, tzinfo=UTC), 0.0, 10)])
    day = unknown["day"].iloc[0]
    wh = Warehouse(url)
    wh.replace_partition(PRICED_INTERACTIONS, day, unknown.assign(pricing_status="unknown_model"))
    with running() as fake:
        stripe = live_stripe(fake)
        materialize_september(url, config, stripe)
        assert fake.totals_by_customer() == {"cus_bigco": 10_500}
        assert holds(url) == [("pronto", "held", 11_500, UNPRICED_USAGE)]

        # Once the call is priced (here: at no cost) the hold is lifted and the period billed.
        wh.replace_partition(PRICED_INTERACTIONS, day, unknown)
        materialize_september(url, config, stripe)
        assert fake.totals_by_customer() == NORMAL
        assert holds(url) == [("pronto", "hold_lifted", 11_500, UNPRICED_USAGE)]


def test_sensor_requests_a_billing_run_after_a_release(
    tmp_path: Path, warehouse_url: str, dagster_instance: dg.DagsterInstance
) -> None:
    raw = {**RAW_CONFIG, "billing": {"max_overage_usd_per_period": 110}}
    url, config = seeded_billing_warehouse(tmp_path, warehouse_url, raw, [])
    materialize_september(url, config)  # dry run: pronto held
    defs = dg.Definitions(jobs=[billing_release_job], resources=resources(url, config))
    with dg.build_sensor_context(instance=dagster_instance) as ctx:
        assert isinstance(billing_run_sensor(ctx), dg.SkipReason)
    run_config = {
        "ops": {
            "release_held_overage": {
                "config": {
                    "tenant_id": "pronto",
                    "period": "2026-09",
                    "released_by": "finance@example.com",
                    "reason": "ok",
                }
            }
        }
    }
    job = defs.resolve_job_def("billing_release_job")
    assert job.execute_in_process(run_config=run_config, instance=dagster_instance).success
    with dg.build_sensor_context(instance=dagster_instance) as ctx:
        first = billing_run_sensor(ctx)
    [request] = first.run_requests
    assert request.run_key.startswith("billing:release:")
    with dg.build_sensor_context(instance=dagster_instance, cursor=first.cursor) as ctx:
        assert isinstance(billing_run_sensor(ctx), dg.SkipReason)
