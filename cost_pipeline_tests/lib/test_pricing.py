"""Protects the pricing engine: every row costs exactly what genai-prices' calc_price says."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices.types import StartDateConstraint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cost_pipeline.catalog import PRICED_INTERACTIONS
from cost_pipeline.lib.config import PriceOverride
from cost_pipeline.lib.pricing import COST_COLUMNS, PricingEngine
from cost_pipeline.lib.rate_card import catalog_models, price_context
from cost_pipeline.store import queries
from cost_pipeline.store.warehouse import Warehouse

TIERS = [None, "default", "auto", "flex", "priority", "fast", "standard", "batch", "scale"]
OVERRIDES = [
    PriceOverride(provider="anthropic", model="*", discount_pct=5, effective_from="2026-10-01"),
    # a later, narrower discount wins over the provider-wide one while both apply
    PriceOverride(
        provider="anthropic",
        model="claude-sonnet-4-5*",
        discount_pct=12.5,
        effective_from="2026-10-10",
        effective_to="2026-10-20",
    ),
    PriceOverride(provider="openai", model="gpt-5*", discount_pct=10, effective_to="2026-10-12"),
    PriceOverride(
        provider="selfhosted",
        model="support-llama-ft",
        input_mtok=Decimal("0.2"),
        cache_read_mtok=Decimal("0.05"),
        output_mtok=Decimal("0.6"),
    ),
]


def usage_of(row) -> Usage:
    return Usage(
        input_tokens=int(row.input_tokens),
        cache_read_tokens=int(row.cache_read_tokens),
        cache_write_tokens=int(row.cache_write_tokens + row.cache_write_1h_tokens),
        cache_write_5m_tokens=int(row.cache_write_tokens),
        cache_write_1h_tokens=int(row.cache_write_1h_tokens),
        output_tokens=int(row.output_tokens),
        web_searches=int(row.web_search_requests),
    )


def discount(overrides: list[PriceOverride], provider: str, model: str, day: date) -> Decimal:
    """The documented rule, restated: the last active matching discount applies."""
    from fnmatch import fnmatchcase

    factor = Decimal(1)
    for o in overrides:
        if (
            o.discount_pct is not None
            and o.provider.lower() == provider.lower()
            and fnmatchcase(model.lower(), o.model.lower())
            and (o.effective_from is None or day >= o.effective_from)
            and (o.effective_to is None or day <= o.effective_to)
        ):
            factor = (Decimal(100) - Decimal(str(o.discount_pct))) / 100
    return factor


def reference(row, overrides: list[PriceOverride] = ()) -> float | None:
    """calc_price of one row (None if genai-prices cannot price it)."""
    at = row.occurred_at.to_pydatetime()
    try:
        price = calc_price(
            usage_of(row),
            row.model,
            provider_id=row.provider,
            genai_request_timestamp=at,
            price_context=price_context(row.provider, row.service_tier, row.batch),
        ).total_price
    except (LookupError, ValueError):
        return None
    return float(price * discount(list(overrides), row.provider, row.model, at.date()))


def change_instants(provider: str, model_id: str) -> list[datetime]:
    """Every catalog start date of the model, and the instant just before it."""
    model = next(m for p in data_snapshot.get_snapshot().providers if p.id == provider
                 for m in p.models if m.id == model_id)  # fmt: skip
    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    constraints += [v.constraint for v in model.price_variants or ()]
    out = []
    for c in constraints:
        if isinstance(c, StartDateConstraint):
            midnight = datetime.combine(c.start_date, datetime.min.time(), UTC)
            out += [midnight, midnight - timedelta(microseconds=1)]
    return out


def random_rows(rng: np.random.Generator, provider: str, model: str, n: int) -> pd.DataFrame:
    edges = change_instants(provider, model) if model in catalog_models(provider) else []
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    end = datetime(2027, 6, 1, tzinfo=UTC).timestamp()
    times = [datetime.fromtimestamp(rng.uniform(start, end), UTC) for _ in range(n)]
    for i, edge in enumerate(edges[: n // 2]):
        times[i] = edge
    size = rng.choice([50, 5_000, 120_000, 200_000, 200_001, 272_001, 900_000], size=n)
    inp = (size * rng.uniform(0.5, 1.0, n)).astype(np.int64)
    inp[size == 200_000] = 200_000  # exactly at a threshold: still the base tier
    inp[size == 200_001] = 200_001
    read = (inp * rng.uniform(0, 0.6, n) * (rng.random(n) < 0.6)).astype(np.int64)
    w5 = ((inp - read) * rng.uniform(0, 0.5, n) * (rng.random(n) < 0.4)).astype(np.int64)
    w1 = ((inp - read - w5) * rng.uniform(0, 0.5, n) * (rng.random(n) < 0.3)).astype(np.int64)
    output = rng.integers(0, 40_000, n)
    return pd.DataFrame(
        {
            "provider": provider,
            "model": model,
            "occurred_at": pd.to_datetime(times, utc=True),
            "service_tier": [TIERS[i] for i in rng.integers(0, len(TIERS), n)],
            "batch": [[None, False, True][i] for i in rng.integers(0, 3, n)],
            "input_tokens": inp,
            "cache_read_tokens": read,
            "cache_write_tokens": w5,
            "cache_write_1h_tokens": w1,
            "output_tokens": output,
            "reasoning_tokens": output // 3,
            "web_search_requests": rng.integers(0, 3, n) * (rng.random(n) < 0.3),
        }
    )


def assert_matches_calc_price(frame: pd.DataFrame, overrides: list[PriceOverride]) -> None:
    priced = PricingEngine(overrides).price(frame)
    for row, got in zip(frame.itertuples(index=False), priced.itertuples(index=False), strict=True):
        expected = reference(row, overrides)
        if expected is None:
            assert got.pricing_status == "unknown_model", row
            assert got.cost_usd == 0
        elif got.pricing_status == "incomplete_usage":
            # A price in units tokens cannot express: calc_price silently makes the call free.
            assert expected == 0 and got.cost_usd == 0, row
        else:
            # Without multipliers a tier fallback is the standard price, as calc_price does.
            assert got.pricing_status in ("priced", "tier_fallback", "override"), row
            assert got.cost_usd == pytest.approx(expected, abs=1e-9, rel=0), row
    nanos = np.rint(priced[list(COST_COLUMNS)].to_numpy() * 1e9)
    assert (nanos >= 0).all()
    np.testing.assert_array_equal(nanos.sum(axis=1), np.rint(priced["cost_usd"] * 1e9))


@pytest.mark.parametrize("overrides", [[], OVERRIDES], ids=["list", "overrides"])
def test_every_catalog_model_matches_calc_price(overrides: list[PriceOverride]) -> None:
    rng = np.random.default_rng(20261012)
    frames = [
        random_rows(rng, provider, model, 14)
        for provider in ("openai", "anthropic")
        for model in catalog_models(provider)
    ]
    # dated snapshots and aliases go through genai-prices' own matching
    for provider, model in [
        ("openai", "gpt-4o-mini-2024-07-18"),
        ("anthropic", "claude-sonnet-4-5-20250929"),
        ("anthropic", "Claude-Haiku-4-5"),
        ("OpenAI", "gpt-5-2025-08-07"),
    ]:
        frames.append(random_rows(rng, provider, model, 20))
    frame = pd.concat(frames, ignore_index=True)
    assert len(frame) > 1_900
    assert_matches_calc_price(frame, overrides)


def test_time_of_day_and_start_date_windows_within_a_day() -> None:
    # DeepSeek's off-peak windows change the price several times inside one UTC day.
    rng = np.random.default_rng(3)
    frame = pd.concat(
        [random_rows(rng, "deepseek", m, 40) for m in catalog_models("deepseek")],
        ignore_index=True,
    )
    minutes = rng.integers(0, 24 * 60, len(frame))
    days = rng.choice(pd.date_range("2026-08-15", "2026-09-12", tz="UTC"), len(frame))
    frame["occurred_at"] = pd.DatetimeIndex(days) + pd.to_timedelta(minutes, unit="min")
    edges = ["2026-09-10T01:00:00", "2026-09-10T00:59:59.999999", "2026-09-09T16:30:00"]
    frame.loc[: len(edges) - 1, "occurred_at"] = pd.to_datetime(edges, utc=True, format="ISO8601")
    assert_matches_calc_price(frame, [])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(["claude-sonnet-4-5", "gpt-5.4", "claude-opus-4-6", "gpt-4o-mini"]),
    inp=st.integers(0, 2_000_000),
    shares=st.tuples(*[st.floats(0, 1)] * 3),
    output=st.integers(0, 200_000),
    searches=st.integers(0, 50),
    when=st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC)),
    tier=st.sampled_from(TIERS),
    batch=st.sampled_from([None, False, True]),
)
def test_any_token_mix_matches_calc_price(
    model, inp, shares, output, searches, when, tier, batch
) -> None:
    read = int(inp * shares[0])
    w5 = int((inp - read) * shares[1])
    w1 = int((inp - read - w5) * shares[2])
    provider = "anthropic" if model.startswith("claude") else "openai"
    frame = pd.DataFrame(
        [[provider, model, when, tier, batch, inp, read, w5, w1, output, 0, searches]],
        columns=[
            "provider", "model", "occurred_at", "service_tier", "batch", "input_tokens",
            "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens", "output_tokens",
            "reasoning_tokens", "web_search_requests",
        ],
    )  # fmt: skip
    assert_matches_calc_price(frame, OVERRIDES)


def calls(**columns) -> pd.DataFrame:
    base = {
        "event_id": "e1",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "occurred_at": pd.Timestamp("2026-10-05T12:00:00Z"),
        "service_tier": None,
        "batch": False,
        "input_tokens": 1_000_000,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "web_search_requests": 0,
    }
    n = max((len(v) for v in columns.values() if isinstance(v, list)), default=1)
    return pd.DataFrame(base | columns, index=range(n))


def test_unknown_models_are_flagged_not_free() -> None:
    frame = calls(
        provider=["openai", "mystery-cloud", "openai", None],
        model=["gpt-unreleased-9", "gpt-4o-mini", None, "gpt-4o-mini"],
    )
    priced = PricingEngine().price(frame)
    assert priced["pricing_status"].tolist() == ["unknown_model"] * 4
    assert (priced[[*COST_COLUMNS, "cost_usd"]] == 0).all().all()
    assert priced["price_version"].notna().all()


def test_custom_model_override_prices_with_its_own_rates() -> None:
    frame = calls(
        provider="selfhosted",
        model=["support-llama-ft", "Support-Llama-FT", "other-model"],
        input_tokens=1_000_000,
        cache_read_tokens=200_000,
        cache_write_tokens=100_000,
        output_tokens=500_000,
    )
    priced = PricingEngine(OVERRIDES).price(frame)
    assert priced["pricing_status"].tolist() == ["override", "override", "unknown_model"]
    first = priced.iloc[0]
    # 700k uncached at 0.2, 200k reads at 0.05, 100k writes at input price (no write price)
    assert first["cost_input_usd"] == pytest.approx(0.14, abs=1e-12)
    assert first["cost_cache_read_usd"] == pytest.approx(0.01, abs=1e-12)
    assert first["cost_cache_write_usd"] == pytest.approx(0.02, abs=1e-12)
    assert first["cost_output_usd"] == pytest.approx(0.3, abs=1e-12)
    assert first["cost_usd"] == pytest.approx(0.47, abs=1e-12)


def test_discount_window_is_inclusive_and_last_override_wins() -> None:
    days = ["2026-09-30", "2026-10-01", "2026-10-10", "2026-10-20T23:59:59", "2026-10-21"]
    frame = calls(
        provider="anthropic",
        model="claude-sonnet-4-5-20250929",
        occurred_at=list(pd.to_datetime(days, utc=True, format="ISO8601")),
    )
    list_price = PricingEngine().price(frame)["cost_usd"]
    ratio = (PricingEngine(OVERRIDES).price(frame)["cost_usd"] / list_price).round(6)
    assert ratio.tolist() == [1.0, 0.95, 0.875, 0.875, 0.95]


def test_price_version_tracks_overrides() -> None:
    assert PricingEngine().price_version == PricingEngine([]).price_version
    assert PricingEngine(OVERRIDES).price_version != PricingEngine().price_version
    changed = [*OVERRIDES[:-1], OVERRIDES[-1].model_copy(update={"output_mtok": Decimal("0.7")})]
    assert PricingEngine(changed).price_version != PricingEngine(OVERRIDES).price_version
    priced = PricingEngine(OVERRIDES).price(calls())
    assert priced["price_version"].iloc[0] == PricingEngine(OVERRIDES).price_version


def test_cache_traffic_above_total_input_is_invalid_usage() -> None:
    frame = calls(input_tokens=[100, 100], cache_read_tokens=[50, 150])
    priced = PricingEngine().price(frame)
    assert priced["pricing_status"].tolist() == ["priced", "invalid_usage"]
    assert priced["cost_usd"].iloc[1] == 0


def test_input_forms_give_the_same_prices() -> None:
    rng = np.random.default_rng(9)
    frame = random_rows(rng, "anthropic", "claude-sonnet-4-5", 30).set_index(
        pd.RangeIndex(100, 130)
    )
    before = frame.copy()
    expected = PricingEngine().price(frame)
    assert list(expected.columns[: len(frame.columns)]) == list(frame.columns)
    pd.testing.assert_frame_equal(frame, before)  # the input is not modified
    assert (expected.index == frame.index).all()
    variants = {
        "categorical keys": frame.astype({"model": "category", "service_tier": "category"}),
        "microsecond times": frame.assign(occurred_at=frame["occurred_at"].astype(
            "datetime64[us, UTC]")),
        "naive UTC times": frame.assign(occurred_at=frame["occurred_at"].dt.tz_localize(None)),
        "ISO strings": frame.assign(occurred_at=frame["occurred_at"].map(lambda t: t.isoformat())),
        "nullable ints": frame.astype({"output_tokens": "Int64", "batch": "boolean"}),
    }  # fmt: skip
    for name, variant in variants.items():
        got = PricingEngine().price(variant)
        np.testing.assert_array_equal(got["cost_usd"], expected["cost_usd"], err_msg=name)


def test_output_conforms_to_priced_interactions() -> None:
    frame = calls(event_id=["a", "b"], model=["gpt-4o-mini", "nope"], tenant_id="t1")
    frame["day"] = frame["occurred_at"].dt.date
    priced = PRICED_INTERACTIONS.conform(PricingEngine().price(frame))
    assert priced["pricing_status"].tolist() == ["priced", "unknown_model"]
    assert priced["cost_usd"].iloc[0] == pytest.approx(0.15)
    assert PricingEngine().price(frame.iloc[:0]).empty


def test_a_price_in_units_the_record_lacks_is_never_free() -> None:
    """`tts-1` charges per character and `whisper-1` per audio hour: a record with tokens only
    cannot be priced from them. genai-prices' calc_price returns $0 for both."""
    frame = calls(model=["tts-1", "whisper-1", "gpt-4o-mini"], output_tokens=500)
    priced = PricingEngine().price(frame)
    assert priced["pricing_status"].tolist() == ["incomplete_usage", "incomplete_usage", "priced"]
    assert priced["cost_usd"].tolist()[:2] == [0.0, 0.0]
    assert priced["cost_usd"].iloc[2] > 0


