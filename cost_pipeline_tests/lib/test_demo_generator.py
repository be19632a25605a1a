"""Protects the demo company: deterministic days, valid rows, tier spend, incidents, garbage."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from genai_prices import Usage, calc_price

from cost_pipeline.catalog import LLM_INTERACTIONS
from cost_pipeline.demo.generator import AGENT_NAMES, DemoCompany
from cost_pipeline.lib.config import CostConfig, load_config
from cost_pipeline.lib.interaction_log import iter_log_file

START = date(2026, 9, 1)
PROVIDERS = frozenset({"openai", "anthropic", "selfhosted"})


@pytest.fixture(scope="module")
def config() -> CostConfig:
    return load_config()


@pytest.fixture(scope="module")
def company(config) -> DemoCompany:
    return DemoCompany(config, seed=7)


@cache
def unit_prices(provider: str, model: str, long: bool) -> tuple[float, ...]:
    """USD per token (uncached input, cache read, 5m write, 1h write, output) from genai-prices."""
    n = 300_000 if long else 1000

    def price(**extra: int) -> float:
        usage = Usage(input_tokens=n, **extra)
        when = datetime(2026, 9, 15, tzinfo=UTC)
        result = calc_price(usage, model, provider_id=provider, genai_request_timestamp=when)
        return float(result.total_price)

    base = price()
    return (
        base / n,
        price(cache_read_tokens=n) / n,
        price(cache_write_tokens=n) / n,
        price(cache_write_tokens=n, cache_write_1h_tokens=n) / n,
        (price(output_tokens=n) - base) / n,
    )


def approximate_cost(events: pd.DataFrame) -> pd.Series:
    """List-price cost per call (standard tier), the custom model at its override price."""
    cost = np.zeros(len(events))
    long = events["input_tokens"].to_numpy() > 200_000
    groups = events.groupby([events["provider"].to_numpy(), events["model"].to_numpy(), long])
    for (provider, model, is_long), rows in groups.indices.items():
        e = events.iloc[rows]
        if provider == "selfhosted":
            cost[rows] = e["input_tokens"] * 0.2e-6 + e["output_tokens"] * 0.6e-6
            continue
        p_in, p_read, p_write, p_1h, p_out = unit_prices(provider, model, bool(is_long))
        cached = e["cache_read_tokens"] + e["cache_write_tokens"] + e["cache_write_1h_tokens"]
        cost[rows] = (
            (e["input_tokens"] - cached) * p_in
            + e["cache_read_tokens"] * p_read
            + e["cache_write_tokens"] * p_write
            + e["cache_write_1h_tokens"] * p_1h
            + e["output_tokens"] * p_out
        )
    return pd.Series(cost, index=events.index)


def test_same_seed_same_day_identical_and_other_seed_differs(config, company) -> None:
    day = date(2026, 9, 9)
    first = company.events_for_day(day, 500)
    pd.testing.assert_frame_equal(first, DemoCompany(config, seed=7).events_for_day(day, 500))
    other = DemoCompany(config, seed=8).events_for_day(day, 500)
    assert not first["input_tokens"].equals(other["input_tokens"])
    assert first["event_id"].iloc[0] == "ev-7-20260909-0"


def test_rows_are_valid_and_coherent(company) -> None:
    events = company.events_for_day(date(2026, 9, 10), 3000)
    conformed = LLM_INTERACTIONS.conform(events)
    assert conformed["event_id"].is_unique
    assert (conformed["day"] == date(2026, 9, 10)).all()
    assert conformed["occurred_at"].is_monotonic_increasing
    cached = events[["cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens"]].sum(1)
    assert (events["input_tokens"] >= cached).all()
    assert (events["reasoning_tokens"] <= events["output_tokens"]).all()
    children = events.dropna(subset=["parent_event_id"])
    parents = events.set_index("event_id").loc[children["parent_event_id"]]
    assert (parents["workflow_id"].to_numpy() == children["workflow_id"].to_numpy()).all()
    assert set(events["agent_id"]) == set(AGENT_NAMES)
    assert {"openai", "anthropic", "selfhosted"} == set(events["provider"])
    assert events["batch"].any() and (events["status"] == "error").any()
    assert set(events["service_tier"].dropna()) == {"priority", "flex", "standard"}
    flex = events[events["service_tier"] == "flex"]["model"]
    assert set(flex) <= {"gpt-5-mini", "gpt-5", "o4-mini"}
    assert (events["cache_write_tokens"] + events["cache_write_1h_tokens"] > 0).any()
    for _, model in {tuple(x) for x in events[["provider", "model"]].to_numpy()} - {
        ("selfhosted", "support-llama-ft")
    }:
        assert calc_price(Usage(input_tokens=10), model).total_price > 0


def test_sizes_follow_the_volume_and_the_week(company) -> None:
    assert len(company.events_for_day(date(2026, 9, 9), 5, with_incidents=False)) in range(4, 9)
    weekday = len(company.events_for_day(date(2026, 9, 9), 4000, with_incidents=False))
    weekend = len(company.events_for_day(date(2026, 9, 12), 4000, with_incidents=False))
    assert 4000 < weekday < 5200 and weekend < weekday / 2
    long = company.events_for_day(date(2026, 9, 9), 20000, with_incidents=False)
    assert (long["input_tokens"] > 200_000).any()


def test_tier_spend_matches_the_tiers_and_some_tenants_exceed_their_allowance(
    config, company
) -> None:
    days = [START + timedelta(days=i) for i in range(30)]
    events = pd.concat([company.events_for_day(d, 6000, with_incidents=False) for d in days])
    monthly = approximate_cost(events).groupby(events["tenant_id"].to_numpy()).sum()
    tiers = pd.Series({t.id: t.tier for t in config.tenants})
    median = monthly.groupby(tiers.reindex(monthly.index)).median()
    assert 0.5 < median["free"] < 10
    assert 20 < median["basic"] < 60
    assert 150 < median["pro"] < 400
    assert 1500 < median["enterprise"] < 3500
    # The tiers count LLM usage toward their allowance: some tenants' calls alone exceed it (so
    # overage has work), most stay inside.
    included = pd.Series(
        {t.id: float(config.tier_of(t.id).included_usage_usd or np.inf) for t in config.tenants}
    )
    over = monthly > included.reindex(monthly.index)
    assert 1 <= over.sum() <= len(over) / 3


def test_incidents_are_seeded_labelled_and_really_in_the_data(config, company) -> None:
    incidents = company.incidents(START, 60)
    assert len(incidents) >= 5
    assert incidents == DemoCompany(config, seed=7).incidents(START, 60)
    assert incidents != DemoCompany(config, seed=8).incidents(START, 60)
    keys = {"incident_id", "kind", "tenant_id", "driver", "start_day", "end_day", "multiplier"}
    assert all(keys <= set(i) for i in incidents)
    checked = Counter()
    for incident in incidents:
        day = date.fromisoformat(incident["start_day"])
        if day < START or incident["kind"] in checked:
            continue
        checked[incident["kind"]] += 1
        ratio = _driver_ratio(company, incident, day)
        assert ratio == pytest.approx(incident["multiplier"], rel=0.25), incident
    assert checked, "no incident starts inside the window"


def _driver_ratio(company: DemoCompany, incident: dict, day: date) -> float:
    """How much the incident's driver grew on `day` against the same day without incidents."""
    with_it = company.events_for_day(day, 6000)
    without = company.events_for_day(day, 6000, with_incidents=False)
    tenant = incident["tenant_id"]
    kind, driver = incident["kind"], incident["driver"].split(":", 1)[-1]
    if kind == "tenant_spike":
        return (with_it["tenant_id"] == tenant).sum() / (without["tenant_id"] == tenant).sum()
    if kind == "runaway_agent":

        def calls(e: pd.DataFrame) -> int:
            return int(((e["tenant_id"] == tenant) & (e["agent_id"] == driver)).sum())

        return calls(with_it) / calls(without)
    own = (with_it["tenant_id"] == tenant) & (with_it["agent_id"] == incident["agent_id"])
    now = with_it[own & (with_it["model"] == driver)].reset_index(drop=True)
    key = ["occurred_at", "tenant_id", "agent_id", "input_tokens", "output_tokens"]
    before = now[key].merge(without, on=key, how="left")
    switched = (before["model"] == incident["from_model"]).to_numpy()
    assert switched.sum() > 10
    return approximate_cost(now[switched]).sum() / approximate_cost(before[switched]).sum()


