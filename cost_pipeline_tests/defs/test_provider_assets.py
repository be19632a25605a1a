"""Provider assets end to end: real clients on loopback (every OpenAI usage endpoint that bills),
demo twins, reconciliation per provider, model and line item, and their checks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd
import pytest

from cost_pipeline.catalog import (
    ANTHROPIC_USAGE,
    OPENAI_USAGE,
    PRICED_INTERACTIONS,
    PROVIDER_REPORTED_COSTS,
)
from cost_pipeline.defs.alerts.schedules import daily_close_schedule
from cost_pipeline.defs.ingestion.provider_assets import (
    NOT_CONFIGURED,
    anthropic_usage,
    openai_usage,
    provider_reported_costs,
)
from cost_pipeline.lib.schemas import TOKEN_COLUMNS
from cost_pipeline.lib.usage_endpoints import OPENAI_ENDPOINT_NAMES
from cost_pipeline.resources.anthropic_admin import AnthropicAdminResource, AnthropicAdminTwin
from cost_pipeline.resources.openai_admin import OpenAIAdminResource, OpenAIAdminTwin
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes import provider_admin as fakes
from cost_pipeline_tests.fakes.provider_admin import ProviderAdminFake

DAY = "2026-09-02"
DAY_START = int(datetime(2026, 9, 2, tzinfo=UTC).timestamp())
INGESTION = [openai_usage, anthropic_usage, provider_reported_costs]
ANTHROPIC_BILL = {  # the fake's Anthropic usage at list prices, in cents
    "uncached_input_tokens": "15.6",
    "cache_creation.ephemeral_5m_input_tokens": "1.5375",
    "cache_read_input_tokens": "6.3",
    "output_tokens": "14.7",
    "web_search": "3",
}
OPENAI_BILL = sum(r["amount"]["value"] for r in fakes.openai_cost_samples(0)[0]["results"])


@pytest.fixture
def wh_url(warehouse_url: str) -> str:
    """The warehouse on each engine (SQLite and Postgres)."""
    return warehouse_url


@pytest.fixture
def fake() -> Iterator[ProviderAdminFake]:
    with ProviderAdminFake(page_size=1, duplicate_pages=True) as server:
        for path, buckets in fakes.openai_usage_samples(DAY_START).items():
            server.load(path, buckets)
        server.load(
            fakes.ANTHROPIC_USAGE,
            [
                {
                    "starting_at": f"{DAY}T00:00:00Z",
                    "ending_at": "2026-09-03T00:00:00Z",
                    "results": [
                        {
                            "model": "claude-sonnet-4-5-20250929",
                            "workspace_id": "wrkspc_birchwood",
                            "api_key_id": None,
                            "service_tier": "standard",
                            "context_window": "0-200k",
                            "uncached_input_tokens": 52_000,
                            "cache_creation": {
                                "ephemeral_1h_input_tokens": 0,
                                "ephemeral_5m_input_tokens": 4_100,
                            },
                            "cache_read_input_tokens": 210_000,
                            "output_tokens": 9_800,
                            "server_tool_use": {"web_search_requests": 3},
                        }
                    ],
                }
            ],
        )
        server.load(fakes.OPENAI_COSTS, fakes.openai_cost_samples(DAY_START))
        server.load(
            fakes.ANTHROPIC_COSTS,
            [
                {
                    "starting_at": f"{DAY}T00:00:00Z",
                    "ending_at": "2026-09-03T00:00:00Z",
                    "results": [
                        {
                            "currency": "USD",
                            "amount": cents,
                            "workspace_id": "wrkspc_birchwood",
                            "description": f"claude-sonnet-4-5, {kind}",
                            "model": "claude-sonnet-4-5-20250929",
                            "cost_type": "web_search" if kind == "web_search" else "tokens",
                            "token_type": None if kind == "web_search" else kind,
                        }
                        # list prices: $3 / $3.75 / $0.30 / $15 per MTok, $10 per 1k searches
                        for kind, cents in ANTHROPIC_BILL.items()
                    ],
                }
            ],
        )
        server.fail(fakes.OPENAI_USAGE, 429, retry_after="0")
        server.fail(fakes.OPENAI_IMAGES, 429, retry_after="0")
        server.fail(fakes.OPENAI_VECTOR_STORES, 500, times=2)
        server.fail(fakes.ANTHROPIC_COSTS, 500, times=2)
        yield server


def real_resources(wh_url: str, fake: ProviderAdminFake) -> dict:
    return {
        "warehouse": WarehouseResource(url=wh_url),
        "cost_config": CostConfigResource(),
        "openai_admin": OpenAIAdminResource(
            admin_key=fake.openai_key, base_url=fake.base_url, backoff_seconds=0.01
        ),
        "anthropic_admin": AnthropicAdminResource(
            admin_key=fake.anthropic_key, base_url=fake.base_url, backoff_seconds=0.01
        ),
    }


def test_ingestion_from_real_clients_replaces_the_day(wh_url, fake) -> None:
    resources = real_resources(wh_url, fake)
    for _ in range(2):  # a restatement re-pull replaces, never adds
        result = dg.materialize(INGESTION, partition_key=DAY, resources=resources)
        assert result.success
    wh = Warehouse(wh_url)
    day = date.fromisoformat(DAY)
    oa = wh.read(OPENAI_USAGE, days=[day])
    completions = oa.loc[oa["endpoint"] == "completions"]
    assert completions[["input_tokens", "cache_read_tokens", "requests"]].values.tolist() == [
        [120_000, 90_000, 42]
    ]
    assert set(oa["tenant_id"]) == {"acme"}  # project mapping; the key is not mapped
    assert sorted(set(oa["endpoint"])) == sorted(OPENAI_ENDPOINT_NAMES)
    an = wh.read(ANTHROPIC_USAGE, days=[day])
    assert an["input_tokens"].tolist() == [52_000 + 4_100 + 210_000]
    assert an["tenant_id"].tolist() == ["birchwood"] and an["endpoint"].tolist() == ["messages"]
    costs = wh.read(PROVIDER_REPORTED_COSTS, days=[day])
    by_provider = costs.groupby("provider")["amount_usd"].sum()
    assert by_provider["anthropic"] == pytest.approx(0.411375, abs=1e-9)
    assert by_provider["openai"] == pytest.approx(OPENAI_BILL)
    assert costs["endpoint"].notna().all()
    meta = result.asset_materializations_for_node("openai_usage")[0].metadata
    assert meta["rows"].value == 9 and meta["unrecognized_rows"].value == 0  # images: 2 groups
    rows = meta["by_endpoint"].value.splitlines()
    assert any("audio_transcriptions" in r and "| seconds" in r for r in rows)
    assert "OpenAI admin API" in meta["source"].value
    for value in (m.value for m in meta.values()):
        assert fake.openai_key not in str(value)


def test_every_endpoint_reconciles_per_line_item(wh_url, fake) -> None:
    from cost_pipeline.catalog import LLM_LINE_ITEM_RECONCILIATION
    from cost_pipeline.defs.pricing.provider_assets import provider_usage_priced
    from cost_pipeline.defs.summaries.line_items import (
        line_items_match_provider_costs,
        llm_line_item_reconciliation,
    )

    bill = fake.buckets[fakes.OPENAI_COSTS]
    bill[0]["results"].append(  # a line item no usage endpoint explains
        {
            "object": "organization.costs.result",
            "amount": {"value": 0.25, "currency": "usd"},
            "line_item": "Web search tool calls",
            "project_id": "proj_acme",
        }
    )
    result = dg.materialize(
        [
            *INGESTION,
            provider_usage_priced,
            llm_line_item_reconciliation,
            line_items_match_provider_costs,
        ],
        partition_key=DAY,
        resources=real_resources(wh_url, fake),
    )
    assert result.success
    recon = Warehouse(wh_url).read(LLM_LINE_ITEM_RECONCILIATION, days=[date.fromisoformat(DAY)])
    lines = recon.loc[recon["status"] != "total"]
    totals = recon.loc[recon["status"] == "total"].set_index(["provider", "endpoint"])
    # nothing dropped: every billed dollar is on a line
    assert lines["provider_reported_cost_usd"].sum() == pytest.approx(OPENAI_BILL + 0.25 + 0.411375)

    priced = lines.loc[lines["status"] == "priced"].set_index(["model", "cost_component"])
    for model, component in [
        ("gpt-4.1-mini", "input"),
        ("gpt-4.1-mini", "cached_input"),
        ("gpt-4.1-mini", "output"),
        ("claude-sonnet-4-5", "input"),
        ("claude-sonnet-4-5", "cache_write"),
        ("claude-sonnet-4-5", "cached_input"),
        ("claude-sonnet-4-5", "output"),
        ("claude-sonnet-4-5", "other"),
    ]:
        assert priced.loc[(model, component), "drift_pct"] == pytest.approx(0, abs=1e-6), model
    embeddings = lines.loc[lines["endpoint"] == "embeddings"].iloc[0]
    assert embeddings["status"] == "priced" and embeddings["ledger_cost_usd"] == pytest.approx(0.05)
    assert totals.loc[("openai", "completions"), "coverage_pct"] == pytest.approx(100)
    assert totals.loc[("anthropic", "messages"), "coverage_pct"] == pytest.approx(100)
    moderation = lines.loc[lines["endpoint"] == "moderations"].iloc[0]
    assert moderation["status"] == "usage_only" and moderation["ledger_cost_usd"] == 0  # free

    units = {
        "images": ("images", 15),
        "audio_speeches": ("characters", 45_000),
        "audio_transcriptions": ("seconds", 1_830),
        "vector_stores": ("bytes", 3 * 1024**3),
        "code_interpreter_sessions": ("sessions", 17),
    }
    for endpoint, (unit, quantity) in units.items():
        total = totals.loc[("openai", endpoint)]
        assert (total["unit"], total["usage_quantity"]) == (unit, quantity), endpoint
        assert pd.isna(total["ledger_cost_usd"]) and total["coverage_pct"] == 0
        assert f"no ledger price for unit {unit}" in total["note"]
        rows = lines.loc[lines["endpoint"] == endpoint]
        assert set(rows["status"]) == {"no_ledger_price"}, endpoint
        assert rows["provider_reported_cost_usd"].notna().all(), endpoint

    unplaced = lines.loc[lines["endpoint"].isna()].iloc[0]
    assert unplaced["status"] == "unknown_endpoint"
    assert unplaced["line_item"] == "Web search tool calls"

    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == "line_items_match_provider_costs"
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "'Web search tool calls'" in check.description
    assert "gpt-4.1-mini" not in check.description  # priced line items reconcile
    no_price = check.metadata["no_ledger_price"].value
    for name in ("dall-e-3, image generation", "tts-1", "whisper-1", "File search storage"):
        assert name in no_price
    meta = result.asset_materializations_for_node("llm_line_item_reconciliation")[0].metadata
    assert meta["openai_images_coverage_pct"].value == 0
    assert meta["openai_embeddings_coverage_pct"].value == pytest.approx(100)


def test_unconfigured_sources_materialize_empty_partitions(wh_url) -> None:
    wh = Warehouse(wh_url)
    day = date.fromisoformat(DAY)
    zeros = dict.fromkeys((*TOKEN_COLUMNS, "requests"), 0)
    stale = pd.DataFrame([{**zeros, "day": day, "provider": "openai"}])
    wh.replace_partition(OPENAI_USAGE, day, stale)
    result = dg.materialize(
        INGESTION,
        partition_key=DAY,
        resources={
            "warehouse": WarehouseResource(url=wh_url),
            "cost_config": CostConfigResource(),
            "openai_admin": OpenAIAdminResource(admin_key=""),
            "anthropic_admin": AnthropicAdminResource(admin_key=""),
        },
    )
    assert result.success
    for node in ("openai_usage", "anthropic_usage", "provider_reported_costs"):
        meta = result.asset_materializations_for_node(node)[0].metadata
        assert meta["source"].value == NOT_CONFIGURED
    assert wh.count(OPENAI_USAGE, days=[day]) == 0


def test_daily_close_repulls_the_restatement_window() -> None:
    schedule = daily_close_schedule(dg.AssetSelection.assets(openai_usage, anthropic_usage))
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 9, 10, 0, 30, tzinfo=UTC)
    )
    requests = list(schedule(context))
    assert [r.partition_key for r in requests] == ["2026-09-09", "2026-09-08", "2026-09-07"]
    assert len({r.run_key for r in requests}) == 3
    early = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 1, 1, tzinfo=UTC))
    assert not list(schedule(early))


@pytest.fixture
def demo_day(wh_url: str, demo_config) -> date:
    """The demo app log of one day, priced, in the warehouse (what the integrator's assets do)."""
    from cost_pipeline.demo.generator import DemoCompany
    from cost_pipeline.lib.pricing import PricingEngine

    day = date.fromisoformat(DAY)
    events = DemoCompany(demo_config, seed=demo_config.demo.seed).events_for_day(
        day, demo_config.demo.events_per_day
    )
    priced = PricingEngine.for_config(demo_config).price(events)
    Warehouse(wh_url).replace_partition(PRICED_INTERACTIONS, day, priced)
    return day


def test_demo_reconciliation_shows_coverage_drift_and_the_mislabelled_model(
    wh_url, demo_day
) -> None:
    from cost_pipeline.catalog import LLM_COST_RECONCILIATION, PROVIDER_USAGE_PRICED
    from cost_pipeline.defs.pricing.provider_assets import provider_usage_priced
    from cost_pipeline.defs.summaries.line_items import (
        line_items_match_provider_costs,
        llm_line_item_reconciliation,
    )
    from cost_pipeline.defs.summaries.reconciliation import (
        app_log_matches_provider_usage,
        llm_cost_reconciliation,
        provider_reported_costs_match_usage,
    )
    from cost_pipeline.demo.provider_twins import relabel_pair
    from cost_pipeline.lib.reconciliation import unattributed_summary_rows

    config = CostConfigResource()
    result = dg.materialize(
        [
            *INGESTION,
            provider_usage_priced,
            llm_cost_reconciliation,
            app_log_matches_provider_usage,
            provider_reported_costs_match_usage,
            llm_line_item_reconciliation,
            line_items_match_provider_costs,
        ],
        partition_key=DAY,
        resources={
            "warehouse": WarehouseResource(url=wh_url),
            "cost_config": config,
            "openai_admin": OpenAIAdminTwin(cost_config=config),
            "anthropic_admin": AnthropicAdminTwin(cost_config=config),
        },
    )
    assert result.success
    wh = Warehouse(wh_url)
    recon = wh.read(LLM_COST_RECONCILIATION, days=[demo_day])
    totals = recon.loc[recon["model"].isna()].set_index("provider")
    for provider in ("openai", "anthropic"):
        row = totals.loc[provider]
        assert 50 < row["coverage_pct"] < 99.5, provider  # unlogged usage is never explained
        assert abs(row["reported_drift_pct"]) < 0.5, provider  # the bill differs by rounding
    assert totals.loc["anthropic", "drift_pct"] < -2  # the unlogged batch service

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    app = checks["app_log_matches_provider_usage"]
    # The demo's unlogged usage (~3 %) and mislabelled model: a WARN naming the model, not an
    # ERROR (drift and coverage stay within drift_fail_pct and min_coverage_pct).
    assert not app.passed and app.severity == dg.AssetCheckSeverity.WARN
    priced = wh.read(PRICED_INTERACTIONS, days=[demo_day])
    logged_as, served_as = relabel_pair(priced.loc[priced["provider"] == "openai", "model"])
    assert f"openai {DAY}" in app.description
    assert f"likely mislabelled model: the log says {logged_as} (" in app.description
    assert f"the provider served {served_as} (" in app.description
    assert checks["provider_reported_costs_match_usage"].passed
    # the twins bill each line item at list price, rounded: every line item reconciles
    assert checks["line_items_match_provider_costs"].passed, checks[
        "line_items_match_provider_costs"
    ].description

    # the summary's unattributed rows top the app log up to the provider truth
    usage = wh.read(PROVIDER_USAGE_PRICED, days=[demo_day])
    extra = unattributed_summary_rows(priced, usage)
    for provider in ("openai", "anthropic"):
        app_total = priced.loc[priced["provider"] == provider, "cost_usd"].sum()
        top_up = extra.loc[extra["provider"] == provider, "cost_usd"].sum()
        truth = usage.loc[usage["provider"] == provider, "cost_usd"].sum()
        assert app_total + top_up == pytest.approx(truth, abs=1e-6)
