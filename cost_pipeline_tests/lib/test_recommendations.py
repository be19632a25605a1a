"""Protects cost recommendations: each saving equals an independent re-pricing at published
prices (Decimal), calls that do not fit or have no price are excluded and counted (never $0),
statuses follow usage from day to day, and the configuration rejects what cannot work."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pandas as pd
import pytest

from cost_pipeline.lib import recommendation_digest, repricing
from cost_pipeline.lib import recommendations as rec
from cost_pipeline.lib.config import ConfigError, CostConfig, parse_config
from cost_pipeline.lib.pricing import PricingEngine

DAY = date(2026, 9, 14)
WINDOW = 14
MTOK = Decimal(1_000_000)
MONTH = Decimal("30.4375") / WINDOW
# Published list prices, USD per million tokens (OpenAI and Anthropic pricing pages).
GPT_4O = {"input": Decimal("2.50"), "output": Decimal("10.00")}
GPT_4O_MINI = {"input": Decimal("0.15"), "output": Decimal("0.60")}
GPT_5_MINI = {"input": Decimal("0.25"), "output": Decimal("2.00")}
SONNET = {
    "input": Decimal("3.00"),
    "cache_read": Decimal("0.30"),
    "cache_write": Decimal("3.75"),
    "output": Decimal("15.00"),
}
SONNET_LONG = {"input": Decimal("6.00"), "output": Decimal("22.50")}  # input > 200,000 tokens

BASE = {
    "tiers": {"pro": {"name": "Pro"}},
    "tenants": [{"id": "t1", "name": "Tenant One", "tier": "pro"}],
    "pricing": {"tier_fallback_multipliers": {"batch": 0.5, "flex": 0.5}},
    "recommendations": {
        "window_days": WINDOW,
        "substitutions": [
            {"provider": "openai", "model": "gpt-4o", "alternative": "gpt-4o-mini"},
            {"provider": "anthropic", "model": "claude-opus-4*", "alternative": "claude-haiku-4-5"},
        ],
        "deferrable": [
            {"agent": "nightly-*"},
            {"workflow": "report-*", "latency_tolerance_seconds": 1800},
            {"agent": "chat", "latency_tolerance_seconds": 5},
        ],
        "caching": {"min_input_tokens": 4096, "max_cache_read_share": 0.2},
        "min_monthly_saving_usd": 0.01,
        "min_calls": 5,
    },
}  # fmt: skip


def config(**changes: object) -> CostConfig:
    raw = {**BASE, "recommendations": {**BASE["recommendations"], **changes}}
    return parse_config(raw)


# Calls of 10,000 input tokens would also be caching candidates: out of the way where unwanted.
NO_CACHING = {"caching": {"min_input_tokens": 10_000_000}}


def calls_frame(rows: list[dict]) -> pd.DataFrame:
    """Calls as `priced_interactions` holds them, priced by the engine; `status_override` makes
    a call one the ledger could not price (no cost)."""
    base = {
        "tenant_id": "t1",
        "agent_id": "writer",
        "workflow_id": None,
        "provider": "openai",
        "model": "gpt-4o",
        "service_tier": None,
        "batch": False,
        "input_tokens": 10_000,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cache_write_1h_tokens": 0,
        "output_tokens": 500,
        "web_search_requests": 0,
        "status_override": None,
    }
    df = pd.DataFrame([{**base, **r} for r in rows])
    df["occurred_at"] = [datetime.combine(d, time(12), UTC) for d in df["day"]]
    priced = PricingEngine().price(df)
    priced["pricing_status"] = priced["pricing_status"].astype(object)
    forced = df["status_override"].notna()
    priced.loc[forced, "pricing_status"] = df.loc[forced, "status_override"]
    priced.loc[forced, "cost_usd"] = 0.0
    return priced[list(repricing.CALL_COLUMNS)]


def days_back(n: int = WINDOW) -> list[date]:
    return [DAY - timedelta(days=i) for i in range(n - 1, -1, -1)]


def run(
    calls: pd.DataFrame, cfg: CostConfig, previous: pd.DataFrame | None = None, day: date = DAY
) -> pd.DataFrame:
    """The recommendations of `day` from the calls of its window."""
    engine = PricingEngine.for_config(cfg)
    window = calls[calls["day"] > day - timedelta(days=WINDOW)]
    evidence, usage = repricing.day_evidence(window, cfg.recommendations, engine)
    today = usage[usage["day"] == day]
    return rec.recommend(
        evidence,
        today,
        previous if previous is not None else pd.DataFrame(),
        day=day,
        covered=WINDOW,
        settings=cfg.recommendations,
    )


def cost(tokens: dict[str, int], prices: dict[str, Decimal]) -> Decimal:
    return sum((Decimal(n) * prices[k] / MTOK for k, n in tokens.items()), Decimal(0))


def only(rows: pd.DataFrame, kind: str) -> pd.Series:
    found = rows[rows["kind"] == kind]
    assert len(found) == 1, rows[["kind", "option"]]
    return found.iloc[0]


def test_a_cheaper_model_saves_what_published_prices_say_and_unfit_or_unpriced_calls_are_counted():
    rows = [{"day": d} for d in days_back() for _ in range(3)]
    rows.append({"day": DAY, "input_tokens": 127_800, "output_tokens": 500})  # > 128,000 window
    rows.append({"day": DAY, "status_override": "invalid_usage"})  # the ledger has no price
    result = run(calls_frame(rows), config())
    row = only(result, "model_substitution")

    per_call_now = cost({"input": 10_000, "output": 500}, GPT_4O)
    per_call_then = cost({"input": 10_000, "output": 500}, GPT_4O_MINI)
    calls = 3 * WINDOW
    assert row["option"] == "gpt-4o-mini" and row["status"] == "new"
    assert Decimal(str(row["current_monthly_usd"])) == pytest.approx(
        per_call_now * calls * MONTH, abs=Decimal("1e-8")
    )
    assert Decimal(str(row["projected_monthly_usd"])) == pytest.approx(
        per_call_then * calls * MONTH, abs=Decimal("1e-8")
    )
    assert row["saving_monthly_usd"] == pytest.approx(
        float((per_call_now - per_call_then) * calls * MONTH), abs=1e-8
    )
    assert (row["evidence_calls"], row["evidence_days"]) == (calls, WINDOW)
    assert (row["unfit_calls"], row["unpriced_calls"]) == (1, 1)
    assert "128,000-token context window" in row["assumptions"]
    assert "1 unpriced call(s) excluded" in row["assumptions"]
    assert row["confidence"] == "medium"  # calls on every day, but fewer than 100


def test_prompt_caching_saves_the_assumed_hit_rate_at_the_cache_prices():
    rows = [
        {"day": d, "provider": "anthropic", "model": "claude-sonnet-4-5", "agent_id": "rag",
         "input_tokens": 20_000, "output_tokens": 100}
        for d in days_back() for _ in range(2)
    ]  # fmt: skip
    result = run(calls_frame(rows), config())
    row = only(result, "prompt_caching")
    now = cost({"input": 20_000, "output": 100}, SONNET)
    # 50 % of the input read from the cache, 5 % written to it, the rest uncached.
    then = cost({"cache_read": 10_000, "cache_write": 1_000, "input": 9_000, "output": 100}, SONNET)
    assert row["option"] == "cache 50% of input"
    assert row["saving_monthly_usd"] == pytest.approx(
        float((now - then) * 2 * WINDOW * MONTH), abs=1e-8
    )
    assert row["confidence"] == "medium"  # an assumed hit rate is never high confidence
    assert "Assumes 50% of each call's input is read" in row["assumptions"]


def test_an_agent_already_caching_gets_no_caching_recommendation():
    rows = [
        {"day": d, "provider": "anthropic", "model": "claude-sonnet-4-5", "agent_id": "rag",
         "input_tokens": 20_000, "cache_read_tokens": 12_000, "output_tokens": 100}
        for d in days_back() for _ in range(2)
    ]  # fmt: skip
    assert "prompt_caching" not in set(run(calls_frame(rows), config())["kind"])


@pytest.mark.parametrize(
    ("agent", "workflow", "option"),
    [("nightly-etl", None, "batch"), ("assistant", "report-42", "flex"), ("chat", None, None)],
)
def test_deferrable_calls_at_the_standard_tier_are_repriced_at_batch_or_flex(
    agent, workflow, option
):
    rows = [
        {"day": d, "model": "gpt-5-mini", "agent_id": agent, "workflow_id": workflow,
         "input_tokens": 8_000, "output_tokens": 2_000}
        for d in days_back() for _ in range(2)
    ]  # fmt: skip
    rows.append({"day": DAY, "model": "gpt-5-mini", "agent_id": agent, "workflow_id": workflow,
                 "service_tier": "priority"})  # fmt: skip
    result = run(calls_frame(rows), config())
    found = result[result["kind"] == "batch_or_flex"]
    if option is None:  # a 5-second tolerance allows neither
        assert found.empty
        return
    row = found.iloc[0]
    now = cost({"input": 8_000, "output": 2_000}, GPT_5_MINI)
    assert row["option"] == option
    assert row["evidence_calls"] == 2 * WINDOW  # the priority call is not deferred
    # Batch and flex are half the list price (the catalog's, or the configured fallback).
    assert row["saving_monthly_usd"] == pytest.approx(float(now / 2 * 2 * WINDOW * MONTH), abs=1e-8)


def test_calls_just_above_a_long_context_threshold_are_priced_as_trimmed_to_it():
    rows = [
        {"day": d, "provider": "anthropic", "model": "claude-sonnet-4-5", "agent_id": "research",
         "input_tokens": 210_000, "output_tokens": 1_000}
        for d in days_back()
    ]  # fmt: skip
    # Far above the threshold: trimming it to 200,000 tokens is not a small change.
    rows.append({**rows[-1], "input_tokens": 300_000})
    result = run(calls_frame(rows), config(min_calls=1))
    row = only(result, "long_context")
    now = cost({"input": 210_000, "output": 1_000}, SONNET_LONG)
    then = cost({"input": 200_000, "output": 1_000}, SONNET)
    assert row["option"] == "input ≤ 200,000 tokens"
    assert row["evidence_calls"] == WINDOW
    assert row["saving_monthly_usd"] == pytest.approx(
        float((now - then) * WINDOW * MONTH), abs=1e-8
    )


def _substitution_day(day: date, *, on_mini: int = 0, on_4o: int = 40) -> list[dict]:
    return [{"day": day}] * on_4o + [{"day": day, "model": "gpt-4o-mini"}] * on_mini


def test_status_is_new_then_open_then_applied_when_usage_moves_then_nothing():
    cfg = config(**NO_CACHING)
    history = [r for d in days_back() for r in _substitution_day(d)]
    day1 = run(calls_frame(history), cfg)
    assert only(day1, "model_substitution")["status"] == "new"

    day2_calls = history + _substitution_day(DAY + timedelta(days=1))
    day2 = run(calls_frame(day2_calls), cfg, day1, DAY + timedelta(days=1))
    row2 = only(day2, "model_substitution")
    assert (row2["status"], row2["since_day"]) == ("open", DAY)

    # The agent moves to the recommended model: 0 of its calls left on gpt-4o today.
    moved = day2_calls + _substitution_day(DAY + timedelta(days=2), on_mini=40, on_4o=0)
    day3 = run(calls_frame(moved), cfg, day2, DAY + timedelta(days=2))
    row3 = only(day3, "model_substitution")
    assert (row3["status"], row3["since_day"]) == ("applied", DAY)

    # Applied is told once; the window still holds gpt-4o calls, but usage stays moved.
    still = moved + _substitution_day(DAY + timedelta(days=3), on_mini=40, on_4o=0)
    assert run(calls_frame(still), cfg, day3, DAY + timedelta(days=3)).empty


def test_a_quiet_day_of_a_small_agent_is_not_taken_for_a_move():
    cfg = config(**NO_CACHING)
    history = [r for d in days_back() for r in _substitution_day(d, on_4o=3)]
    day1 = run(calls_frame(history), cfg)
    # 3 calls a day: a day with 2 on gpt-4o-mini and none on gpt-4o may be chance.
    quiet = history + _substitution_day(DAY + timedelta(days=1), on_mini=2, on_4o=0)
    day2 = run(calls_frame(quiet), cfg, day1, DAY + timedelta(days=1))
    assert only(day2, "model_substitution")["status"] == "open"


def test_a_recommendation_that_no_longer_pays_is_gone_not_applied():
    cfg = config(**NO_CACHING)
    day1 = run(calls_frame([r for d in days_back() for r in _substitution_day(d)]), cfg)
    # Next day: the saving is below the floor (the figure shown is today's), usage not moved.
    gone = run(
        calls_frame([r for d in days_back() for r in _substitution_day(d)]),
        config(min_monthly_saving_usd=1_000, **NO_CACHING),
        day1,
        DAY + timedelta(days=1),
    )
    assert only(gone, "model_substitution")["status"] == "gone"


def test_calls_whose_cost_is_not_a_token_price_are_left_out_and_counted():
    rows = [{"day": d} for d in days_back() for _ in range(3)]
    rows += [{"day": DAY, "status_override": "app_reported"}] * 2  # an amount tokens cannot give
    row = only(run(calls_frame(rows), config(**NO_CACHING)), "model_substitution")
    assert (row["evidence_calls"], row["unfit_calls"], row["unpriced_calls"]) == (42, 2, 0)


def test_an_open_recommendation_is_kept_while_it_misses_a_floor_by_a_hair():
    history = [r for d in days_back() for r in _substitution_day(d)]
    day1 = run(calls_frame(history), config(**NO_CACHING))
    saving = only(day1, "model_substitution")["saving_monthly_usd"]
    stricter = config(min_monthly_saving_usd=round(saving * 1.05, 2), **NO_CACHING)
    assert run(calls_frame(history), stricter).empty  # new: the floor holds
    kept = run(calls_frame(history), stricter, day1, DAY + timedelta(days=1))
    assert only(kept, "model_substitution")["status"] == "open"


def test_unpriced_calls_alone_never_make_a_saving():
    rows = [{"day": d, "status_override": "unknown_model"} for d in days_back() for _ in range(3)]
    assert run(calls_frame(rows), config()).empty


@pytest.mark.parametrize(
    ("kind", "calls", "days", "excluded", "fallback", "expected"),
    [
        ("model_substitution", 500, 14, 0.0, False, "high"),
        ("model_substitution", 500, 14, 0.2, False, "medium"),
        ("model_substitution", 50, 5, 0.0, False, "medium"),
        ("model_substitution", 10, 1, 0.0, False, "low"),
        ("prompt_caching", 500, 14, 0.0, False, "medium"),
        ("batch_or_flex", 500, 14, 0.0, True, "medium"),
        ("long_context", 500, 14, 0.5, True, "low"),
    ],
)
def test_confidence(kind, calls, days, excluded, fallback, expected):
    got = rec.confidence(
        kind, calls=calls, days=days, window=14, excluded_share=excluded, fallback=fallback
    )
    assert got == expected


def test_monthly_figures_are_decimal_and_scaled_by_covered_days():
    assert rec.monthly(1.4, 14) == Decimal("3.043750000")
    assert rec.covered_days(DAY, {DAY - timedelta(days=2), DAY}, config().recommendations) == 3
    assert rec.covered_days(DAY, set(), config().recommendations) == WINDOW


def test_options_on_the_same_calls_do_not_add_up():
    rows = run(calls_frame([r for d in days_back() for r in _substitution_day(d)]), config())
    assert set(rows["kind"]) == {"model_substitution", "prompt_caching"}  # both on gpt-4o
    assert rec.best_saving(rows) == pytest.approx(rows["saving_monthly_usd"].max())


def test_the_digest_lists_the_top_savings_once_per_iso_week():
    history = [r for d in days_back() for r in _substitution_day(d)]
    rows = run(calls_frame(history), config(**NO_CACHING))
    row = recommendation_digest.digest_outbox_row(
        rows,
        week=recommendation_digest.iso_week(DAY),
        tenant_id="__company__",
        channel="#cost-alerts",
        tenant_names={"t1": "Tenant One"},
        ui_url="http://ui.test",
        top=3,
    ).iloc[0]
    assert (row["period"], row["ref"], row["kind"]) == (
        "2026-W38",
        "2026-W38",
        "recommendations_digest",
    )
    assert "Tenant One" in row["blocks"] and "gpt-4o → gpt-4o-mini" in row["blocks"]
    assert row["text"].startswith(
        "Cost recommendations — week 2026-W38: 1 recommendation(s), up to $"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"substitutions": [{"provider": "openai", "model": "gpt-4o", "alternative": "gpt-9z"}]},
         "not a openai model of the genai-prices catalog"),
        ({"caching": {"assumed_hit_rate": 0.9, "assumed_write_share": 0.2}}, "cannot exceed 1"),
        ({"deferrable": [{"latency_tolerance_seconds": 60}]}, "give an agent or a workflow"),
    ],
)  # fmt: skip
def test_configuration_that_cannot_work_fails_at_load_time(changes, message):
    with pytest.raises(ConfigError, match=message):
        config(**changes)