def test_write_log_delivers_late_events_next_day_and_reports_garbage_exactly(
    tmp_path, company
) -> None:
    summary = company.write_log(
        tmp_path, start=START, days=3, events_per_day=800, garbage_fraction=0.03, late_fraction=0.05
    )
    names = sorted(p.name for p in tmp_path.glob("interactions-*"))
    assert names == [f"interactions-{START + timedelta(days=i)}.jsonl.gz" for i in range(4)]
    assert summary.late_events > 0 and summary.garbage_lines > 0
    assert json.loads((tmp_path / "incidents.json").read_text()) == company.incidents(START, 3)
    loaded, quarantined, reasons = [], 0, Counter()
    for path in sorted(tmp_path.glob("interactions-*")):
        for chunk in iter_log_file(path, known_providers=PROVIDERS):
            loaded.append(chunk.good)
            quarantined += len(chunk.quarantine)
            reasons.update(_kind(r) for r in chunk.quarantine["reason"])
    assert quarantined == summary.garbage_lines
    assert reasons == +Counter(summary.garbage_by_kind)
    got = LLM_INTERACTIONS.conform(
        pa.concat_tables(loaded).to_pandas(coerce_temporal_nanoseconds=True)
    ).sort_values("event_id", ignore_index=True)
    assert len(got) == summary.events
    for i in range(3):  # every day, regenerated alone, equals that day as delivered
        day = START + timedelta(days=i)
        alone = LLM_INTERACTIONS.conform(company.events_for_day(day, 800))
        delivered = got[got["day"] == day].drop(columns="source_file")
        pd.testing.assert_frame_equal(
            delivered.sort_values("event_id", ignore_index=True),
            alone.drop(columns="source_file").sort_values("event_id", ignore_index=True),
        )
    late_file = got[got["source_file"] == names[-1]]
    assert len(late_file) > 0 and (late_file["day"] == START + timedelta(days=2)).all()


def _kind(reason: str) -> str:
    if reason.startswith("the line is not valid JSON"):
        return "bad_json"
    if reason.startswith("tenant_id is missing"):
        return "missing_tenant"
    if "is negative" in reason:
        return "negative_tokens"
    if reason.startswith("occurred_at"):
        return "bad_timestamp"
    return "unknown_provider" if "is unknown" in reason else reason