def test_a_tier_the_catalog_lacks_on_the_day_is_a_flagged_fallback() -> None:
    """OpenAI's flex and batch prices for gpt-5-mini start on 2026-10-12 / 10-14 in the
    catalog: a flex call before that is priced at the standard price times the configured
    multiplier, and says so; after it, at the catalog's flex price."""
    before, after = pd.Timestamp("2026-10-01T12:00Z"), pd.Timestamp("2026-10-20T12:00Z")
    frame = calls(
        model="gpt-5-mini",
        occurred_at=[before, before, after, before],
        service_tier=["flex", None, "flex", "priority"],
        output_tokens=100_000,
    )
    plain = PricingEngine().price(frame)
    half = PricingEngine(tier_fallback={"flex": Decimal("0.5")}).price(frame)
    assert half["pricing_status"].tolist() == ["tier_fallback", "priced", "priced", "tier_fallback"]
    assert half["cost_usd"].iloc[0] == pytest.approx(plain["cost_usd"].iloc[1] / 2, abs=1e-9)
    assert plain["cost_usd"].iloc[0] == pytest.approx(plain["cost_usd"].iloc[1], abs=1e-9)
    assert half["cost_usd"].iloc[3] == pytest.approx(plain["cost_usd"].iloc[1], abs=1e-9)
    # Multipliers are part of the rate card: changing them re-prices stored calls.
    assert PricingEngine(tier_fallback={"flex": Decimal("0.5")}).price_version != (
        PricingEngine().price_version
    )


