"""Protects the overage math: allowances, markup, token prices, contracts, capped tiers, cents."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pytest

from cost_pipeline.lib.overage import compute_overage, unit_economics
from cost_pipeline.store.spend import overage_for_day
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.billing_helpers import seed, small_config

NOW = datetime(2026, 9, 20, tzinfo=UTC)


def usage(tenant: str, usd: float, tokens: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenant_id": [tenant],
            "period": ["2026-09"],
            "period_start": [datetime(2026, 9, 1, tzinfo=UTC)],
            "period_end": [datetime(2026, 10, 1, tzinfo=UTC)],
            "usage_usd": [usd],
            "usage_tokens": [tokens],
        }
    )


@pytest.mark.parametrize(
    ("tenant", "usd", "tokens", "source", "quantity", "cents"),
    [
        ("acme", 50.0, 0, "none", 0.0, 0),  # Free: capped, never overage
        ("pronto", 150.0, 0, "tier", 0.0, 0),  # inside the allowance
        ("pronto", 300.0, 0, "tier", 100.0, 11_500),  # 100 USD x 1.15
        ("pronto", 200.0044, 0, "tier", 0.0044, 1),  # 0.00506 -> rounded once: 1 cent
        ("toki", 999.0, 3_500_000, "tier", 2_500_000.0, 625),  # 2.5 Mtok x 2.50
        ("bigco", 2_100.0, 0, "contract", 100.0, 10_500),  # contract 5 % beats tier 10 %
    ],
)
def test_overage_per_tier(
    tenant: str, usd: float, tokens: int, source: str, quantity: float, cents: int
) -> None:
    [row] = compute_overage(usage(tenant, usd, tokens), small_config(), computed_at=NOW).to_dict(
        "records"
    )
    assert row["rate_source"] == source
    assert row["overage_quantity"] == pytest.approx(quantity)
    assert row["amount_cents"] == cents
    assert row["amount_usd"] == pytest.approx(cents / 100)


def test_rounding_happens_once_on_the_total_not_per_row() -> None:
    # 0.004 USD over, x1.15 = 0.0046 -> 0 cents; rounding the usage first would give 1 cent.
    [row] = compute_overage(usage("pronto", 200.004), small_config(), computed_at=NOW).to_dict(
        "records"
    )
    assert row["amount_cents"] == 0


def test_overage_for_day_uses_the_tenant_local_month(warehouse: Warehouse) -> None:
    wh = warehouse
    seed(
        wh,
        [
            ("pronto", datetime(2026, 9, 10, tzinfo=UTC), 250.0, 10),
            # 02:00 UTC Oct 1 is still Sept 30 in New York: it counts in NYC's September.
            ("nyc", datetime(2026, 9, 10, tzinfo=UTC), 200.0, 10),
            ("nyc", datetime(2026, 10, 1, 2, tzinfo=UTC), 20.0, 10),
            ("toki", datetime(2026, 9, 3, tzinfo=UTC), 1.0, 1_400_000),
        ],
    )
    charges = overage_for_day(
        wh, small_config(), day=date(2026, 10, 1), now=datetime(2026, 10, 2, tzinfo=UTC)
    )
    by_key = charges.set_index(["tenant_id", "period"])
    assert by_key.loc[("nyc", "2026-09"), "amount_cents"] == 2_300  # 20 over x 1.15
    assert by_key.loc[("nyc", "2026-09"), "period_end"] == pd.Timestamp("2026-10-01 04:00Z")
    assert by_key.loc[("pronto", "2026-10"), "amount_cents"] == 0
    assert ("pronto", "2026-09") not in by_key.index  # UTC day Oct 1 is all October for UTC
    sept = overage_for_day(
        wh, small_config(), day=date(2026, 9, 15), now=datetime(2026, 10, 2, tzinfo=UTC)
    ).set_index("tenant_id")
    assert sept.loc["pronto", "amount_cents"] == 5_750
    assert sept.loc["toki", "usage_tokens"] == 1_400_000
    assert sept.loc["toki", "amount_cents"] == 100  # 0.4 Mtok x 2.50


def test_unit_economics_shows_who_loses_money() -> None:
    config = small_config()
    charges = pd.concat([usage("pronto", 300.0), usage("acme", 7.0)], ignore_index=True)
    econ = unit_economics(compute_overage(charges, config, computed_at=NOW), config)
    econ = econ.set_index("tenant_id")
    assert econ.loc["pronto", "revenue_usd"] == pytest.approx(299 + 115)
    assert econ.loc["pronto", "gross_margin_usd"] == pytest.approx(114)
    assert econ.loc["pronto", "margin_pct"] == pytest.approx(27.54, abs=0.01)
    assert econ.loc["acme", "gross_margin_usd"] == pytest.approx(-7)
    assert pd.isna(econ.loc["acme", "margin_pct"])
