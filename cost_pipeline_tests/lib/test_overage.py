"""Protects the overage math: allowances, markup, token prices, contracts, capped tiers, cents,
and what counts toward the allowance (`allowance_counts`: LLM usage only, or the whole cost)."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.lib.config import CostConfig, parse_config
from cost_pipeline.lib.overage import compute_overage, unit_economics
from cost_pipeline.store.spend import overage_for_day
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.billing_helpers import RAW_CONFIG, seed, small_config

NOW = datetime(2026, 9, 20, tzinfo=UTC)


def usage(tenant: str, usd: float, tokens: int = 0, *, other_usd: float = 0.0) -> pd.DataFrame:
    """One (tenant, September) usage row: `usd` of LLM calls, `other_usd` of infrastructure."""
    return pd.DataFrame(
        {
            "tenant_id": [tenant],
            "period": ["2026-09"],
            "period_start": [datetime(2026, 9, 1, tzinfo=UTC)],
            "period_end": [datetime(2026, 10, 1, tzinfo=UTC)],
            "llm_cost_usd": [usd],
            "other_cost_usd": [other_usd],
            "usage_tokens": [tokens],
        }
    )


def config_counting(counts: str) -> CostConfig:
    """The small config with every tier's `allowance_counts` set to `counts`."""
    raw = copy.deepcopy(RAW_CONFIG)
    for tier in raw["tiers"].values():
        tier["allowance_counts"] = counts
    return parse_config(raw)


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


def test_default_tier_counts_llm_usage_only_toward_allowance() -> None:
    # Pronto: $150 of LLM calls (inside the $200 allowance) and $400 of infrastructure.
    [row] = compute_overage(
        usage("pronto", 150.0, other_usd=400.0), small_config(), computed_at=NOW
    ).to_dict("records")
    assert row["allowance_counts"] == "llm"
    assert row["usage_usd"] == pytest.approx(150.0)
    assert row["cost_usd"] == pytest.approx(550.0)
    assert row["overage_quantity"] == 0 and row["amount_cents"] == 0


@pytest.mark.parametrize(
    ("counts", "usage_usd", "cents"),
    [
        ("llm", 250.0, 5_750),  # 50 over x 1.15
        ("all", 350.0, 17_250),  # 150 over x 1.15: the infrastructure is billed too
    ],
)
def test_allowance_counts_decides_what_overage_bills(
    counts: str, usage_usd: float, cents: int
) -> None:
    [row] = compute_overage(
        usage("pronto", 250.0, other_usd=100.0), config_counting(counts), computed_at=NOW
    ).to_dict("records")
    assert row["allowance_counts"] == counts
    assert row["usage_usd"] == pytest.approx(usage_usd)
    assert row["amount_cents"] == cents
    assert row["cost_usd"] == pytest.approx(350.0)  # the whole cost, either way


@pytest.mark.parametrize("counts", ["llm", "all"])
def test_unit_economics_use_the_whole_cost_whatever_counts(counts: str) -> None:
    config = config_counting(counts)
    charges = compute_overage(usage("pronto", 250.0, other_usd=100.0), config, computed_at=NOW)
    [econ] = unit_economics(charges, config).to_dict("records")
    assert econ["cost_usd"] == pytest.approx(350.0)
    assert econ["gross_margin_usd"] == pytest.approx(econ["revenue_usd"] - 350.0)


def test_overage_for_day_counts_infrastructure_only_when_the_tier_says_all(
    warehouse: Warehouse,
) -> None:
    wh = warehouse
    seed(wh, [("pronto", datetime(2026, 9, 10, tzinfo=UTC), 180.0, 10)])
    wh.append(
        DAILY_COST_SUMMARY,
        pd.DataFrame(
            {
                "day": [date(2026, 9, 10)],
                "tenant_id": ["pronto"],
                "cost_category": ["k8s"],
                "model_or_service": ["cluster"],
                "agent_id": [None],
                "cost_usd": [70.0],
                "requests": [0],
                "input_tokens": [0],
                "output_tokens": [0],
                "unpriced_requests": [0],
            }
        ),
    )
    now = datetime(2026, 10, 2, tzinfo=UTC)
    day = date(2026, 9, 15)
    llm = overage_for_day(wh, small_config(), day=day, now=now).set_index("tenant_id")
    assert llm.loc["pronto", "usage_usd"] == pytest.approx(180.0)
    assert llm.loc["pronto", "cost_usd"] == pytest.approx(250.0)
    assert llm.loc["pronto", "amount_cents"] == 0  # $180 of LLM calls: inside $200
    whole = overage_for_day(wh, config_counting("all"), day=day, now=now).set_index("tenant_id")
    assert whole.loc["pronto", "usage_usd"] == pytest.approx(250.0)
    assert whole.loc["pronto", "amount_cents"] == 5_750  # 50 over x 1.15


def test_demo_config_gives_one_capped_free_tenant_and_a_few_overage_bills() -> None:
    """The packaged demo's tiers against a month (October 2026) of its generated LLM calls,
    priced as the pipeline prices them: exactly one Free tenant reaches its cap, two to four
    paying tenants owe overage, every other tenant stays inside its allowance."""
    from cost_pipeline.demo.generator import DemoCompany
    from cost_pipeline.lib.config import load_config
    from cost_pipeline.lib.pricing import PricingEngine

    config = load_config()
    company = DemoCompany(config, seed=config.demo.seed)
    engine = PricingEngine.for_config(config)
    days = [date(2026, 10, 1) + timedelta(days=i) for i in range(31)]
    llm = pd.concat(
        [
            engine.price(company.events_for_day(d, config.demo.events_per_day))
            .groupby("tenant_id")["cost_usd"]
            .sum()
            for d in days
        ],
        axis=1,
    ).sum(axis=1)
    month = pd.DataFrame(
        {
            "tenant_id": llm.index,
            "period": "2026-10",
            "period_start": datetime(2026, 10, 1, tzinfo=UTC),
            "period_end": datetime(2026, 11, 1, tzinfo=UTC),
            "llm_cost_usd": llm.to_numpy(),
            # Infrastructure is about as much again: it must not change who owes overage.
            "other_cost_usd": llm.to_numpy(),
            "usage_tokens": 0,
        }
    )
    charges = compute_overage(month, config, computed_at=NOW).set_index("tenant_id")
    capped = [t.id for t in config.tenants if config.tier_of(t.id).hard_cap_usd is not None]
    cap = pd.Series({t: float(config.tier_of(t).hard_cap_usd) for t in capped})
    assert (llm[capped] >= cap).sum() == 1
    owing = charges.index[charges["amount_cents"] > 0]
    assert 2 <= len(owing) <= 4
    assert set(owing).isdisjoint(capped)
