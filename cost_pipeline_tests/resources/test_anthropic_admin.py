"""The Anthropic admin client against a loopback fake: headers, paging, retries, cents, secrecy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cost_pipeline.lib.provider_usage import normalize_anthropic_costs, normalize_anthropic_usage
from cost_pipeline.resources.anthropic_admin import AnthropicAdminResource
from cost_pipeline.resources.http import ApiError
from cost_pipeline_tests.fakes.provider_admin import (
    ANTHROPIC_COSTS,
    ANTHROPIC_USAGE,
    ProviderAdminFake,
)

START = datetime(2026, 9, 1, tzinfo=UTC)
END = datetime(2026, 9, 4, tzinfo=UTC)


def _at(i: int) -> str:
    return f"2026-09-0{i + 1}T00:00:00Z"


def usage_bucket(i: int, **overrides: object) -> dict:
    result = {
        "model": "claude-sonnet-4-5-20250929",
        "workspace_id": "wrkspc_acme",
        "api_key_id": None,
        "service_tier": "standard",
        "context_window": "0-200k",
        "uncached_input_tokens": 52_000,
        "cache_creation": {"ephemeral_1h_input_tokens": 700, "ephemeral_5m_input_tokens": 4_100},
        "cache_read_input_tokens": 210_000,
        "output_tokens": 9_800,
        "server_tool_use": {"web_search_requests": 3},
        **overrides,
    }
    return {"starting_at": _at(i), "ending_at": _at(i + 1), "results": [result]}


def cost_bucket(i: int) -> dict:
    return {
        "starting_at": _at(i),
        "ending_at": _at(i + 1),
        "results": [
            {
                "currency": "USD",
                "amount": "123.45",
                "workspace_id": "wrkspc_acme",
                "description": "Claude Sonnet 4.5 Usage - Input Tokens",
                "cost_type": "tokens",
                "token_type": "uncached_input_tokens",
                "model": "claude-sonnet-4-5-20250929",
                "service_tier": "standard",
                "context_window": "0-200k",
            },
            {
                "currency": "USD",
                "amount": "0.5",
                "workspace_id": None,
                "description": "Web search",
                "cost_type": "web_search",
                "model": None,
            },
        ],
    }


@pytest.fixture
def fake() -> Iterator[ProviderAdminFake]:
    with ProviderAdminFake(page_size=1) as server:
        server.load(ANTHROPIC_USAGE, [usage_bucket(i) for i in range(3)])
        server.load(ANTHROPIC_COSTS, [cost_bucket(i) for i in range(3)])
        yield server


@pytest.fixture
def client(fake: ProviderAdminFake) -> AnthropicAdminResource:
    return AnthropicAdminResource(
        admin_key=fake.anthropic_key, base_url=fake.base_url, max_retries=3, backoff_seconds=0.01
    )


def test_follows_pages_with_documented_params_and_headers(fake, client) -> None:
    results = client.usage_messages(start=START, end=END)
    assert [r["bucket_starting_at"] for r in results] == [_at(i) for i in range(3)]
    calls = fake.calls(ANTHROPIC_USAGE)
    assert len(calls) == 3
    first = calls[0]
    assert first.params["starting_at"] == ["2026-09-01T00:00:00Z"]
    assert first.params["ending_at"] == ["2026-09-04T00:00:00Z"]
    assert sorted(first.params["group_by[]"]) == sorted(
        ["model", "workspace_id", "api_key_id", "service_tier", "context_window"]
    )
    assert first.headers["x-api-key"] == fake.anthropic_key
    assert first.headers["anthropic-version"] == "2023-06-01"


def test_429_with_retry_after_then_success(fake, client) -> None:
    fake.fail(ANTHROPIC_USAGE, 429, retry_after="1")
    began = time.monotonic()
    assert len(client.usage_messages(start=START, end=END)) == 3
    assert [c.status for c in fake.calls(ANTHROPIC_USAGE)][:2] == [429, 200]
    assert time.monotonic() - began >= 0.9


def test_500_twice_then_success(fake, client) -> None:
    fake.fail(ANTHROPIC_COSTS, 500, times=2)
    assert len(client.costs(start=START, end=END)) == 6
    assert [c.status for c in fake.calls(ANTHROPIC_COSTS)][:3] == [500, 500, 200]


def test_overloaded_529_is_retried(fake, client) -> None:
    fake.fail(ANTHROPIC_USAGE, 529, times=2, message="Overloaded")
    assert len(client.usage_messages(start=START, end=END)) == 3
    assert [c.status for c in fake.calls(ANTHROPIC_USAGE)][:3] == [529, 529, 200]


def test_exhausted_retries_name_endpoint_status_and_message(fake, client) -> None:
    fake.fail(ANTHROPIC_USAGE, 529, times=10, message="Overloaded")
    with pytest.raises(ApiError) as err:
        client.usage_messages(start=START, end=END)
    text = str(err.value)
    assert "/organizations/usage_report/messages" in text
    assert "HTTP 529" in text and "Overloaded" in text
    assert fake.anthropic_key not in text
    assert len(fake.calls(ANTHROPIC_USAGE)) == 4


def test_exhausted_5xx_retries(fake, client) -> None:
    fake.fail(ANTHROPIC_COSTS, 502, times=10, message="bad gateway upstream")
    with pytest.raises(ApiError, match=r"cost_report failed \(HTTP 502\): bad gateway upstream"):
        client.costs(start=START, end=END)


def test_malformed_page_is_a_clear_error(fake, client) -> None:
    fake.malformed(ANTHROPIC_COSTS)
    with pytest.raises(ApiError, match=r"cost_report.*not JSON"):
        client.costs(start=START, end=END)


def test_key_never_in_repr_or_errors() -> None:
    client = AnthropicAdminResource(admin_key="sk-ant-admin-secret", base_url="http://127.0.0.1:9")
    assert "sk-ant-admin-secret" not in repr(client)
    with pytest.raises(ApiError) as err:
        AnthropicAdminResource(
            admin_key="sk-ant-admin-secret",
            base_url="http://127.0.0.1:9",
            max_retries=0,
            timeout_seconds=0.5,
        ).usage_messages(start=START, end=END)
    assert "sk-ant-admin-secret" not in str(err.value)


def test_token_convention_null_groups_and_duplicate_pages(fake, client, demo_config) -> None:
    fake.duplicate_pages = True
    fake.load(
        ANTHROPIC_USAGE,
        [
            usage_bucket(0),
            usage_bucket(1, workspace_id=None, model=None, service_tier=None, new_counter=9),
            usage_bucket(2, service_tier="batch"),
        ],
    )
    results = client.usage_messages(start=START, end=END)
    assert len(results) == 5
    usage = normalize_anthropic_usage(results, demo_config)
    assert len(usage) == 3
    # total input = uncached + 5m writes + 1h writes + reads, per bucket
    assert (usage["input_tokens"] == 52_000 + 4_100 + 700 + 210_000).all()
    assert (usage["cache_write_tokens"] == 4_100).all()
    assert (usage["cache_write_1h_tokens"] == 700).all()
    assert (usage["cache_read_tokens"] == 210_000).all()
    assert (usage["web_search_requests"] == 3).all()
    assert usage["tenant_id"].tolist() == ["acme", None, "acme"]
    assert usage["batch"].tolist() == [False, False, True]


def test_cost_amounts_are_cents_strings(client, demo_config) -> None:
    costs = normalize_anthropic_costs(client.costs(start=START, end=END), demo_config)
    assert len(costs) == 6
    assert costs["amount_usd"].tolist() == [1.2345, 0.005] * 3
    assert costs["model"].tolist()[:2] == ["claude-sonnet-4-5-20250929", None]
    assert costs["tenant_id"].tolist()[:2] == ["acme", None]
