"""Protects currency conversion end to end, on SQLite and Postgres: a FOCUS delivery billed in
EUR is ingested as billed (original amounts and currency kept), then allocated in USD at each
charge day's ECB rate; a currency without a rate is left out of the USD totals and named."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from cost_pipeline.catalog import CLOUD_COSTS, FX_RATES, INFRA_COST_ALLOCATION
from cost_pipeline.defs.infrastructure.assets import cloud_costs, infra_cost_allocation
from cost_pipeline.defs.infrastructure.fx import fx_rates
from cost_pipeline.resources.focus_exports import FocusExports
from cost_pipeline.resources.fx import EcbRatesResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.defs.test_infrastructure_assets import deliver
from cost_pipeline_tests.lib.test_focus import focus_frame
from cost_pipeline_tests.lib.test_fx import ECB

# USD per EUR as the ECB file says (Sep 3 and 4; Sep 5 and 6 take Friday the 4th's).
USD_PER_EUR = {1: None, 2: None, 3: 1.05, 4: 1.10, 5: 1.10, 6: 1.10}


def test_a_eur_delivery_is_kept_as_billed_and_allocated_at_each_days_rate(
    tmp_path: Path, warehouse_url: str
) -> None:
    rates_file = tmp_path / "eurofxref-hist.xml"
    rates_file.write_text(ECB)
    root = tmp_path / "exports"
    eur = focus_frame("1.2", n=6, BillingCurrency="EUR")
    eur["EffectiveCost"] = [f"{d * 10}.25" for d in range(1, 7)]
    deliver(root, "2026-09/run-a", eur, datetime(2026, 9, 8, tzinfo=UTC))
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(),
        "focus_exports": FocusExports(path=str(root)),
        "ecb_rates": EcbRatesResource(url=str(rates_file)),
    }
    assert dg.materialize([fx_rates, cloud_costs], resources=resources).success
    wh = Warehouse(warehouse_url)
    assert len(wh.read(FX_RATES)) == 4
    stored = wh.read(CLOUD_COSTS).sort_values("day")
    assert set(stored["currency"]) == {"EUR"} and stored["needs_fx"].all()
    assert stored["effective_cost"].sum() == pytest.approx(sum(d * 10 + 0.25 for d in range(1, 7)))

    result = dg.materialize(
        [infra_cost_allocation],
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": "2026-09-01",
            "dagster/asset_partition_range_end": "2026-09-06",
        },
    )
    assert result.success
    allocated = wh.read(INFRA_COST_ALLOCATION)
    by_day = allocated.groupby("day")["cost_usd"].sum()
    for d, rate in USD_PER_EUR.items():
        day = date(2026, 9, d)
        if rate is None:  # before the first publication: no rate, nothing in USD
            assert day not in by_day.index or by_day[day] == pytest.approx(0.0)
        else:
            assert by_day[day] == pytest.approx((d * 10 + 0.25) * rate, abs=1e-9)
    checks = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}
    left_out = checks[("foreign_currency_converted", "2026-09-01")]
    assert (
        not left_out.passed and "1 row(s) in EUR without an exchange rate" in left_out.description
    )
    assert checks[("foreign_currency_converted", "2026-09-05")].passed
    # The totals in both currencies, against an independent computation.
    eur_total = sum(d * 10 + 0.25 for d, r in USD_PER_EUR.items() if r is not None)
    usd_total = sum((d * 10 + 0.25) * r for d, r in USD_PER_EUR.items() if r is not None)
    kept = stored[stored["day"] >= date(2026, 9, 3)]["effective_cost"].sum()
    assert kept == pytest.approx(eur_total) and by_day.sum() == pytest.approx(usd_total)
