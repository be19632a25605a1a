"""The OpenAI admin client against a loopback fake: paging, retries, errors, secrecy, and every
usage endpoint that bills (its group-bys and its native unit)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cost_pipeline.lib.provider_usage import (
    normalize_openai_costs,
    normalize_openai_usage,
    usage_by_endpoint,
)
from cost_pipeline.lib.usage_endpoints import OPENAI_ENDPOINT_NAMES
from cost_pipeline.resources.http import ApiError
from cost_pipeline.resources.openai_admin import OpenAIAdminResource
from cost_pipeline_tests.fakes.provider_admin import (
    OPENAI_COSTS,
    OPENAI_GROUP_BY,
    OPENAI_IMAGES,
    OPENAI_USAGE,
    OPENAI_USAGE_PATHS,
    OPENAI_VECTOR_STORES,
    ProviderAdminFake,
    openai_usage_samples,
)

DAY0 = 1_788_220_800  # 2026-09-01T00:00:00Z
DAY = 86_400
START = datetime(2026, 9, 1, tzinfo=UTC)
END = datetime(2026, 9, 5, tzinfo=UTC)


def usage_bucket(i: int, **overrides: object) -> dict:
    result = {
        "object": "organization.usage.completions.result",
        "input_tokens": 1000 * (i + 1),
        "output_tokens": 100 * (i + 1),
        "input_cached_tokens": 400 * (i + 1),
        "num_model_requests": i + 1,
        "model": "gpt-4.1-mini-2025-04-14",
        "project_id": "proj_acme",
        "user_id": None,
        "api_key_id": None,
        "batch": False,
        **overrides,
    }
    return {
        "object": "bucket",
        "start_time": DAY0 + i * DAY,
        "end_time": DAY0 + (i + 1) * DAY,
        "results": [result],
    }


def cost_bucket(i: int) -> dict:
    return {
        "object": "bucket",
        "start_time": DAY0 + i * DAY,
        "end_time": DAY0 + (i + 1) * DAY,
        "results": [
            {
                "object": "organization.costs.result",
                "amount": {"value": 1.25 + i, "currency": "usd"},
                "line_item": "gpt-4.1-mini, input",
                "project_id": "proj_acme",
            }
        ],
    }


@pytest.fixture
def fake() -> Iterator[ProviderAdminFake]:
    with ProviderAdminFake(page_size=1) as server:
        server.load(OPENAI_USAGE, [usage_bucket(i) for i in range(4)])
        server.load(OPENAI_COSTS, [cost_bucket(i) for i in range(4)])
        yield server


@pytest.fixture
def client(fake: ProviderAdminFake) -> OpenAIAdminResource:
    return OpenAIAdminResource(
        admin_key=fake.openai_key, base_url=fake.base_url, max_retries=3, backoff_seconds=0.01
    )


def test_follows_every_page_and_sends_documented_params(fake, client) -> None:
    results = client.usage_completions(start=START, end=END)
    assert [r["bucket_start_time"] for r in results] == [DAY0 + i * DAY for i in range(4)]
    calls = fake.calls(OPENAI_USAGE)
    assert len(calls) == 4
    first = calls[0].params
    assert first["start_time"] == [str(DAY0)] and first["end_time"] == [str(DAY0 + 4 * DAY)]
    assert first["bucket_width"] == ["1d"]
    assert sorted(first["group_by"]) == ["api_key_id", "batch", "model", "project_id"]
    assert [c.params.get("page") for c in calls] == [None, ["page_1"], ["page_2"], ["page_3"]]
    assert all(c.headers["authorization"] == f"Bearer {fake.openai_key}" for c in calls)


def test_window_is_respected(client) -> None:
    results = client.usage_completions(
        start=datetime(2026, 9, 2, tzinfo=UTC), end=datetime(2026, 9, 3, tzinfo=UTC)
    )
    assert [r["input_tokens"] for r in results] == [2000]


def test_429_with_retry_after_then_success(fake, client) -> None:
    fake.fail(OPENAI_USAGE, 429, retry_after="1", message="rate limited")
    began = time.monotonic()
    results = client.usage_completions(start=START, end=END)
    assert len(results) == 4
    statuses = [c.status for c in fake.calls(OPENAI_USAGE)]
    assert statuses[:2] == [429, 200]
    assert time.monotonic() - began >= 0.9, "Retry-After: 1 must be waited out"


def test_500_twice_then_success(fake, client) -> None:
    fake.fail(OPENAI_COSTS, 500, times=2)
    results = client.costs(start=START, end=END)
    assert [c.status for c in fake.calls(OPENAI_COSTS)][:3] == [500, 500, 200]
    assert [r["amount"]["value"] for r in results] == [1.25, 2.25, 3.25, 4.25]


def test_exhausted_retries_name_endpoint_status_and_message(fake, client) -> None:
    fake.fail(OPENAI_USAGE, 503, times=10, message="upstream overloaded")
    with pytest.raises(ApiError) as err:
        client.usage_completions(start=START, end=END)
    text = str(err.value)
    assert "/organization/usage/completions" in text
    assert "503" in text and "upstream overloaded" in text
    assert fake.openai_key not in text
    assert len(fake.calls(OPENAI_USAGE)) == 4  # first try + max_retries


def test_malformed_page_is_a_clear_error(fake, client) -> None:
    fake.malformed(OPENAI_USAGE)
    with pytest.raises(ApiError, match=r"completions.*not JSON"):
        client.usage_completions(start=START, end=END)


def test_bucket_without_results_is_a_clear_error(fake, client) -> None:
    fake.load(OPENAI_USAGE, [{"object": "bucket", "start_time": DAY0, "end_time": DAY0 + DAY}])
    with pytest.raises(ApiError, match="malformed bucket"):
        client.usage_completions(start=START, end=END)


def test_timeout_is_retried(fake) -> None:
    fake.stall(OPENAI_COSTS, 0.6)
    client = OpenAIAdminResource(
        admin_key=fake.openai_key,
        base_url=fake.base_url,
        timeout_seconds=0.2,
        max_retries=2,
        backoff_seconds=0.01,
    )
    assert len(client.costs(start=START, end=END)) == 4


def test_wrong_key_fails_without_echoing_it(fake) -> None:
    client = OpenAIAdminResource(admin_key="sk-wrong-secret", base_url=fake.base_url)
    with pytest.raises(ApiError) as err:
        client.usage_completions(start=START, end=END)
    assert err.value.status == 401 and "invalid admin key" in str(err.value)
    assert "sk-wrong-secret" not in str(err.value)


def test_key_never_in_repr() -> None:
    client = OpenAIAdminResource(admin_key="sk-admin-very-secret")
    assert "sk-admin-very-secret" not in repr(client)
    assert "sk-admin-very-secret" not in str(client)
    assert client.is_configured and not OpenAIAdminResource().is_configured


def test_null_groups_extra_fields_and_duplicate_pages(fake, client, demo_config) -> None:
    fake.duplicate_pages = True
    fake.load(
        OPENAI_USAGE,
        [
            usage_bucket(i, project_id=None, model=None, batch=None, input_text_tokens=5, x=[1])
            for i in range(4)
        ],
    )
    results = client.usage_completions(start=START, end=END)
    assert len(results) == 7  # every page after the first repeats a bucket
    usage = normalize_openai_usage(results, demo_config)
    assert len(usage) == 4
    assert usage["input_tokens"].sum() == 1000 * (1 + 2 + 3 + 4)
    assert usage["cache_read_tokens"].sum() == 400 * 10
    assert usage["tenant_id"].isna().all() and usage["model"].isna().all()
    assert not usage["batch"].any()


def test_costs_normalize_to_usd_per_project(client, demo_config) -> None:
    costs = normalize_openai_costs(client.costs(start=START, end=END), demo_config)
    assert costs["amount_usd"].sum() == pytest.approx(1.25 * 4 + 6)
    assert set(costs["tenant_id"]) == {"acme"}
    assert set(costs["model"]) == {"gpt-4.1-mini"}


# -- every usage endpoint that bills ------------------------------------------------------------

SAMPLE_DAY = DAY0 + DAY  # 2026-09-02


@pytest.fixture
def every_endpoint(fake: ProviderAdminFake) -> ProviderAdminFake:
    for path, buckets in openai_usage_samples(SAMPLE_DAY).items():
        fake.load(path, buckets)
    return fake


def test_usage_pulls_every_endpoint_with_its_documented_group_by(every_endpoint, client) -> None:
    results = client.usage(start=START, end=END)
    by_endpoint = {r["usage_endpoint"] for r in results}
    assert by_endpoint == set(OPENAI_ENDPOINT_NAMES)
    for path in OPENAI_USAGE_PATHS:
        calls = every_endpoint.calls(path)
        assert calls and all(c.status == 200 for c in calls), path  # no group_by was refused
        assert set(calls[0].params["group_by"]) <= OPENAI_GROUP_BY[path]
    images = every_endpoint.calls(OPENAI_IMAGES)[0].params["group_by"]
    assert {"size", "source"} <= set(images)
    assert every_endpoint.calls(OPENAI_VECTOR_STORES)[0].params["group_by"] == ["project_id"]


def test_undocumented_group_by_is_refused_by_the_fake(every_endpoint) -> None:
    client = OpenAIAdminResource(
        admin_key=every_endpoint.openai_key, base_url=every_endpoint.base_url
    )
    with pytest.raises(ApiError) as err:
        client._buckets("/organization/usage/vector_stores", START, END, ("model",))
    assert err.value.status == 400 and "group_by" in str(err.value)


def test_misbehaving_endpoints_are_retried_and_deduplicated(
    every_endpoint, client, demo_config
) -> None:
    every_endpoint.duplicate_pages = True
    every_endpoint.load(
        OPENAI_IMAGES,
        openai_usage_samples(DAY0)[OPENAI_IMAGES] + openai_usage_samples(SAMPLE_DAY)[OPENAI_IMAGES],
    )
    every_endpoint.fail(OPENAI_IMAGES, 429, retry_after="0", message="rate limited")
    every_endpoint.fail(OPENAI_VECTOR_STORES, 500, times=2)
    results = client.usage(start=START, end=END, endpoints=("images", "vector_stores"))
    assert [c.status for c in every_endpoint.calls(OPENAI_IMAGES)][:2] == [429, 200]
    assert [c.status for c in every_endpoint.calls(OPENAI_VECTOR_STORES)][:3] == [500, 500, 200]
    usage = normalize_openai_usage(results, demo_config)
    images = usage.loc[usage["endpoint"] == "images"]
    assert len(images) == 4  # two days x two groups, the repeated page counted once
    assert images["images"].sum() == 2 * (12 + 3)


def test_bucket_list_named_result_is_read(fake, client) -> None:
    bucket = usage_bucket(0)
    bucket["result"] = bucket.pop("results")  # newer spec revisions' name for the list
    fake.load(OPENAI_USAGE, [bucket])
    assert len(client.usage_completions(start=START, end=END)) == 1


@pytest.mark.parametrize(
    ("endpoint", "column", "value", "unit"),
    [
        ("completions", "input_tokens", 120_000, "tokens"),
        ("embeddings", "input_tokens", 2_500_000, "tokens"),
        ("moderations", "input_tokens", 40_000, "tokens"),
        ("images", "images", 15, "images"),
        ("audio_speeches", "characters", 45_000, "characters"),
        ("audio_transcriptions", "audio_seconds", 1_830.0, "seconds"),
        ("vector_stores", "usage_bytes", 3 * 1024**3, "bytes"),
        ("code_interpreter_sessions", "sessions", 17, "sessions"),
    ],
)
def test_each_endpoint_normalizes_to_its_native_unit(
    every_endpoint, client, demo_config, endpoint, column, value, unit
) -> None:
    results = client.usage(start=START, end=END, endpoints=(endpoint,))
    usage = normalize_openai_usage(results, demo_config)
    assert set(usage["endpoint"]) == {endpoint}
    assert usage[column].sum() == value
    assert usage["unrecognized"].isna().all()
    assert set(usage["tenant_id"]) == {"acme"}
    assert usage_by_endpoint(usage)["unit"].tolist() == [unit]
