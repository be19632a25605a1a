"""Per-line-item reconciliation: line items placed on endpoints, units kept, nothing dropped."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from cost_pipeline.catalog import PROVIDER_USAGE_PRICED
from cost_pipeline.lib.line_items import line_item_findings, reconcile_line_items
from cost_pipeline.lib.provider_usage import normalize_openai_usage
from cost_pipeline.lib.reconciliation import reconcile, unattributed_summary_rows
from cost_pipeline.lib.usage_endpoints import (
    classify_anthropic_costs,
    classify_openai_line_items,
    endpoint_from_object,
)

DAY = date(2026, 9, 2)
DAY_START = 1_788_307_200


@pytest.mark.parametrize(
    ("line_item", "endpoint", "model", "component"),
    [
        ("gpt-4o-mini, input", "completions", "gpt-4o-mini", "input"),
        (
            "gpt-4o-mini-2024-07-18, cached input",
            "completions",
            "gpt-4o-mini-2024-07-18",
            "cached_input",
        ),
        ("o3, output", "completions", "o3", "output"),
        ("gpt-4o, input (batch)", "completions", "gpt-4o", None),  # unknown kind: whole model
        ("text-embedding-3-small", "embeddings", "text-embedding-3-small", None),
        ("omni-moderation-latest, input", "moderations", "omni-moderation-latest", "input"),
        ("dall-e-3, image generation", "images", "dall-e-3", None),
        ("gpt-image-1, output", "images", "gpt-image-1", "output"),
        ("tts-1-hd", "audio_speeches", "tts-1-hd", None),
        ("gpt-4o-mini-tts, input", "audio_speeches", "gpt-4o-mini-tts", "input"),
        ("whisper-1", "audio_transcriptions", "whisper-1", None),
        ("gpt-4o-transcribe, input", "audio_transcriptions", "gpt-4o-transcribe", "input"),
        ("File search storage", "vector_stores", None, None),
        ("Vector store storage, 2 GB-day", "vector_stores", None, None),
        ("Code interpreter sessions", "code_interpreter_sessions", None, None),
        ("Web search tool calls", None, None, None),  # placed nowhere: kept, reported
        (None, None, None, None),
    ],
)
def test_openai_line_items_are_placed(line_item, endpoint, model, component) -> None:
    placed = classify_openai_line_items(pd.Series([line_item], dtype="object")).iloc[0]
    assert (placed["endpoint"], placed["model"], placed["cost_component"]) == (
        endpoint,
        model,
        component,
    )


def test_anthropic_cost_rows_are_placed() -> None:
    placed = classify_anthropic_costs(
        pd.Series(["tokens", "web_search", "code_execution", None], dtype="object"),
        pd.Series(["cache_read_input_tokens", None, None, None], dtype="object"),
        pd.Series([None, None, "Code execution", "claude-opus-4, output_tokens"], dtype="object"),
        pd.Series(["claude-opus-4", "claude-opus-4", None, "claude-opus-4"], dtype="object"),
    )
    assert placed["endpoint"].tolist() == ["messages", "messages", "code_execution", "messages"]
    assert placed["cost_component"].tolist() == ["cached_input", "other", None, "output"]


def test_result_objects_name_their_endpoint() -> None:
    objects = pd.Series(
        ["organization.usage.images.result", "organization.costs.result", None], dtype="object"
    )
    assert endpoint_from_object(objects).tolist() == ["images", None, None]


def usage_row(endpoint: str, model: str | None, **values: object) -> dict:
    zeros = {
        "input_tokens": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "web_search_requests": 0,
        "requests": 1,
        "cost_input_usd": 0.0,
        "cost_cache_read_usd": 0.0,
        "cost_cache_write_usd": 0.0,
        "cost_output_usd": 0.0,
        "cost_other_usd": 0.0,
        "cost_usd": 0.0,
        "pricing_status": "priced",
    }
    row = {"day": DAY, "provider": "openai", "endpoint": endpoint, "model": model}
    return {**row, **zeros, **values}


def reported_row(line_item: str, amount: float, **placed: object) -> dict:
    return {
        "day": DAY,
        "provider": "openai",
        "line_item": line_item,
        "amount_usd": amount,
        **placed,
    }


USAGE = PROVIDER_USAGE_PRICED.conform(
    pd.DataFrame(
        [
            usage_row(
                "completions",
                "gpt-4.1-2025-04-14",
                input_tokens=1_000,
                output_tokens=100,
                cost_input_usd=2.0,
                cost_output_usd=0.8,
                cost_usd=2.8,
                requests=7,
            ),
            # a second project of the same model: one line item, requests summed
            usage_row(
                "completions",
                "gpt-4.1",
                input_tokens=500,
                cost_input_usd=1.0,
                cost_usd=1.0,
                requests=3,
            ),
            usage_row(
                "embeddings",
                "text-embedding-3-small",
                input_tokens=1_000_000,
                cost_input_usd=0.02,
                cost_usd=0.02,
            ),
            usage_row("images", "dall-e-3", images=12, pricing_status="incomplete_usage"),
            usage_row("audio_speeches", "tts-1", characters=9, pricing_status="incomplete_usage"),
            usage_row(
                "completions",
                "gpt-4o-audio-preview",
                input_tokens=10,
                input_audio_tokens=400,
                cost_input_usd=0.00001,
                cost_usd=0.00001,
            ),
            usage_row(
                "file_searches",
                None,
                unrecognized="unknown endpoint file_searches: num_requests=7",
                pricing_status="incomplete_usage",
            ),
        ]
    )
)
REPORTED = pd.DataFrame(
    [
        reported_row(
            "gpt-4.1, input", 3.0, endpoint="completions", model="gpt-4.1", cost_component="input"
        ),
        reported_row(
            "gpt-4.1, output", 0.5, endpoint="completions", model="gpt-4.1", cost_component="output"
        ),
        reported_row(
            "text-embedding-3-small", 0.02, endpoint="embeddings", model="text-embedding-3-small"
        ),
        reported_row("dall-e-3, image generation", 0.48, endpoint="images", model="dall-e-3"),
        reported_row("Web search tool calls", 0.25, endpoint=None, model=None),
    ]
)


@pytest.fixture
def recon() -> pd.DataFrame:
    return reconcile_line_items(USAGE, REPORTED)


def _line(
    recon: pd.DataFrame, endpoint: str | None, model: str | None, component=None
) -> pd.Series:
    rows = recon.loc[
        recon["status"].ne("total")
        & (recon["endpoint"].eq(endpoint) if endpoint else recon["endpoint"].isna())
        & (recon["model"].eq(model) if model else recon["model"].isna())
        & (recon["cost_component"].eq(component) if component else recon["cost_component"].isna())
    ]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_priced_components_are_compared_line_by_line(recon) -> None:
    line = _line(recon, "completions", "gpt-4.1", "input")
    assert line["status"] == "priced" and line["line_item"] == "gpt-4.1, input"
    assert line["ledger_cost_usd"] == pytest.approx(3.0) and line["drift_pct"] == 0
    assert line["requests"] == 10 and line["usage_quantity"] == 1_500
    output = _line(recon, "completions", "gpt-4.1", "output")
    assert output["drift_pct"] == pytest.approx(-37.5)


def test_a_line_item_without_component_compares_the_whole_model(recon) -> None:
    line = _line(recon, "embeddings", "text-embedding-3-small")
    assert line["status"] == "priced" and line["drift_pct"] == 0
    assert line["usage_quantity"] == 1_000_000


def test_units_without_ledger_price_are_reconciled_against_the_bill(recon) -> None:
    images = _line(recon, "images", "dall-e-3")
    assert images["status"] == "no_ledger_price" and images["unit"] == "images"
    assert pd.isna(images["ledger_cost_usd"]) and images["provider_reported_cost_usd"] == 0.48
    assert "no ledger price for unit images" in images["note"]
    speech = _line(recon, "audio_speeches", "tts-1")
    assert speech["usage_quantity"] == 9 and "nothing reported" in speech["note"]
    total = recon.loc[(recon["status"] == "total") & recon["endpoint"].eq("images")].iloc[0]
    assert total["coverage_pct"] == 0 and "no ledger price for unit images" in total["note"]


def test_nothing_is_dropped(recon) -> None:
    lines = recon.loc[recon["status"] != "total"]
    assert lines["provider_reported_cost_usd"].sum() == pytest.approx(REPORTED["amount_usd"].sum())
    assert lines["ledger_cost_usd"].sum() == pytest.approx(USAGE["cost_usd"].sum())
    unplaced = _line(recon, None, None)
    assert (
        unplaced["status"] == "unknown_endpoint"
        and unplaced["line_item"] == "Web search tool calls"
    )
    unknown = _line(recon, "file_searches", None)
    assert unknown["status"] == "unknown_endpoint" and "num_requests=7" in unknown["note"]
    audio = _line(recon, "completions", "gpt-4o-audio-preview", "input")
    assert "no ledger price for unit audio tokens (400)" in audio["note"]
    totals = recon.loc[recon["status"] == "total"].set_index("endpoint", drop=False)
    # the ledger's 3.0 + 0.8 against a bill of 3.0 + 0.5: the whole bill is explained
    assert totals.loc["completions", "coverage_pct"] == 100


def test_findings_warn_per_line_item_and_list_missing_prices(recon) -> None:
    findings = line_item_findings(recon, warn_pct=2.0)
    warned = {f.label for f in findings if f.level == "warn"}
    assert warned == {"gpt-4.1, output", "Web search tool calls", "file_searches"}
    info = [f.message for f in findings if f.level == "info"]
    assert any("'dall-e-3, image generation'" in m and "unit images" in m for m in info)
    assert any("'tts-1'" in m and "unit characters" in m for m in info)


def test_token_reconciliation_leaves_other_units_to_the_line_items() -> None:
    reported = REPORTED.assign(model=REPORTED["model"])
    recon = reconcile(pd.DataFrame(columns=USAGE.columns), USAGE, reported)
    openai = recon.loc[recon["model"].isna()].iloc[0]
    # images (billed per image) are not compared with token usage; the unplaced line item is
    assert openai["provider_reported_cost_usd"] == pytest.approx(3.0 + 0.5 + 0.02 + 0.25)
    assert "dall-e-3" not in set(recon["model"].dropna())
    extra = unattributed_summary_rows(pd.DataFrame(columns=USAGE.columns), USAGE)
    assert "dall-e-3" not in set(extra["model_or_service"])
    assert "text-embedding-3-small" in set(extra["model_or_service"])


def test_unknown_counters_and_endpoints_are_kept_by_the_normalizer(demo_config) -> None:
    base = {"bucket_start_time": DAY_START, "project_id": "proj_acme"}
    usage = normalize_openai_usage(
        [
            {
                **base,
                "object": "organization.usage.completions.result",
                "input_tokens": 10,
                "output_tokens": 1,
                "num_model_requests": 1,
                "input_text_tokens": 10,  # a documented breakdown of input_tokens
                "input_image_tokens": 500,
            },
            {**base, "object": "organization.usage.file_searches.result", "num_requests": 7},
            {**base, "usage_endpoint": "code_interpreter_sessions", "sessions": 2},
        ],
        demo_config,
    )
    assert usage["endpoint"].tolist() == [
        "completions",
        "file_searches",
        "code_interpreter_sessions",
    ]
    assert usage["unrecognized"].tolist() == [
        "input_image_tokens=500",
        "unknown endpoint file_searches: num_requests=7",
        None,
    ]
    assert usage["sessions"].tolist()[2] == 2


@pytest.mark.parametrize("side", ["bill", "usage"])
def test_a_day_with_one_side_only_is_reconciled_not_crashed(side: str) -> None:
    """Usage pulled but no cost report yet (or the reverse) is a normal day: every line item of
    the side present is kept, as usage_only / reported_only, with no drift computed."""
    usage = USAGE if side == "usage" else USAGE.iloc[0:0]
    reported = REPORTED if side == "bill" else REPORTED.iloc[0:0]
    recon = reconcile_line_items(usage, reported)
    lines = recon[recon["status"].ne("total")]
    assert recon["drift_pct"].isna().all()
    if side == "usage":
        assert "usage_only" in set(lines["status"])
        assert lines["ledger_cost_usd"].sum() == pytest.approx(USAGE["cost_usd"].sum())
        assert lines["provider_reported_cost_usd"].isna().all()
    else:
        assert "reported_only" in set(lines["status"])
        assert lines["provider_reported_cost_usd"].sum() == pytest.approx(
            REPORTED["amount_usd"].sum()
        )
