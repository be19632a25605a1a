"""Protects the LLM ledger: demo days ingested, priced and summarized match an independent sum."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from genai_prices import data_snapshot

from cost_pipeline.definitions import build_defs
from cost_pipeline.defs.resources import build_resources
from cost_pipeline.demo.generator import DemoCompany
from cost_pipeline.environment import default_warehouse_url
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.rate_card import price_context
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.lib.test_pricing import reference

START = date(2026, 9, 7)
DAYS = 3
EVENTS_PER_DAY = 400


def tier_missing(row) -> str | None:
    """The tier of a call whose price variant genai-prices lacks on the call's date (its
    calc_price then silently uses the standard price), else None."""
    context = price_context(row.provider, row.service_tier, row.batch)
    if not context or context == {"service_tier": "default"}:
        return None
    provider, model = data_snapshot.get_snapshot().find_provider_model(
        row.model, None, row.provider, None
    )
    at = row.occurred_at.to_pydatetime()
    listed = any(model is m for m in provider.models) and any(
        (v.constraint is None or v.constraint.active(at))
        and all(context.get(k) == w for k, w in v.when.items())
        for v in model.price_variants or ()
    )
    return None if listed else ("batch" if "processing" in context else context["service_tier"])


def independent_llm_cost(events: pd.DataFrame, config: CostConfig) -> float:
    """Price each event on its own with genai-prices' calc_price (custom models by hand), a
    tier the catalog lacks on the day at the configured fallback multiplier."""
    custom = {(o.provider, o.model): o for o in config.price_overrides if o.input_mtok is not None}
    total = 0.0
    for row in events.itertuples(index=False):
        override = custom.get((row.provider, row.model))
        if override is None:
            price = reference(row, config.price_overrides)
            assert price is not None, f"demo model {row.model} has no catalog price"
            total += price * float(config.pricing.multiplier(tier_missing(row)))
        else:
            uncached = row.input_tokens - row.cache_read_tokens - row.cache_write_tokens
            total += float(
                (
                    Decimal(uncached) * override.input_mtok
                    + Decimal(row.output_tokens) * override.output_mtok
                )
                / Decimal(1_000_000)
            )
    return total


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_config: CostConfig):
    """The demo graph (all offline twins) on a tmp state folder, for a few small demo days."""
    company = DemoCompany(demo_config, seed=5)
    log_dir = tmp_path / "log"
    company.write_log(log_dir, start=START, days=DAYS, events_per_day=EVENTS_PER_DAY)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("INTERACTION_LOG_DIR", str(log_dir))
    monkeypatch.delenv("COST_WAREHOUSE_URL", raising=False)
    defs = build_defs(build_resources(demo_config))
    instance = dg.DagsterInstance.ephemeral()
    wh = Warehouse(default_warehouse_url())

    def run_all() -> None:
        assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
        job = defs.resolve_job_def("daily_cost_job")
        for i in range(DAYS + 1):  # the day after the last holds late events only
            day = (START + timedelta(days=i)).isoformat()
            assert job.execute_in_process(partition_key=day, instance=instance).success

    yield company, log_dir, run_all, wh
    wh.dispose()


def summary_by_day(wh: Warehouse) -> pd.Series:
    totals = wh.query(
        "SELECT day, SUM(cost_usd) AS c FROM daily_cost_summary "
        "WHERE cost_category = 'llm' GROUP BY day"
    )
    return totals.set_index(totals["day"].astype(str))["c"].round(9)


def test_summary_equals_independent_per_event_pricing(ledger, demo_config: CostConfig) -> None:
    company, _, run_all, wh = ledger
    run_all()
    events = pd.concat(
        [company.events_for_day(START + timedelta(days=i), EVENTS_PER_DAY) for i in range(DAYS)]
    )
    expected = independent_llm_cost(events, demo_config)
    got = float(
        wh.query("SELECT SUM(cost_usd) AS c FROM daily_cost_summary WHERE cost_category = 'llm'")[
            "c"
        ].iloc[0]
    )
    assert got == pytest.approx(expected, abs=1e-6)
    assert wh.query("SELECT COUNT(*) AS n FROM llm_interactions")["n"].iloc[0] == len(events)


def test_rerunning_and_redelivering_changes_no_total(ledger) -> None:
    _, log_dir, run_all, wh = ledger
    run_all()
    before = summary_by_day(wh)
    first = sorted(log_dir.glob("interactions-*"))[0]
    shutil.copy(first, log_dir / f"redelivered-{first.name}")  # same content, new name
    run_all()
    pd.testing.assert_series_equal(summary_by_day(wh), before)


def test_late_event_lands_in_its_own_day(ledger, demo_config: CostConfig) -> None:
    company, log_dir, run_all, wh = ledger
    run_all()
    before = summary_by_day(wh)
    late = company.events_for_day(START, 5).assign(
        event_id=lambda d: "late-" + d["event_id"],
        occurred_at=datetime(2026, 9, 7, 23, 0, tzinfo=UTC),
    )
    late.to_json(log_dir / "late-delivery.jsonl", orient="records", lines=True, date_format="iso")
    run_all()
    after = summary_by_day(wh)
    assert after[str(START)] > before[str(START)]
    others = [d for d in before.index if d != str(START)]
    pd.testing.assert_series_equal(after[others], before[others])
