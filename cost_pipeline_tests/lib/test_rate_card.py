"""Protects the `model_prices` rate card and the tier mapping: what it shows is what is charged."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from cost_pipeline.catalog import MODEL_PRICES
from cost_pipeline.lib.config import PriceOverride
from cost_pipeline.lib.pricing import PricingEngine
from cost_pipeline.lib.rate_card import (
    CATALOG_SOURCE,
    build_rate_card,
    catalog_models,
    price_context,
    price_version,
)

OVERRIDES = [
    PriceOverride(provider="anthropic", model="*", discount_pct=5, effective_from="2026-10-01"),
    PriceOverride(
        provider="selfhosted", model="support-llama-ft", input_mtok=Decimal("0.2"),
        output_mtok=Decimal("0.6"), effective_to="2026-12-31",
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def card() -> pd.DataFrame:
    return build_rate_card(OVERRIDES)


def test_card_is_a_valid_model_prices_table(card: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(MODEL_PRICES.conform(card), card)
    assert set(card["source"]) == {CATALOG_SOURCE, "override"}
    assert card["price_version"].unique().tolist() == [price_version(OVERRIDES)]
    assert PricingEngine(OVERRIDES).price_version == price_version(OVERRIDES)
    assert build_rate_card([])["price_version"].iloc[0] != price_version(OVERRIDES)


def test_card_covers_every_openai_and_anthropic_model(card: pd.DataFrame) -> None:
    catalog = card[card["source"] == CATALOG_SOURCE]
    for provider in ("openai", "anthropic"):
        models = catalog_models(provider)
        assert len(models) > 20
        shown = set(catalog.loc[catalog["provider"] == provider, "model_pattern"])
        assert set(models) - shown <= {m for m in models if m.startswith(("tts", "whisper"))}
    assert catalog_models("no-such-provider") == []


def test_card_shows_start_dated_changes_and_variants(card: pd.DataFrame) -> None:
    gpt5 = card[(card["model_pattern"] == "gpt-5") & (card["source"] == CATALOG_SOURCE)]
    flex = gpt5[gpt5["service_tier"] == "flex"].sort_values("effective_from", na_position="first")
    assert flex["input_mtok"].tolist() == [1.25, 0.625]
    assert flex["effective_to"].iloc[0] == pd.Timestamp("2026-10-12", tz="UTC")
    assert flex["effective_from"].iloc[1] == pd.Timestamp("2026-10-12", tz="UTC")
    batch = gpt5[gpt5["batch"].astype(bool)]
    assert batch["output_mtok"].tolist() == [10.0, 5.0]

    sonnet = card[(card["model_pattern"] == "claude-sonnet-4-5") & card["service_tier"].isna()]
    listed = sonnet[(sonnet["source"] == CATALOG_SOURCE) & ~sonnet["batch"].astype(bool)].iloc[0]
    assert listed["long_context_threshold"] == 200_000
    assert (listed["input_mtok"], listed["long_input_mtok"]) == (3.0, 6.0)
    assert (listed["cache_write_mtok"], listed["cache_write_1h_mtok"]) == (3.75, 6.0)


def test_override_rows(card: pd.DataFrame) -> None:
    overrides = card[card["source"] == "override"]
    custom = overrides[overrides["provider"] == "selfhosted"].iloc[0]
    assert (custom["model_pattern"], custom["input_mtok"], custom["output_mtok"]) == (
        "support-llama-ft", 0.2, 0.6,
    )  # fmt: skip
    assert custom["cache_read_mtok"] == 0.2  # no cache price: charged as input
    assert custom["effective_to"] == pd.Timestamp("2027-01-01", tz="UTC")  # end date inclusive
    discounted = overrides[overrides["provider"] == "anthropic"]
    assert set(discounted["model_pattern"]) == set(catalog_models("anthropic"))
    assert (discounted["effective_from"] >= pd.Timestamp("2026-10-01", tz="UTC")).all()
    sonnet = discounted[
        (discounted["model_pattern"] == "claude-sonnet-4-5") & ~discounted["batch"].astype(bool)
    ]
    assert sonnet["input_mtok"].tolist() == pytest.approx([2.85])


def test_card_rates_are_what_the_engine_charges(card: pd.DataFrame) -> None:
    rows = card[(card["source"] == CATALOG_SOURCE) & card["effective_from"].notna()]
    at = rows["effective_from"]
    probe = pd.DataFrame(
        {
            "provider": rows["provider"],
            "model": rows["model_pattern"],
            "occurred_at": at,
            "service_tier": rows["service_tier"],
            "batch": rows["batch"],
            "input_tokens": 100_000,  # under every long-context threshold
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cache_write_1h_tokens": 0,
            "output_tokens": 100_000,
            "reasoning_tokens": 0,
            "web_search_requests": 0,
        }
    )
    priced = PricingEngine().price(probe)
    # A few catalog ids (e.g. `ft:gpt-4o-mini`) are prefixes, not model references. A tier row
    # dated before its variant starts is priced at the standard price (`tier_fallback`, x1).
    known = priced["pricing_status"].isin(["priced", "tier_fallback"])
    assert known.mean() > 0.98
    got = priced.loc[known, ["cost_input_usd", "cost_output_usd"]].to_numpy() * 10
    want = rows.loc[known, ["input_mtok", "output_mtok"]].to_numpy()
    assert abs(got - want).max() < 1e-8


@pytest.mark.parametrize(
    ("provider", "tier", "batch", "context"),
    [
        ("openai", None, False, None),
        ("openai", None, None, None),
        ("openai", "auto", False, {"service_tier": "default"}),
        ("openai", "Default", False, {"service_tier": "default"}),
        ("openai", "flex", False, {"service_tier": "flex"}),
        ("openai", "priority", False, {"service_tier": "priority"}),
        ("openai", "flex", True, {"processing": "batch"}),
        ("anthropic", "standard", False, None),
        ("anthropic", "priority", False, None),
        ("anthropic", "batch", False, {"processing": "batch"}),
        ("anthropic", None, True, {"processing": "batch"}),
        ("anthropic", "fast", False, {"speed": "fast"}),
        ("selfhosted", "gold", False, {"service_tier": "gold"}),
    ],
)
def test_service_tier_and_batch_map_to_price_context(provider, tier, batch, context) -> None:
    assert price_context(provider, tier, batch) == context
