"""Protects usage shapes and bounds: OpenAI, Anthropic and OTel records load and price exactly as
their canonical twin; usage-less, NaN and implausible calls are quarantined, never loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from cost_pipeline.catalog import LLM_INTERACTIONS
from cost_pipeline.lib.config import Plausibility
from cost_pipeline.lib.interaction_log import iter_log_file
from cost_pipeline.lib.pricing import PricingEngine

PROVIDERS = frozenset({"openai", "anthropic", "aws", "selfhosted"})
WHEN = "2026-09-08T10:00:00.250Z"
IDS = {"tenant_id": "acme", "user_id": "acme-u001", "agent_id": "support-bot"}


def canonical(event_id: str, provider: str, model: str, **tokens) -> dict:
    return {
        "event_id": event_id,
        "occurred_at": WHEN,
        **IDS,
        "provider": provider,
        "model": model,
        "status": "ok",
        **tokens,
    }


OPENAI = canonical(
    "c-openai",
    "openai",
    "gpt-4.1-mini",
    input_tokens=1000,
    cache_read_tokens=256,
    output_tokens=120,
    reasoning_tokens=30,
)
ANTHROPIC = canonical(
    "c-anthropic",
    "anthropic",
    "claude-sonnet-4-0",
    input_tokens=1000,
    cache_read_tokens=256,
    cache_write_tokens=100,
    cache_write_1h_tokens=44,
    output_tokens=120,
    web_search_requests=2,
)
OPENAI_CHAT = {
    **OPENAI,
    "provider": "OpenAI",
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 120,
        "total_tokens": 1120,
        "prompt_tokens_details": {"cached_tokens": 256, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 30},
    },
}
OPENAI_CHAT_FLAT = {
    **OPENAI,
    "prompt_tokens": 1000,
    "completion_tokens": 120,
    "prompt_tokens_details": {"cached_tokens": 256},
    "completion_tokens_details": {"reasoning_tokens": 30},
}
OPENAI_RESPONSES = {
    **OPENAI,
    "usage": {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 256},
        "output_tokens": 120,
        "output_tokens_details": {"reasoning_tokens": 30},
        "total_tokens": 1120,
    },
}
ANTHROPIC_MESSAGES = {
    **ANTHROPIC,
    "provider": " Anthropic",
    "usage": {
        "input_tokens": 600,  # excludes the cache: 600 + 144 + 256 = 1000
        "cache_creation_input_tokens": 144,
        "cache_read_input_tokens": 256,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 44},
        "output_tokens": 120,
        "server_tool_use": {"web_search_requests": 2},
    },
}
OTEL_SPAN = {
    "name": "chat gpt-4.1-mini",
    "context": {"trace_id": "0x5b8aa5a2d2c872e8321cf37308d69df2", "span_id": "0x051581bf3cb55c13"},
    "kind": "SpanKind.CLIENT",
    "parent_id": "0x4f2b3c1d0e9a8b7c",
    "start_time": "2026-09-08T10:00:00.250000Z",
    "end_time": "2026-09-08T10:00:01.050000Z",
    "status": {"status_code": "UNSET"},
    "attributes": {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4.1-mini",
        "gen_ai.response.model": "gpt-4.1-mini",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 120,
        "gen_ai.usage.cache_read.input_tokens": 256,
        "gen_ai.usage.reasoning.output_tokens": 30,
        "tenant.id": "acme ",
        "user.id": "acme-u001",
        "gen_ai.agent.name": "support-bot",
    },
}
OTEL_TWIN = {
    **OPENAI,
    "event_id": "0x051581bf3cb55c13",
    "parent_event_id": "0x4f2b3c1d0e9a8b7c",
    "latency_ms": 800,
}
OTLP_SPAN = {
    "traceId": "5b8aa5a2d2c872e8321cf37308d69df2",
    "spanId": "0123456789abcdef",
    "startTimeUnixNano": "1788861600250000000",
    "endTimeUnixNano": "1788861601050000000",
    "status": {"code": 1},
    "attributes": [
        {"key": "gen_ai.provider.name", "value": {"stringValue": "aws.bedrock"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "anthropic.claude-sonnet-4"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1000"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "120"}},
        {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": "256"}},
        {"key": "gen_ai.usage.cache_creation.input_tokens", "value": {"intValue": "144"}},
        {"key": "tenant.id", "value": {"stringValue": "acme"}},
    ],
}
OTLP_TWIN = {
    "event_id": "0123456789abcdef",
    "occurred_at": "2026-09-08T10:00:00.250Z",
    "tenant_id": "acme",
    "provider": "aws",
    "model": "anthropic.claude-sonnet-4",
    "input_tokens": 1000,
    "cache_read_tokens": 256,
    "cache_write_tokens": 144,
    "output_tokens": 120,
    "latency_ms": 800,
    "status": "ok",
}

SHAPED = [
    ("openai chat usage", OPENAI_CHAT, OPENAI),
    ("openai chat top-level", OPENAI_CHAT_FLAT, OPENAI),
    ("openai responses", OPENAI_RESPONSES, OPENAI),
    ("anthropic messages", ANTHROPIC_MESSAGES, ANTHROPIC),
    ("otel span", OTEL_SPAN, OTEL_TWIN),
    ("otlp span", OTLP_SPAN, OTLP_TWIN),
]


def read(path: Path, bounds: Plausibility | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    chunks = list(iter_log_file(path, known_providers=PROVIDERS, bounds=bounds))
    good = pa.concat_tables([c.good for c in chunks]).to_pandas(coerce_temporal_nanoseconds=True)
    quarantine = pd.concat([c.quarantine for c in chunks], ignore_index=True)
    return LLM_INTERACTIONS.conform(good), quarantine


def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize(("shaped", "twin"), [s[1:] for s in SHAPED], ids=[s[0] for s in SHAPED])
def test_a_shaped_record_loads_and_prices_exactly_as_its_canonical_twin(
    tmp_path, shaped, twin
) -> None:
    got, quarantine = read(jsonl(tmp_path / "shaped.jsonl", [shaped]))
    want, _ = read(jsonl(tmp_path / "canonical.jsonl", [{**twin, "event_id": "x"}]))
    assert quarantine.empty, quarantine["reason"].tolist()
    assert got["event_id"].tolist() == [twin["event_id"]]
    columns = [c for c in LLM_INTERACTIONS.column_names if c not in ("event_id", "source_file")]
    pd.testing.assert_frame_equal(got[columns], want[columns])
    engine = PricingEngine()
    cost, twin_cost = engine.price(got), engine.price(want)
    assert cost["cost_usd"].tolist() == twin_cost["cost_usd"].tolist()
    if twin["provider"] != "aws":
        assert (cost["pricing_status"] == "priced").all() and cost["cost_usd"].iloc[0] > 0


def test_all_shapes_in_one_file_load_exactly_once(tmp_path) -> None:
    records = [
        {**s, "event_id": f"s{i}"} if "event_id" in s else s for i, (_, s, _) in enumerate(SHAPED)
    ]
    got, quarantine = read(jsonl(tmp_path / "mixed.jsonl", records))
    assert quarantine.empty, quarantine["reason"].tolist()
    assert len(got) == len(SHAPED) == got["event_id"].nunique()
    assert set(got["provider"]) == {"openai", "anthropic", "aws"}
    assert set(got["tenant_id"]) == {"acme"}


def test_shapes_that_disagree_are_quarantined(tmp_path) -> None:
    both = {**OPENAI_CHAT, "input_tokens": 999}  # top-level canonical vs `usage`
    _, quarantine = read(jsonl(tmp_path / "x.jsonl", [both]))
    assert "more than one shape" in quarantine["reason"].iloc[0]


@pytest.mark.parametrize(
    "record",
    [
        {k: v for k, v in OPENAI.items() if not k.endswith("_tokens")},
        {**{k: v for k, v in OPENAI.items() if not k.endswith("_tokens")}, "usage": {}},
        {**{k: v for k, v in OPENAI.items() if not k.endswith("_tokens")}, "usage": None},
    ],
    ids=["no token fields", "empty usage", "null usage"],
)
def test_a_record_without_usage_is_quarantined_never_loaded_as_zero(tmp_path, record) -> None:
    got, quarantine = read(jsonl(tmp_path / "x.jsonl", [record, OPENAI]))
    assert got["event_id"].tolist() == ["c-openai"]
    assert quarantine["reason"].iloc[0].startswith("no usage")
    assert quarantine["line"].tolist() == [1]


@pytest.mark.parametrize(
    "value", ["1e15", "1e17", "1e20", "99999999999999999999", "100000000000000000"]
)
def test_implausible_token_counts_are_quarantined(tmp_path, value) -> None:
    line = json.dumps({**OPENAI, "input_tokens": 0}).replace(
        '"input_tokens": 0', f'"input_tokens": {value}'
    )
    path = tmp_path / "x.jsonl"
    path.write_text(line + "\n" + json.dumps(OPENAI) + "\n")
    got, quarantine = read(path)
    assert got["event_id"].tolist() == ["c-openai"]
    assert quarantine["reason"].iloc[0].startswith("implausible_usage:")
    assert quarantine["raw"].iloc[0] == line


def test_implausible_counts_in_csv_and_the_shaped_fields_too(tmp_path) -> None:
    path = tmp_path / "x.csv"
    header = "event_id,occurred_at,tenant_id,provider,model,input_tokens,output_tokens"
    rows = [
        f"e{i},{WHEN},acme,openai,gpt-4.1-mini,{v},1"
        for i, v in enumerate(["99999999999999999999", "1e17", "100"])
    ]
    path.write_text("\n".join([header, *rows]) + "\n")
    got, quarantine = read(path)
    assert got["event_id"].tolist() == ["e2"]
    assert quarantine["line"].tolist() == [2, 3]
    assert all(r.startswith("implausible_usage:") for r in quarantine["reason"])
    shaped = {**OPENAI_CHAT, "usage": {"prompt_tokens": 10**17, "completion_tokens": 1}}
    _, quarantine = read(jsonl(tmp_path / "y.jsonl", [shaped]))
    assert quarantine["reason"].iloc[0].startswith("implausible_usage: usage.prompt_tokens")


def test_bounds_are_configurable_and_context_windows_are_checked(tmp_path) -> None:
    records = [
        {**OPENAI, "event_id": "small", "input_tokens": 6000, "cache_read_tokens": 0},
        {**OPENAI, "event_id": "window", "input_tokens": 1_200_000, "cache_read_tokens": 0},
    ]
    path = jsonl(tmp_path / "x.jsonl", records)
    got, quarantine = read(path)  # defaults: 10 M per call, gpt-4.1-mini's 1 M window
    assert got["event_id"].tolist() == ["small"]
    assert "context window" in quarantine["reason"].iloc[0]
    got, _ = read(path, Plausibility(check_context_window=False))
    assert got["event_id"].tolist() == ["small", "window"]
    got, quarantine = read(path, Plausibility(max_tokens_per_call=5000))
    assert got.empty and quarantine["reason"].str.startswith("implausible_usage:").all()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinite_tokens_are_quarantined_never_zero(tmp_path, value) -> None:
    line = json.dumps({**OPENAI, "output_tokens": 0}).replace(
        '"output_tokens": 0', f'"output_tokens": {value}'
    )
    path = tmp_path / "x.jsonl"
    path.write_text(f"{line}\n{json.dumps(OPENAI)}\n")
    got, quarantine = read(path)
    assert got["event_id"].tolist() == ["c-openai"]
    assert "output_tokens is not an integer" in quarantine["reason"].iloc[0]


def test_ids_are_trimmed_provider_case_is_normalized_and_z_offsets_accepted(tmp_path) -> None:
    record = {
        **OPENAI,
        "tenant_id": "acme ",
        "provider": "OpenAI",
        "event_id": " e1",
        "occurred_at": "2026-09-08t10:00:00.250z",
    }
    got, quarantine = read(jsonl(tmp_path / "x.jsonl", [record]))
    assert quarantine.empty, quarantine["reason"].tolist()
    row = got.iloc[0]
    assert (row["event_id"], row["tenant_id"], row["provider"]) == ("e1", "acme", "openai")
    assert row["occurred_at"] == pd.Timestamp(WHEN)
