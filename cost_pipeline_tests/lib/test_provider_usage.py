"""Normalizing provider buckets: token convention, tenants, dedup, cents, and exact pricing."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest

from cost_pipeline.catalog import ANTHROPIC_USAGE, OPENAI_USAGE
from cost_pipeline.lib.provider_usage import (
    canonical_model,
    normalize_anthropic_costs,
    normalize_anthropic_usage,
    normalize_openai_costs,
    normalize_openai_usage,
    price_provider_usage,
)

SEPT_1 = 1_788_220_800  # 2026-09-01T00:00:00Z, before the demo's October discount


def openai_result(**fields: object) -> dict:
    base = {
        "object": "organization.usage.completions.result",
        "bucket_start_time": SEPT_1,
        "input_tokens": 0,
        "output_tokens": 0,
        "num_model_requests": 1,
        "model": "gpt-4.1",
        "project_id": "proj_acme",
        "api_key_id": None,
        "user_id": None,
        "batch": False,
    }
    return {**base, **fields}


def anthropic_result(**fields: object) -> dict:
    base = {
        "bucket_starting_at": "2026-09-01T00:00:00Z",
        "model": "claude-sonnet-4-5-20250929",
        "workspace_id": "wrkspc_acme",
        "api_key_id": None,
        "service_tier": "standard",
        "context_window": "0-200k",
        "uncached_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
        "server_tool_use": {"web_search_requests": 0},
    }
    return {**base, **fields}


# (uncached, 5m writes, 1h writes, reads, output, context window)
ANTHROPIC_BUCKETS = [
    (52_000, 4_100, 700, 210_000, 9_800, "0-200k"),
    (3_000_000, 250_000, 0, 9_000_000, 400_000, "0-200k"),  # busy, yet per call standard
    (800_000, 20_000, 5_000, 1_500_000, 60_000, "200k-1M"),
    (0, 0, 0, 0, 0, "0-200k"),
]
# Published list prices, USD per million tokens: (uncached, 5m write, 1h write, read, output)
SONNET_45 = {
    "0-200k": ("3", "3.75", "6", "0.30", "15"),
    "200k-1M": ("6", "7.50", "12", "0.60", "22.50"),
}
# (input incl. cached, cached, output)
OPENAI_BUCKETS = [(120_000, 90_000, 8_000), (50_000_000, 20_000_000, 3_000_000), (1, 0, 0)]
GPT_41 = ("2", "0.50", "8")  # uncached input, cached input, output


def anthropic_fixture() -> list[dict]:
    return [
        anthropic_result(
            api_key_id=f"k{i}",
            context_window=window,
            uncached_input_tokens=unc,
            cache_creation={"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
            cache_read_input_tokens=reads,
            output_tokens=out,
        )
        for i, (unc, w5, w1, reads, out, window) in enumerate(ANTHROPIC_BUCKETS)
    ]


def openai_fixture() -> list[dict]:
    return [
        openai_result(api_key_id=f"k{i}", input_tokens=i_, input_cached_tokens=c, output_tokens=o)
        for i, (i_, c, o) in enumerate(OPENAI_BUCKETS)
    ]


def test_anthropic_total_input_counts_every_cache_token_once(demo_config) -> None:
    usage = normalize_anthropic_usage(anthropic_fixture(), demo_config)
    for row, (unc, w5, w1, reads, out, _) in zip(
        usage.itertuples(index=False), ANTHROPIC_BUCKETS, strict=True
    ):
        assert row.input_tokens == unc + w5 + w1 + reads
        assert (row.cache_write_tokens, row.cache_write_1h_tokens) == (w5, w1)
        assert (row.cache_read_tokens, row.output_tokens) == (reads, out)
    assert list(usage.columns) == ANTHROPIC_USAGE.column_names


def test_openai_input_already_includes_cached(demo_config) -> None:
    usage = normalize_openai_usage(openai_fixture(), demo_config)
    assert usage["input_tokens"].tolist() == [b[0] for b in OPENAI_BUCKETS]
    assert usage["cache_read_tokens"].tolist() == [b[1] for b in OPENAI_BUCKETS]
    assert usage["cache_write_tokens"].eq(0).all()
    assert list(usage.columns) == OPENAI_USAGE.column_names


def test_tenant_mapping_prefers_api_key_then_project(demo_config) -> None:
    key_owner = next(t for t in demo_config.tenants if t.id != "acme").id
    config = demo_config.model_copy(deep=True)
    # give that tenant an API key inside acme's project: the key is the finer attribution
    tenants = [
        t.model_copy(
            update={
                "mappings": t.mappings.model_copy(update={"openai_api_key_ids": ["key_shared"]})
            }
        )
        if t.id == key_owner
        else t
        for t in config.tenants
    ]
    config = config.model_copy(update={"tenants": tenants})
    usage = normalize_openai_usage(
        [
            openai_result(api_key_id="key_shared"),
            openai_result(api_key_id="key_other"),
            openai_result(project_id="proj_nobody", api_key_id="key_3"),
        ],
        config,
    )
    assert usage["tenant_id"].tolist() == [key_owner, "acme", None]


def test_duplicate_buckets_counted_once_and_restatement_wins(demo_config) -> None:
    first = openai_result(input_tokens=100)
    again = openai_result(input_tokens=100)
    restated = openai_result(input_tokens=130)
    other_day = openai_result(input_tokens=7, bucket_start_time=SEPT_1 + 86_400)
    usage = normalize_openai_usage([first, again, other_day, restated], demo_config)
    assert sorted(usage["input_tokens"].tolist()) == [7, 130]


def test_unknown_fields_and_null_groups_are_fine(demo_config) -> None:
    usage = normalize_anthropic_usage(
        [
            anthropic_result(
                model=None,
                workspace_id=None,
                service_tier=None,
                context_window=None,
                future_counter={"x": 1},
                uncached_input_tokens=5,
            )
        ],
        demo_config,
    )
    row = usage.iloc[0]
    assert row["input_tokens"] == 5 and row["tenant_id"] is None and row["model"] is None


def test_anthropic_cost_amount_is_cents_string(demo_config) -> None:
    costs = normalize_anthropic_costs(
        [
            {
                "bucket_starting_at": "2026-09-01T00:00:00Z",
                "amount": "123.45",
                "currency": "USD",
                "workspace_id": "wrkspc_acme",
                "model": "claude-sonnet-4-5-20250929",
                "token_type": "output_tokens",
                "cost_type": "tokens",
                "description": None,
            }
        ],
        demo_config,
    )
    assert costs["amount_usd"].tolist() == [1.2345]
    assert costs["line_item"].tolist() == ["claude-sonnet-4-5-20250929, output_tokens"]
    assert costs["tenant_id"].tolist() == ["acme"]


def test_openai_costs_refuse_other_currencies(demo_config) -> None:
    bad = {
        "bucket_start_time": SEPT_1,
        "amount": {"value": 1.0, "currency": "eur"},
        "line_item": "gpt-4.1, input",
        "project_id": "proj_acme",
    }
    with pytest.raises(ValueError, match="currency 'eur'"):
        normalize_openai_costs([bad], demo_config)


def test_canonical_model_drops_snapshot_dates() -> None:
    models = pd.Series(["gpt-4.1-2025-04-14", "claude-sonnet-4-5-20250929", "o3", None])
    assert canonical_model(models).tolist() == ["gpt-4.1", "claude-sonnet-4-5", "o3", None]


def _mtok(tokens: int, usd_per_mtok: str) -> Decimal:
    return Decimal(tokens) * Decimal(usd_per_mtok) / Decimal(1_000_000)


def test_anthropic_priced_costs_equal_independent_computation(demo_config) -> None:
    from cost_pipeline.lib.pricing import PricingEngine

    usage = normalize_anthropic_usage(anthropic_fixture(), demo_config)
    priced = price_provider_usage(usage, PricingEngine.for_config(demo_config))
    assert priced["pricing_status"].eq("priced").all()
    for row, (unc, w5, w1, reads, out, window) in zip(
        priced.itertuples(index=False), ANTHROPIC_BUCKETS, strict=True
    ):
        p_in, p_w5, p_w1, p_read, p_out = SONNET_45[window]
        expected = {
            "cost_input_usd": _mtok(unc, p_in),
            "cost_cache_write_usd": _mtok(w5, p_w5) + _mtok(w1, p_w1),
            "cost_cache_read_usd": _mtok(reads, p_read),
            "cost_output_usd": _mtok(out, p_out),
        }
        for column, value in expected.items():
            assert getattr(row, column) == pytest.approx(float(value), abs=1e-9), column
        assert row.cost_usd == pytest.approx(float(sum(expected.values())), abs=1e-9)


def test_openai_priced_costs_equal_independent_computation(demo_config) -> None:
    from cost_pipeline.lib.pricing import PricingEngine

    usage = normalize_openai_usage(openai_fixture(), demo_config)
    priced = price_provider_usage(usage, PricingEngine.for_config(demo_config))
    p_in, p_cached, p_out = GPT_41
    for row, (inp, cached, out) in zip(priced.itertuples(index=False), OPENAI_BUCKETS, strict=True):
        expected = _mtok(inp - cached, p_in) + _mtok(cached, p_cached) + _mtok(out, p_out)
        assert row.cost_cache_read_usd == pytest.approx(float(_mtok(cached, p_cached)), abs=1e-9)
        assert row.cost_usd == pytest.approx(float(expected), abs=1e-9)
