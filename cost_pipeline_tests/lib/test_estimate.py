"""Protects `estimate_cost`: the ledger's own price for the same usage, a range, never $0."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cost_pipeline.cli import main
from cost_pipeline.estimate import estimate_cost, tokens_from_text
from cost_pipeline.lib.config import PriceOverride, RateCard
from cost_pipeline.lib.pricing import PricingEngine

AT = datetime(2026, 9, 2, 10, tzinfo=UTC)
ENGINE = PricingEngine(
    [PriceOverride(provider="anthropic", model="claude-haiku-*", discount_pct=20)],
    rate_cards=[
        RateCard(provider="pika", model="*", video_seconds={"usd": "0.08"}),
        RateCard(
            provider="openai", model="dall-e-3", images=[{"size": "1024x1024", "usd": "0.04"}]
        ),
    ],
)


def ledger_cost(provider: str, model: str, **usage: object) -> Decimal:
    """What the ledger charges for one call with this usage (`PricingEngine.price`)."""
    row = {
        "occurred_at": pd.Timestamp(AT),
        "provider": provider,
        "model": model,
        "service_tier": usage.pop("service_tier", None),
        "batch": False,
        "input_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "output_tokens": 0,
        "web_search_requests": 0,
    } | usage
    priced = ENGINE.price(pd.DataFrame([row]))
    return Decimal(f"{priced['cost_usd'].iloc[0]:.9f}")


@pytest.mark.parametrize(
    ("provider", "model", "inp", "out", "cached", "tier"),
    [
        ("openai", "gpt-4o-mini", 1200, 300, 1024, None),
        ("openai", "gpt-5-mini", 40_000, 8000, 0, "flex"),
        ("anthropic", "claude-sonnet-4-5", 250_000, 4000, 200_000, None),  # long context
        ("anthropic", "claude-haiku-4-5", 5000, 500, 4000, None),  # a discount override
        ("perplexity", "sonar", 900, 400, 0, None),  # a per-request fee
    ],
)
def test_the_range_is_the_engine_price_of_its_two_ends(
    provider: str, model: str, inp: int, out: int, cached: int, tier: str | None
) -> None:
    e = estimate_cost(
        provider, model, inp, out, cached_input_tokens=cached, service_tier=tier, at=AT,
        engine=ENGINE,
    )  # fmt: skip
    low = ledger_cost(
        provider, model, input_tokens=inp, cache_read_tokens=cached, service_tier=tier
    )
    high = ledger_cost(provider, model, input_tokens=inp, output_tokens=out, service_tier=tier)
    assert (e.low_usd, e.high_usd) == (low, high)
    assert e.low_usd < e.high_usd
    assert e.price_version == ENGINE.price_version
    assert e.input_tokens == (inp, inp)


@pytest.mark.parametrize(
    ("provider", "model", "units", "columns", "status"),
    [
        ("openai", "tts-1", {"characters": 4321}, {"characters": 4321}, "priced"),
        ("openai", "whisper-1", {"audio_seconds": 61.5}, {"audio_seconds": 61.5}, "priced"),
        ("pika", "pika-2.2", {"video_seconds": 6}, {"video_seconds": 6.0}, "rate_card"),
        (
            "openai",
            "dall-e-3",
            {"images": 3, "image_size": "1024x1024"},
            {"images": 3, "image_size": "1024x1024"},
            "rate_card",
        ),
    ],
)
def test_units_are_priced_as_the_ledger_prices_them(
    provider: str, model: str, units: dict, columns: dict, status: str
) -> None:
    e = estimate_cost(provider, model, at=AT, engine=ENGINE, **units)
    expected = ledger_cost(provider, model, **columns)
    assert e.low_usd == e.high_usd == expected > 0
    assert e.pricing_status == status


def test_text_sizes_characters_exactly_for_a_model_priced_per_character() -> None:
    text = "Bonjour, comment ça va ? " * 10
    e = estimate_cost("openai", "tts-1", text=text, at=AT, engine=ENGINE)
    assert e.low_usd == e.high_usd == Decimal(len(text)) * 15 / 1_000_000
    assert any("len(text)" in a for a in e.assumptions)


def test_text_sizes_tokens_as_a_documented_range() -> None:
    text = "Summarise the customer's last three tickets and draft a reply. " * 20
    e = estimate_cost("openai", "gpt-4o-mini", text=text, max_output_tokens=0, engine=ENGINE, at=AT)
    sized = tokens_from_text(text)
    assert e.input_tokens == (sized.low, sized.high)
    assert sized.low <= len(text) / 4 <= sized.high
    assert e.low_usd == ledger_cost("openai", "gpt-4o-mini", input_tokens=sized.low)
    assert e.high_usd == ledger_cost("openai", "gpt-4o-mini", input_tokens=sized.high)
    assert any("offline approximation" in a for a in e.assumptions)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_token_range_is_ordered_and_never_above_one_token_per_byte(text: str) -> None:
    sized = tokens_from_text(text)
    assert 0 <= sized.low <= sized.expected <= sized.high
    assert sized.high <= max(len(text.encode("utf-8", "surrogatepass")), 1 if text else 0)
    assert (sized.high == 0) == (text == "")


def test_a_call_nothing_prices_has_no_estimate_never_zero() -> None:
    for e in (
        estimate_cost("openai", "gpt-unreleased-9", 1000, 100, at=AT, engine=ENGINE),
        estimate_cost("openai", "tts-1", 1000, 100, at=AT, engine=ENGINE),  # needs characters
        estimate_cost("openai", "dall-e-3", images=1, image_size="1792x1024", at=AT, engine=ENGINE),
    ):
        assert not e.priced and e.low_usd is None and e.high_usd is None
        assert e.pricing_status in ("unknown_model", "incomplete_usage")


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        estimate_cost("openai", "gpt-4o-mini", 10, at=datetime(2026, 9, 2), engine=ENGINE)


def test_cli_prints_the_range_and_fails_without_a_price(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(
            ["estimate", "openai", "gpt-4o-mini", "--input-tokens", "1000", "--at", AT.isoformat()]
        )
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("$0.000150000 .. $0.000150000")
    with pytest.raises(SystemExit) as done:
        main(["estimate", "openai", "gpt-unreleased-9", "--input-tokens", "10"])
    assert done.value.code == 1
    assert "no estimate: unknown_model" in capsys.readouterr().out
