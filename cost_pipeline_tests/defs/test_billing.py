"""Protects the billing wiring: assets materialize, the sensor dedups, the close check blocks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import time_machine

from cost_pipeline.catalog import BILLING_PERIOD_CLOSE, BILLING_RECONCILIATION
from cost_pipeline.defs.billing.assets import (
    CLOSE_CHECK,
    billing_ledger,
    billing_period_close,
    billing_reconciliation,
    overage_charges,
    tenant_unit_economics,
)
from cost_pipeline.defs.billing.jobs import billing_close_job, billing_run_job
from cost_pipeline.defs.billing.sensors import billing_run_sensor
from cost_pipeline.lib.overage import OVERAGE_CHARGES, TENANT_UNIT_ECONOMICS
from cost_pipeline.resources.stripe_billing import StripeBillingResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.billing import read_ledger
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.billing_helpers import RAW_CONFIG, seed, seeded_billing_warehouse
from cost_pipeline_tests.fakes.stripe import FakeStripe, running

NOW = datetime(2026, 10, 2, 12, tzinfo=UTC)
ASSETS = [
    overage_charges,
    tenant_unit_economics,
    billing_ledger,
    billing_reconciliation,
    billing_period_close,
]


@pytest.fixture(autouse=True)
def _frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=True):
        yield


@pytest.fixture
def setup(tmp_path: Path, warehouse_url: str) -> Iterator[tuple[str, str]]:
    """A seeded warehouse on each engine (SQLite and Postgres) and the billing config."""
    yield seeded_billing_warehouse(tmp_path, warehouse_url, RAW_CONFIG)


def resources(url: str, config: str, stripe: StripeBillingResource | None = None) -> dict:
    return {
        "warehouse": WarehouseResource(url=url),
        "cost_config": CostConfigResource(path=config),
        "stripe_billing": stripe or StripeBillingResource(),
    }


def live_stripe(fake: FakeStripe) -> StripeBillingResource:
    return StripeBillingResource(
        api_key="sk_test_x", api_base=fake.url, backoff_seconds=0.01, timeout_seconds=1
    )


def materialize_september(url: str, config: str, stripe: StripeBillingResource | None = None):
    res = resources(url, config, stripe)
    for selection in ([overage_charges, tenant_unit_economics],):
        result = dg.materialize(selection, partition_key="2026-09-15", resources=res)
        assert result.success
    return dg.materialize([billing_ledger], resources=res, selection=[billing_ledger])


def test_dry_run_shows_events_it_would_send_and_margins(setup: tuple[str, str]) -> None:
    url, config = setup
    result = materialize_september(url, config)
    assert result.success
    meta = result.asset_materializations_for_node("billing_ledger")[0].metadata
    assert meta["mode"].value == "dry_run"
    assert meta["dry_run"].value == 2
    assert "pronto" in meta["meter_events"].value
    wh = Warehouse(url)
    ledger = read_ledger(wh).set_index("tenant_id")
    assert ledger.loc["pronto", "value_cents"] == 11_500
    assert ledger.loc["bigco", "value_cents"] == 10_500
    assert set(ledger["status"]) == {"dry_run"}
    econ = wh.read(TENANT_UNIT_ECONOMICS).set_index("tenant_id")
    assert econ.loc["acme", "gross_margin_usd"] == pytest.approx(-9.0)
    assert econ.loc["pronto", "revenue_usd"] == pytest.approx(414.0)


def test_live_run_bills_stripe_exactly_the_overage_charges(setup: tuple[str, str]) -> None:
    url, config = setup
    with running() as fake:
        stripe = live_stripe(fake)
        materialize_september(url, config, stripe)
        materialize_september(url, config, stripe)
        charges = Warehouse(url).read(OVERAGE_CHARGES)
        expected = {
            c: int(a)
            for c, a in zip(charges["stripe_customer_id"], charges["amount_cents"], strict=True)
            if a > 0
        }
        assert fake.totals_by_customer() == expected
        assert len(fake.state.events) == 2


def test_sensor_requests_one_run_per_new_overage_state(
    setup: tuple[str, str], dagster_instance: dg.DagsterInstance
) -> None:
    url, config = setup
    instance = dagster_instance
    res = resources(url, config)
    with dg.build_sensor_context(instance=instance) as ctx:
        assert isinstance(billing_run_sensor(ctx), dg.SkipReason)
    dg.materialize([overage_charges], partition_key="2026-09-15", resources=res, instance=instance)
    with dg.build_sensor_context(instance=instance) as ctx:
        first = billing_run_sensor(ctx)
    assert len(first.run_requests) == 1
    run_key = first.run_requests[0].run_key
    assert run_key.startswith("billing:")
    with dg.build_sensor_context(instance=instance, cursor=first.cursor) as ctx:
        again = billing_run_sensor(ctx)
    assert isinstance(again, dg.SkipReason)
    # Re-materializing the same amounts: skipped, cursor advanced.
    dg.materialize([overage_charges], partition_key="2026-09-16", resources=res, instance=instance)
    with dg.build_sensor_context(instance=instance, cursor=first.cursor) as ctx:
        same = billing_run_sensor(ctx)
    assert not same.run_requests
    # Late data raises the overage: a new run with a new key.
    seed(Warehouse(url), [("pronto", datetime(2026, 9, 20, tzinfo=UTC), 50.0, 10)])
    dg.materialize([overage_charges], partition_key="2026-09-20", resources=res, instance=instance)
    with dg.build_sensor_context(instance=instance, cursor=same.cursor) as ctx:
        late = billing_run_sensor(ctx)
    assert len(late.run_requests) == 1
    assert late.run_requests[0].run_key != run_key


def run_close(url: str, config: str, stripe: StripeBillingResource) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions(
        assets=ASSETS,
        jobs=[billing_close_job, billing_run_job],
        resources=resources(url, config, stripe),
    )
    return defs.resolve_job_def("billing_close_job").execute_in_process(
        partition_key="2026-09-01", raise_on_error=False
    )


def test_month_close_check_blocks_when_ledger_and_computation_disagree(
    setup: tuple[str, str],
) -> None:
    url, config = setup
    with running() as fake:
        stripe = live_stripe(fake)
        fake.reject_customer("cus_bigco")  # its event is refused: ledger and charges disagree
        materialize_september(url, config, stripe)
        result = run_close(url, config, stripe)
        [check] = result.get_asset_check_evaluations()
        assert check.check_name == CLOSE_CHECK
        assert not check.passed
        materialized = {m.asset_key.path[-1] for m in result.get_asset_materialization_events()}
        assert materialized == {"billing_reconciliation"}
        wh = Warehouse(url)
        assert wh.read(BILLING_PERIOD_CLOSE).empty
        recon = wh.read(BILLING_RECONCILIATION).set_index("tenant_id")
        assert recon.loc["bigco", "unconfirmed_cents"] == 10_500
        recon_meta = result.asset_materializations_for_node("billing_reconciliation")[0].metadata
        assert recon_meta["mismatches"].value == 1
        alerted = recon_meta["alerts"].value
        assert alerted != "none"
        if "queued" in alerted:
            alerts = wh.query("SELECT kind, tenant_id FROM alert_outbox")
            assert ("billing_close_mismatch", "bigco") in set(map(tuple, alerts.values.tolist()))

        # Once Stripe accepts the customer, a billing run resends the same identifier; close passes.
        fake.state.rejected_customers.clear()
        assert dg.materialize([billing_ledger], resources=resources(url, config, stripe)).success
        closed = run_close(url, config, stripe)
        assert closed.success
        assert all(c.passed for c in closed.get_asset_check_evaluations())
        assert set(wh.read(BILLING_PERIOD_CLOSE)["tenant_id"]) >= {"pronto", "bigco"}
        assert fake.totals_by_customer() == {"cus_pronto": 11_500, "cus_bigco": 10_500}


def test_month_close_names_the_events_it_waits_on_until_confirmed(
    setup: tuple[str, str],
) -> None:
    url, config = setup
    with running() as fake:
        stripe = live_stripe(fake)
        fake.fail_next("500_stored")  # the first event's key replays a stored 500
        summaries = "/v1/billing/meters/mtr_0001/event_summaries"
        fake.fail_next("503", times=50, path=summaries)  # and Stripe cannot confirm it yet
        materialize_september(url, config, stripe)
        wh = Warehouse(url)
        ledger = read_ledger(wh)
        [waiting] = ledger.loc[ledger["status"].eq("intended"), "identifier"].tolist()

        result = run_close(url, config, stripe)
        [check] = result.get_asset_check_evaluations()
        assert not check.passed
        assert check.metadata["waiting_on"].value == [waiting]
        recon_meta = result.asset_materializations_for_node("billing_reconciliation")[0].metadata
        assert recon_meta["waiting_on"].value == [waiting]
        assert waiting in check.metadata["tenants"].value
        assert wh.read(BILLING_PERIOD_CLOSE).empty
        assert set(wh.read(BILLING_RECONCILIATION)["waiting_on"].dropna()) == {waiting}

        # Stripe's summaries answer again: the next billing run confirms (absent -> re-sent
        # under a fresh key, same identifier) and the close goes through.
        fake.state.faults[summaries].clear()
        run = dg.materialize([billing_ledger], resources=resources(url, config, stripe))
        assert run.success
        meta = run.asset_materializations_for_node("billing_ledger")[0].metadata
        assert meta["sent"].value == 1
        closed = run_close(url, config, stripe)
        assert closed.success
        [check] = closed.get_asset_check_evaluations()
        assert check.passed
        assert check.metadata["waiting_on"].value == []
        assert fake.totals_by_customer() == {"cus_pronto": 11_500, "cus_bigco": 10_500}
        assert len(fake.state.events) == 2