def test_the_summary_counts_each_pricing_status(warehouse: Warehouse) -> None:
    before = pd.Timestamp("2026-10-01T12:00Z")
    frame = calls(
        event_id=[f"e{i}" for i in range(5)],
        model=["gpt-5-mini", "gpt-5-mini", "tts-1", "gpt-unreleased-9", "gpt-5-mini"],
        occurred_at=before,
        service_tier=[None, "flex", None, None, None],
        cache_read_tokens=[0, 0, 0, 0, 2_000_000],  # more cache than input: invalid
        tenant_id="t1",
        agent_id=None,
        day=before.date(),
    )
    priced = PRICED_INTERACTIONS.conform(PricingEngine().price(frame))
    warehouse.replace_partition(PRICED_INTERACTIONS, before.date(), priced)
    groups = queries.llm_day_groups(warehouse, before.date())
    counts = groups.drop(columns=["day", "tenant_id", "provider", "model_or_service", "agent_id"])
    got = counts.sum().astype(int).to_dict()
    assert got["requests"] == 5
    assert got["unpriced_requests"] == 3  # tts-1, the unknown model, the invalid usage
    assert got["tier_fallback_requests"] == 1
    assert got["incomplete_usage_requests"] == 1
    assert got["unknown_model_requests"] == 1
    assert got["invalid_usage_requests"] == 1
    assert got["override_requests"] == 0
