"""Protects usage beyond tokens: every unit read from every shape, priced exactly, never $0."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cost_pipeline.catalog import LLM_INTERACTIONS, MODEL_PRICES, PRICED_INTERACTIONS
from cost_pipeline.lib.config import ConfigError, RateCard, parse_config
from cost_pipeline.lib.interaction_log import iter_log_file
from cost_pipeline.lib.pricing import UNPRICED_STATUSES, PricingEngine
from cost_pipeline.lib.providers import known_providers
from cost_pipeline.lib.rate_card import build_rate_card, price_version

D = Decimal
DAY = "2026-09-02"
AT = f"{DAY}T10:00:00Z"
# Rate cards as a configuration would hold them: a TTS vendor per 1,000 characters, a video
# vendor per second, DALL-E 3 per image by size and quality (OpenAI's published prices).
CARDS = [
    RateCard(
        provider="elevenlabs",
        model="eleven_multilingual_v2",
        characters={"usd": "0.30", "per": 1000},
    ),
    RateCard(provider="pika", model="pika-*", video_seconds={"usd": "0.08"}),
    RateCard(
        provider="openai",
        model="dall-e-3",
        images=[
            {"size": "1024x1024", "quality": "standard", "usd": "0.040"},
            {"size": "1024x1024", "quality": "hd", "usd": "0.080"},
            {"size": "1792x1024", "quality": "standard", "usd": "0.080"},
            {"size": "1792x1024", "quality": "hd", "usd": "0.120"},
        ],
    ),
]


def nanos(x: Decimal) -> Decimal:
    return x.quantize(D("1e-9"), rounding=ROUND_HALF_EVEN)


def per_m(count: int, usd: str) -> Decimal:
    return D(count) * D(usd) / D(1_000_000)


# The independent computation: each call's cost from the providers' published unit prices.
MIXED: list[tuple[dict, Decimal, str]] = [
    (  # chat, OpenAI Chat Completions usage: $0.15 / $0.075 cached / $0.60 per M tokens
        {
            "model": "gpt-4o-mini",
            "usage": {
                "prompt_tokens": 1200,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1024},
            },
        },
        per_m(176, "0.15") + per_m(1024, "0.075") + per_m(300, "0.60"),
        "priced",
    ),
    (  # chat, Anthropic usage: $1 input, $0.10 cache read, $1.25 cache write, $5 output
        {
            "provider": "anthropic",
            "model": "claude-haiku-4-5",
            "usage": {
                "input_tokens": 800,
                "cache_read_input_tokens": 4000,
                "cache_creation_input_tokens": 1000,
                "output_tokens": 250,
            },
        },
        per_m(800, "1") + per_m(4000, "0.10") + per_m(1000, "1.25") + per_m(250, "5"),
        "priced",
    ),
    (  # embeddings: $0.02 per M tokens
        {"model": "text-embedding-3-small", "usage": {"prompt_tokens": 5000, "total_tokens": 5000}},
        per_m(5000, "0.02"),
        "priced",
    ),
    (  # TTS by characters: tts-1 $15, tts-1-hd $30 per M characters (genai-prices)
        {"model": "tts-1", "characters": 1234},
        per_m(1234, "15"),
        "priced",
    ),
    ({"model": "tts-1-hd", "usage": {"characters": 777}}, per_m(777, "30"), "priced"),
    (  # a TTS vendor outside the catalog's models, by a rate card: $0.30 per 1,000 characters
        {"provider": "elevenlabs", "model": "eleven_multilingual_v2", "characters": 2500},
        D(2500) * D("0.30") / D(1000),
        "rate_card",
    ),
    (  # transcription by seconds: whisper-1 $0.006 per minute (OpenAI's duration usage)
        {"model": "whisper-1", "usage": {"type": "duration", "seconds": 95}},
        D(95) * D("0.006") / D(60),
        "priced",
    ),
    (  # the same, as an OpenTelemetry span
        {
            "provider": None,
            "model": None,
            "tenant_id": None,
            "attributes": {
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "whisper-1",
                "tenant.id": "acme",
                "gen_ai.usage.audio_seconds": 12.5,
            },
        },
        D("12.5") * D("0.006") / D(60),
        "priced",
    ),
    (  # images: DALL-E 3 by size and quality (rate card), size spelled in capitals
        {"model": "dall-e-3", "images": 2, "image_size": "1024X1024", "image_quality": "hd"},
        2 * D("0.080"),
        "rate_card",
    ),
    (
        {"model": "dall-e-3", "images": 1, "image_size": "1792x1024", "image_quality": "standard"},
        D("0.080"),
        "rate_card",
    ),
    (  # a video vendor outside the catalog, by a rate card: $0.08 per second
        {"provider": "pika", "model": "pika-2.2", "video_seconds": 6.5},
        D("6.5") * D("0.08"),
        "rate_card",
    ),
    (  # per request: Perplexity Sonar $1 / $1 per M tokens plus $12 per 1,000 requests
        {"provider": "perplexity", "model": "sonar", "input_tokens": 900, "output_tokens": 400},
        per_m(900, "1") + per_m(400, "1") + D(12) / D(1000),
        "priced",
    ),
    (  # an app-supplied cost of a service priced elsewhere, kept as reported
        {"provider": "runway", "model": "gen-4-turbo", "cost_usd": 0.375},
        D("0.375"),
        "app_reported",
    ),
    (  # truly $0: the app reports a free call
        {"provider": "internal-ocr", "model": "ocr-v1", "cost_usd": 0},
        D(0),
        "app_reported",
    ),
]


def record(i: int, fields: dict) -> dict:
    base = {
        "event_id": f"u{i}",
        "occurred_at": AT,
        "tenant_id": "acme",
        "provider": "openai",
    }
    out = base | fields
    return {k: v for k, v in out.items() if v is not None}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read(path: Path, engine: PricingEngine) -> tuple[pd.DataFrame, pd.DataFrame]:
    providers = known_providers((), engine.rate_cards)
    chunks = list(iter_log_file(path, known_providers=providers, priced_units=engine.priced_units))
    good = pa.concat_tables([engine.price_arrow(c.good) for c in chunks]).to_pandas()
    quarantine = pd.concat([c.quarantine for c in chunks], ignore_index=True)
    return good, quarantine


@pytest.fixture(scope="module")
def engine() -> PricingEngine:
    return PricingEngine(rate_cards=CARDS)


def test_a_mixed_log_prices_every_call_exactly(tmp_path: Path, engine: PricingEngine) -> None:
    path = write_jsonl(
        tmp_path / "mixed.jsonl", [record(i, f) for i, (f, _, _) in enumerate(MIXED)]
    )
    good, quarantine = read(path, engine)
    assert quarantine.empty, quarantine["reason"].tolist()
    good = good.set_index("event_id").loc[[f"u{i}" for i in range(len(MIXED))]]
    for (event_id, row), (fields, expected, status) in zip(good.iterrows(), MIXED, strict=True):
        assert row["pricing_status"] == status, (event_id, fields)
        assert D(f"{row['cost_usd']:.9f}") == nanos(expected), (event_id, fields, expected)
        assert (row["cost_usd"] > 0) == (expected > 0), event_id  # $0 only when truly $0
    parts = good[["cost_input_usd", "cost_cache_read_usd", "cost_cache_write_usd"]].sum(axis=1)
    parts += good[["cost_output_usd", "cost_other_usd", "cost_units_usd"]].sum(axis=1)
    np.testing.assert_allclose(parts, good["cost_usd"], atol=1e-12)
    tts = good.loc["u3"]
    assert tts["cost_units_usd"] == tts["cost_usd"] and tts["characters"] == 1234
    assert good.loc["u12", "reported_cost_usd"] == 0.375
    assert good.loc["u12", "cost_other_usd"] == 0.375
    assert not good["pricing_status"].isin(UNPRICED_STATUSES).any()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_units_read_alike_from_csv_and_parquet(
    tmp_path: Path, engine: PricingEngine, fmt: str
) -> None:
    rows = pd.DataFrame(
        {
            "event_id": ["c1", "c2", "c3", "c4"],
            "occurred_at": AT,
            "tenant_id": "acme",
            "provider": ["openai", "openai", "pika", "runway"],
            "model": ["tts-1", "dall-e-3", "pika-2.2", "gen-4-turbo"],
            "characters": [1234, None, None, None],
            "images": [None, 3, None, None],
            "image_size": [None, "1024x1024", None, None],
            "image_quality": [None, "standard", None, None],
            "video_seconds": [None, None, 2.25, None],
            "cost_usd": [None, None, None, 1.5],
        }
    )
    path = tmp_path / f"log.{fmt}"
    if fmt == "csv":
        rows.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path)
    good, quarantine = read(path, engine)
    assert quarantine.empty, quarantine["reason"].tolist()
    got = good.set_index("event_id")["cost_usd"].to_dict()
    assert got == pytest.approx(
        {
            "c1": float(per_m(1234, "15")),
            "c2": 0.12,
            "c3": 0.18,
            "c4": 1.5,
        },
        abs=1e-12,
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (  # a provider nothing prices, without a reported cost
            {"provider": "luma", "model": "ray-2", "video_seconds": 5},
            "provider 'luma' is unknown",
        ),
        (  # a unit no rate card prices for that vendor's model
            {"provider": "elevenlabs", "model": "eleven_v3", "characters": 900},
            "no price for characters (900) of elevenlabs/eleven_v3",
        ),
        (  # images of a catalog provider's model the catalog cannot price per image
            {"model": "gpt-4o-mini", "images": 1},
            "no price for images (1) of openai/gpt-4o-mini",
        ),
        ({"model": "tts-1", "characters": 12.5}, "characters is not an integer"),
        ({"model": "whisper-1", "audio_seconds": -3}, "audio_seconds is negative"),
        (
            {"model": "tts-1", "characters": 10, "usage": {"characters": 11}},
            "characters is given twice with different values",
        ),
        ({"provider": "runway", "cost_usd": 5000}, "implausible_usage: cost_usd"),
        ({"model": "tts-1"}, "no usage"),
    ],
)
def test_a_unit_nothing_prices_is_quarantined_with_its_reason(
    tmp_path: Path, engine: PricingEngine, fields: dict, reason: str
) -> None:
    fields = {"model": "x"} | fields
    path = write_jsonl(tmp_path / "bad.jsonl", [record(0, fields)])
    good, quarantine = read(path, engine)
    assert good.empty
    assert len(quarantine) == 1 and reason in quarantine["reason"].iloc[0]


def calls(**columns: object) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "occurred_at": pd.Timestamp(AT),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "service_tier": None,
            "batch": False,
            "input_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cache_write_1h_tokens": 0,
            "output_tokens": 0,
            "reasoning_tokens": 0,
            "web_search_requests": 0,
        },
        index=range(max((len(v) for v in columns.values() if isinstance(v, list)), default=1)),
    )
    for name, value in columns.items():
        frame[name] = value
    return frame


def test_a_unit_without_a_price_at_the_call_is_incomplete_never_free() -> None:
    """Stored calls re-priced where a unit has no price (an image size the card lacks, a card
    not in force that day, tokens of a unit-only model) are flagged, not $0-and-silent."""
    dated = RateCard(
        provider="pika", model="*", effective_from=date(2026, 9, 10), video_seconds={"usd": "1"}
    )
    engine = PricingEngine(rate_cards=[*CARDS[2:], dated])
    frame = calls(
        provider=["openai", "pika", "pika", "openai", "openai"],
        model=["dall-e-3", "pika-2.2", "pika-2.2", "tts-1", "gpt-4o-mini"],
        occurred_at=pd.to_datetime([AT, AT, "2026-09-10T00:00:00Z", AT, AT]),
        images=[1, None, None, None, 2],
        image_size=["512x512", None, None, None, None],
        video_seconds=[None, 3.0, 3.0, None, None],
        output_tokens=[0, 0, 0, 500, 10],
    )
    priced = engine.price(frame)
    assert priced["pricing_status"].tolist() == [
        "incomplete_usage",  # no price for 512x512
        "unknown_model",  # the card starts on 09-10; the provider has no token price
        "rate_card",
        "incomplete_usage",  # tts-1 charges characters: tokens alone cannot be priced
        "incomplete_usage",  # images of a token-priced model
    ]
    assert priced["cost_usd"].tolist() == [0, 0, 3.0, 0, 0]


def test_a_rate_card_change_changes_the_price_version_and_reprices() -> None:
    before = PricingEngine(rate_cards=CARDS)
    cheaper = RateCard(provider="pika", model="pika-*", video_seconds={"usd": "0.05"})
    after = PricingEngine(rate_cards=[CARDS[0], cheaper, CARDS[2]])
    assert before.price_version != after.price_version
    assert PricingEngine().price_version == price_version([])  # no card: the old version
    frame = calls(provider="pika", model="pika-2.2", video_seconds=[10.0])
    assert before.price(frame)["cost_usd"].iloc[0] == pytest.approx(0.8, abs=1e-12)
    assert after.price(frame)["cost_usd"].iloc[0] == pytest.approx(0.5, abs=1e-12)
    # Effective-dated cards: each call at the card in force on its UTC day.
    old = RateCard(
        provider="pika", model="*", effective_to=date(2026, 9, 1), video_seconds={"usd": "0.1"}
    )
    new = RateCard(
        provider="pika", model="*", effective_from=date(2026, 9, 2), video_seconds={"usd": "0.2"}
    )
    frame = calls(
        provider="pika",
        model="pika-2.2",
        video_seconds=[10.0, 10.0],
        occurred_at=pd.to_datetime(["2026-09-01T23:59:59Z", "2026-09-02T00:00:00Z"]),
    )
    assert PricingEngine(rate_cards=[old, new]).price(frame)["cost_usd"].tolist() == [1.0, 2.0]


def test_the_rate_card_table_shows_unit_prices_and_cards() -> None:
    card = build_rate_card(rate_cards=CARDS)
    assert card["price_version"].unique().tolist() == [
        PricingEngine(rate_cards=CARDS).price_version
    ]
    tts = card.loc[card["model_pattern"] == "tts-1"].iloc[0]
    assert tts["characters_mchar"] == 15.0
    whisper = card.loc[card["model_pattern"] == "whisper-1"].iloc[0]
    assert whisper["audio_hour"] == 0.36
    cards = card.loc[card["source"] == "rate_card"]
    assert len(cards) == 2 + 4  # a row per card with unit prices, one per image price
    assert cards.loc[cards["provider"] == "pika", "video_second"].tolist() == [0.08]
    assert MODEL_PRICES.conform(card).shape == card.shape


def test_a_rate_card_must_price_something() -> None:
    with pytest.raises(ConfigError, match="prices at least one unit"):
        parse_config(
            {"tiers": {"t": {"name": "T"}}, "tenants": [], "rate_cards": [{"provider": "x"}]}
        )


def test_reader_output_conforms_and_keeps_absent_units_null(
    tmp_path: Path, engine: PricingEngine
) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [record(0, {"model": "gpt-4o-mini", "input_tokens": 10}), record(1, MIXED[3][0])],
    )
    good, _ = read(path, engine)
    stored = PRICED_INTERACTIONS.conform(good)
    assert stored["characters"].isna().tolist() == [True, False]
    assert stored["requests"].isna().all() and stored["reported_cost_usd"].isna().all()
    assert set(LLM_INTERACTIONS.column_names) <= set(stored.columns)


def test_price_usage_equals_price_for_the_same_calls(engine: PricingEngine) -> None:
    at = datetime(2026, 9, 2, 10, tzinfo=UTC)
    frame = calls(
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_tokens=[1000, 250_000, 300_000],
        cache_read_tokens=[0, 200_000, 0],
        output_tokens=[0, 4000, 100],
    )
    costs, statuses = engine.price_usage(
        "anthropic",
        "claude-sonnet-4-5",
        at,
        {c: frame[c].to_numpy() for c in ("input_tokens", "cache_read_tokens", "output_tokens")},
    )
    priced = engine.price(frame)
    np.testing.assert_array_equal(costs["cost_usd"], priced["cost_usd"].to_numpy())
    assert statuses == priced["pricing_status"].astype(str).tolist()


def test_the_demo_media_calls_load_and_price_by_the_demo_rate_cards(tmp_path: Path) -> None:
    from cost_pipeline.demo.media import media_calls, write_demo_media
    from cost_pipeline.lib.config import load_config

    config = load_config()
    days = [date(2026, 9, 14), date(2026, 9, 19)]  # a Monday and a Saturday
    write_demo_media(config, tmp_path, days)
    assert media_calls(config, days[0]) == media_calls(config, days[0])  # seed-determined
    engine = PricingEngine.for_config(config)
    # One file for the days, whatever their number (one ingestion transaction).
    (path,) = (tmp_path / "interactions").glob("media-*.jsonl")
    assert path.name == "media-2026-09-14_2026-09-19.jsonl"
    good, quarantine = read(path, engine)
    assert quarantine.empty and len(good) > 0
    assert set(pd.to_datetime(good["day"]).dt.date) == set(days)
    assert set(good["pricing_status"]) == {"rate_card"}
    assert (good["cost_usd"] > 0).all() and (good["cost_units_usd"] == good["cost_usd"]).all()
    assert set(good["tenant_id"]) <= {"beacon", "delta"}
    write_demo_media(config, tmp_path, [*days, date(2026, 9, 20)])  # only the new day is written
    assert sorted(p.name for p in (tmp_path / "interactions").glob("media-*.jsonl")) == [
        "media-2026-09-14_2026-09-19.jsonl",
        "media-2026-09-20_2026-09-20.jsonl",
    ]
