"""Protects the enforcement decision: blocking limits at every scope, the circuit breaker's
states, overrides and suspensions, unknown state and unknown tenants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.enforcement import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    UNKNOWN,
    Action,
    Breaker,
    TenantSpend,
    evaluate,
    limits_for,
)

NOW = datetime(2026, 10, 20, 12, tzinfo=UTC)
CONFIG = CostConfig.model_validate(
    {
        "tiers": {
            "free": {"name": "Free", "hard_cap_usd": 10, "fail_mode": "closed"},
            "pro": {"name": "Pro", "monthly_price_usd": 99},
        },
        "tenants": [
            {"id": "f1", "name": "F", "tier": "free"},
            {
                "id": "p1",
                "name": "P",
                "tier": "pro",
                "budget": {"monthly_usd": 500, "blocking": True},
                "limits": [{"scope": "agent", "value": "bot", "monthly_usd": 50}],
            },
            {"id": "p2", "name": "P2", "tier": "pro", "budget": {"monthly_usd": 500}},
        ],
    }
)


def spend(tenant: str, usd: float, *, other: float = 0.0, **scoped: float) -> TenantSpend:
    llm = {("tenant", ""): usd}
    llm.update({("agent", k): v for k, v in scoped.items()})
    return TenantSpend(tenant, "2026-10", llm, {}, other, refreshed_at=NOW - timedelta(minutes=5))


def decide(state: TenantSpend, *, agent: str | None = None, cost: float = 0.0, now=NOW):
    tier = CONFIG.tier_of(state.tenant_id)
    return evaluate(
        state,
        limits_for(CONFIG, state.tenant_id),
        {"tenant": state.tenant_id, "agent": agent, "model": None, "provider": None},
        estimated_cost=cost,
        now=now,
        fail_mode=tier.fail_mode,
        max_staleness=timedelta(hours=1),
    )


def test_a_pro_tenant_over_a_blocking_budget_is_denied_with_a_reason() -> None:
    d = decide(spend("p1", 480.0, other=30.0))  # the budget counts the whole cost
    assert not d.allowed and d.state == OPEN
    assert d.spent == pytest.approx(510.0) and d.limit == 500 and d.remaining == pytest.approx(-10)
    assert "budget reached: 510.00 of 500.00 USD spent in 2026-10" in d.reason
    # The same spend against a budget that only warns: allowed, and it says so.
    d = decide(spend("p2", 480.0, other=30.0))
    assert d.allowed and "(not blocking)" in d.reason


def test_the_estimated_cost_counts_toward_the_cap() -> None:
    assert decide(spend("f1", 9.0), cost=0.5).allowed
    d = decide(spend("f1", 9.0), cost=1.5)
    assert not d.allowed and "tier hard cap reached" in d.reason


def test_an_agent_limit_blocks_that_agent_only() -> None:
    state = spend("p1", 120.0, bot=55.0, writer=65.0)
    blocked = decide(state, agent="bot")
    assert not blocked.allowed and blocked.subject == "agent bot limit"
    other = decide(state, agent="writer")
    assert other.allowed and other.remaining == pytest.approx(380.0)


def test_overrides_let_calls_through_until_they_expire_and_suspensions_stop_a_scope() -> None:
    override = Action(
        "a1", "override", "tenant", "", "launch day", "ops@x", NOW, NOW + timedelta(hours=2)
    )
    state = spend("f1", 12.0)
    with_override = TenantSpend(**{**state.__dict__, "actions": (override,)})
    d = decide(with_override)
    assert d.allowed and "override for the tenant by ops@x" in d.reason
    assert not decide(with_override, now=NOW + timedelta(hours=3)).allowed

    suspension = Action("a2", "suspension", "agent", "bot", "loop", "sre@x", NOW, None)
    suspended = TenantSpend(**{**spend("p1", 1.0).__dict__, "actions": (suspension,)})
    d = decide(suspended, agent="bot")
    assert not d.allowed and d.reason == "agent bot suspended by sre@x: loop"
    assert decide(suspended, agent="writer").allowed


def test_unknown_state_follows_the_tiers_fail_mode() -> None:
    stale = TenantSpend("f1", "2026-10", {}, {}, 0.0, refreshed_at=NOW - timedelta(hours=5))
    d = decide(stale)
    assert not d.allowed and d.state == UNKNOWN and "fails closed" in d.reason
    never = TenantSpend("p2", "2026-10", {}, {}, 0.0, refreshed_at=None)
    d = decide(never)
    assert d.allowed and d.state == UNKNOWN and "last counted never" in d.reason


def test_unpriced_calls_are_named_not_counted_as_zero() -> None:
    state = TenantSpend(
        "f1", "2026-10", {("tenant", ""): 2.0}, {("tenant", ""): 3}, 0.0, refreshed_at=NOW
    )
    assert "3 unpriced call(s) not in the spend" in decide(state).reason


def test_the_breaker_goes_open_half_open_closed() -> None:
    breaker, cooldown = Breaker(), timedelta(minutes=15)
    over = decide(spend("f1", 11.0))
    assert breaker.apply("f1", over, NOW, cooldown).state == OPEN
    assert not breaker.watching("f1")  # an open limit is cached like a closed one
    # The budget resets: a new period starts under the cap -> half-open, watched.
    at = NOW + timedelta(days=12)
    reset = TenantSpend("f1", "2026-11", {("tenant", ""): 0.0}, {}, 0.0, refreshed_at=at)
    d = breaker.apply("f1", decide(reset, now=at), at, cooldown)
    assert d.allowed and d.state == HALF_OPEN and "under watch" in d.reason
    assert breaker.watching("f1")  # re-read on every call while half-open
    later = at + timedelta(minutes=10)
    assert breaker.apply("f1", decide(reset, now=later), later, cooldown).state == HALF_OPEN
    done = at + timedelta(minutes=16)
    assert breaker.apply("f1", decide(reset, now=done), done, cooldown).state == CLOSED
    assert not breaker.watching("f1")


def test_a_half_open_limit_reopens_at_once_when_reached_again() -> None:
    breaker, cooldown = Breaker(), timedelta(minutes=15)
    breaker.apply("f1", decide(spend("f1", 11.0)), NOW, cooldown)
    assert breaker.apply("f1", decide(spend("f1", 2.0)), NOW, cooldown).state == HALF_OPEN
    again = breaker.apply("f1", decide(spend("f1", 10.5)), NOW, cooldown)
    assert not again.allowed and again.state == OPEN


def test_a_blocking_daily_budget_and_an_end_user_limit() -> None:
    config = CostConfig.model_validate(
        {
            "tiers": {"pro": {"name": "Pro"}},
            "tenants": [
                {
                    "id": "p",
                    "name": "P",
                    "tier": "pro",
                    "budget": {"monthly_usd": 1000, "daily_usd": 20, "blocking": True},
                    "limits": [{"scope": "user", "value": "u-42", "monthly_usd": 5}],
                }
            ],
        }
    )
    state = TenantSpend(
        "p",
        "2026-10",
        {("tenant", ""): 100.0, ("user", "u-42"): 6.0},
        day_usd=19.0,
        refreshed_at=NOW,
    )

    def ask(user: str | None, cost: float):
        return evaluate(
            state,
            limits_for(config, "p"),
            {"tenant": "p", "user": user},
            estimated_cost=cost,
            now=NOW,
            fail_mode="open",
            max_staleness=timedelta(hours=1),
        )

    assert not ask("u-42", 0.0).allowed  # that end user's own limit
    assert ask("u-7", 0.5).allowed
    today = ask("u-7", 2.0)
    assert not today.allowed and today.reason.startswith(
        "daily budget reached: 19.00 of 20.00 USD spent today (UTC)"
    )
