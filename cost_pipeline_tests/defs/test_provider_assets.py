"""Provider assets end to end: real clients on loopback, demo twins, reconciliation checks."""

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
from cost_pipeline.resources.anthropic_admin import AnthropicAdminResource, AnthropicAdminTwin
from cost_pipeline.resources.openai_admin import OpenAIAdminResource, OpenAIAdminTwin
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes import provider_admin as fakes
from cost_pipeline_tests.fakes.provider_admin import ProviderAdminFake

DAY = "2026-09-02"
DAY_START = int(datetime(2026, 9, 2, tzinfo=UTC).timestamp())
INGESTION = [openai_usage, anthropic_usage, provider_reported_costs]


@pytest.fixture
def wh_url(warehouse_url: str) -> str:
    """The warehouse on each engine (SQLite and Postgres)."""
    return warehouse_url


@pytest.fixture
def fake() -> Iterator[ProviderAdminFake]:
    with ProviderAdminFake(page_size=1, duplicate_pages=True) as server:
        server.load(
            fakes.OPENAI_USAGE,
            [
                {
                    "object": "bucket",
                    "start_time": DAY_START,
                    "end_time": DAY_START + 86_400,
                    "results": [
                        {
                            "object": "organization.usage.completions.result",
                            "input_tokens": 120_000,
                            "output_tokens": 8_000,
                            "input_cached_tokens": 90_000,
                            "num_model_requests": 42,
                            "model": "gpt-4.1-mini-2025-04-14",
                            "project_id": "proj_acme",
                            "user_id": None,
                            "api_key_id": "key_unknown",
                            "batch": False,
                        }
                    ],
                }
            ],
        )
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
        server.load(
            fakes.OPENAI_COSTS,
            [
                {
                    "object": "bucket",
                    "start_time": DAY_START,
                    "end_time": DAY_START + 86_400,
                    "results": [
                        {
                            "object": "organization.costs.result",
                            "amount": {"value": 0.07, "currency": "usd"},
                            "line_item": "gpt-4.1-mini, input",
                            "project_id": "proj_acme",
                        }
                    ],
                }
            ],
        )
        server.load(
            fakes.ANTHROPIC_COSTS,
            [
                {
                    "starting_at": f"{DAY}T00:00:00Z",
                    "ending_at": "2026-09-03T00:00:00Z",
                    "results": [
                        {
                            "currency": "USD",
                            "amount": "31.5",
                            "workspace_id": "wrkspc_birchwood",
                            "description": "claude-sonnet-4-5, output_tokens",
                            "model": "claude-sonnet-4-5-20250929",
                        }
                    ],
                }
            ],
        )
        server.fail(fakes.OPENAI_USAGE, 429, retry_after="0")
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
    assert oa[["input_tokens", "cache_read_tokens", "requests"]].values.tolist() == [
        [120_000, 90_000, 42]
    ]
    assert oa["tenant_id"].tolist() == ["acme"]  # project mapping; the key is not mapped
    an = wh.read(ANTHROPIC_USAGE, days=[day])
    assert an["input_tokens"].tolist() == [52_000 + 4_100 + 210_000]
    assert an["tenant_id"].tolist() == ["birchwood"]
    costs = wh.read(PROVIDER_REPORTED_COSTS, days=[day]).sort_values("provider")
    assert costs["amount_usd"].tolist() == [0.315, 0.07]
    meta = result.asset_materializations_for_node("openai_usage")[0].metadata
    assert meta["rows"].value == 1
    assert "OpenAI admin API" in meta["source"].value
    for value in (m.value for m in meta.values()):
        assert fake.openai_key not in str(value)


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

    # the summary's unattributed rows top the app log up to the provider truth
    usage = wh.read(PROVIDER_USAGE_PRICED, days=[demo_day])
    extra = unattributed_summary_rows(priced, usage)
    for provider in ("openai", "anthropic"):
        app_total = priced.loc[priced["provider"] == provider, "cost_usd"].sum()
        top_up = extra.loc[extra["provider"] == provider, "cost_usd"].sum()
        truth = usage.loc[usage["provider"] == provider, "cost_usd"].sum()
        assert app_total + top_up == pytest.approx(truth, abs=1e-6)
