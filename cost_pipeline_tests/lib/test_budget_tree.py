"""Protects the budget hierarchy: its config rules, reset-day periods across DST, the exact
roll-up, rollover and per-node status and alert facts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cost_pipeline.lib.budget_periods import (
    Window,
    budget_period_of,
    budget_periods_overlapping_day,
)
from cost_pipeline.lib.budget_tree import (
    ORGANIZATION,
    Spend,
    alert_facts,
    build_tree,
    from_nano,
    node_status,
    plan_day,
    roll_up,
    roll_up_mismatches,
    to_nano,
    windows,
)
from cost_pipeline.lib.config import ConfigError, CostConfig, parse_config
from cost_pipeline.lib.periods import period_of

TENANTS = ["a", "b", "c", "d", "e"]
NY, BERLIN = "America/New_York", "Europe/Berlin"


def config(hierarchy: dict[str, Any], tenants: list[str] = TENANTS) -> CostConfig:
    return parse_config(
        {
            "organization": "Org",
            "tiers": {"t": {"name": "T"}},
            "tenants": [{"id": t, "name": t.upper(), "tier": "t"} for t in tenants],
            "budget_hierarchy": hierarchy,
        }
    )


HIERARCHY = {
    "budget": {"monthly_usd": 1000},
    "nodes": [
        {"id": "eng", "kind": "department", "budget": {"monthly_usd": 600}},
        {"id": "search", "kind": "team", "parent": "eng", "tenants": ["a", "b"]},
        {"id": "chat", "kind": "team", "parent": "eng", "tenants": ["c"]},
        {"id": "sales", "kind": "team", "tenants": ["d"]},
    ],
}


# -- configuration -----------------------------------------------------------------------------


def test_existing_configs_load_without_a_hierarchy() -> None:
    tree = build_tree(config({}))
    assert [n.id for n in tree] == [ORGANIZATION]
    assert tree[0].tenants == tuple(TENANTS) and tree[0].budget.monthly_usd is None


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([{"id": "x", "kind": "team", "tenants": ["zz"]}], "unknown tenant(s) 'zz'"),
        ([{"id": "x", "kind": "team", "parent": "nope"}], "nodes[0].parent: unknown node 'nope'"),
        (
            [
                {"id": "x", "kind": "team", "parent": "y"},
                {"id": "y", "kind": "team", "parent": "x"},
            ],
            "cycle: x -> y -> x",
        ),
        (
            [
                {"id": "x", "kind": "team", "tenants": ["a"]},
                {"id": "y", "kind": "team", "tenants": ["a"]},
            ],
            "tenant 'a' is in both team 'x' and team 'y'",
        ),
        (
            [{"id": "x", "kind": "team"}, {"id": "y", "kind": "department", "parent": "x"}],
            "department 'y' cannot sit under team 'x'",
        ),
        ([{"id": "x", "kind": "team"}, {"id": "x", "kind": "team"}], "duplicate node id 'x'"),
        ([{"id": "x", "kind": "department", "pooled": False}], "only a team can be unpooled"),
        (
            [{"id": "x", "kind": "team", "budget": {"monthly_usd": 5, "rollover": "capped"}}],
            "rollover_cap_usd goes with rollover 'capped'",
        ),
        ([{"id": "x", "kind": "team", "budget": {"rollover": "full"}}], "needs monthly_usd"),
        ([{"id": "x", "kind": "team", "reset_day": 29}], "less than or equal to 28"),
        ([{"id": "x", "kind": "team", "timezone": "Mars/Base"}], "unknown time zone"),
    ],
)
def test_invalid_hierarchies_fail_at_load_naming_the_key(nodes: list, message: str) -> None:
    with pytest.raises(ConfigError, match="budget_hierarchy") as info:
        config({"nodes": nodes})
    assert message in str(info.value)


def test_tree_inherits_calendars_and_orders_parents_first() -> None:
    cfg = config(
        {
            "timezone": "Europe/Berlin",
            "reset_day": 5,
            "nodes": [
                {"id": "t", "kind": "team", "parent": "d", "tenants": ["a"]},
                {"id": "d", "kind": "department", "timezone": "America/New_York"},
            ],
        }
    )
    tree = {n.id: n for n in build_tree(cfg)}
    assert [n.id for n in build_tree(cfg)] == [ORGANIZATION, "department:d", "team:t"]
    assert (tree["team:t"].timezone, tree["team:t"].reset_day) == ("America/New_York", 5)
    assert tree[ORGANIZATION].tenants == ("b", "c", "d", "e")
    assert tree[ORGANIZATION].thresholds == (50, 75, 90, 100)


# -- periods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata"])
def test_reset_day_one_is_the_local_calendar_month(tz: str) -> None:
    for day in (date(2026, 3, 8), date(2026, 10, 31), date(2026, 11, 1), date(2026, 12, 31)):
        ours, months = budget_period_of(day, tz), period_of(day, tz)
        assert (ours.key, ours.start, ours.end) == (months.key, months.start, months.end)


@pytest.mark.parametrize(
    ("tz", "reset_day", "day", "start", "end", "key"),
    [
        # New York leaves DST on Nov 1 2026 at 02:00: October is EDT at both ends.
        (NY, 1, date(2026, 10, 20), "2026-10-01T04:00", "2026-11-01T04:00", "2026-10"),
        (NY, 1, date(2026, 11, 5), "2026-11-01T04:00", "2026-12-01T05:00", "2026-11"),
        # Berlin leaves DST on Oct 25 2026: from CEST midnight to CET midnight.
        (BERLIN, 1, date(2026, 10, 20), "2026-09-30T22:00", "2026-10-31T23:00", "2026-10"),
        (BERLIN, 15, date(2026, 11, 3), "2026-10-14T22:00", "2026-11-14T23:00", "2026-10-15"),
        (BERLIN, 15, date(2026, 10, 14), "2026-09-14T22:00", "2026-10-14T22:00", "2026-09-15"),
        # New York enters DST on Mar 8 2026 at 02:00, after the reset-day midnight.
        (NY, 8, date(2026, 3, 8), "2026-03-08T05:00", "2026-04-08T04:00", "2026-03-08"),
        (NY, 28, date(2026, 2, 27), "2026-01-28T05:00", "2026-02-28T05:00", "2026-01-28"),
    ],
)
def test_periods_run_from_local_reset_midnight_across_dst(
    tz: str, reset_day: int, day: date, start: str, end: str, key: str
) -> None:
    period = budget_period_of(day, tz, reset_day)
    assert period.start == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert period.end == datetime.fromisoformat(end).replace(tzinfo=UTC)
    assert period.key == key and period.first_day <= day <= period.last_day
    assert period.next().start == period.end and period.previous().end == period.start
    assert period.next().previous() == period


def test_a_utc_day_overlaps_two_periods_when_one_ends_in_it() -> None:
    # 2026-10-31 23:00 UTC is Berlin's November reset.
    october, november = budget_periods_overlapping_day(date(2026, 10, 31), "Europe/Berlin")
    assert (october.key, november.key) == ("2026-10", "2026-11")
    assert budget_periods_overlapping_day(date(2026, 10, 30), "Europe/Berlin") == [october]


def test_an_instant_belongs_to_the_period_of_its_local_date() -> None:
    instant = datetime(2026, 11, 1, 3, 30, tzinfo=UTC)  # Oct 31 23:30 in New York
    assert budget_period_of(instant, "America/New_York").key == "2026-10"
    assert budget_period_of(instant, "Europe/Berlin").key == "2026-11"


# -- roll-up -----------------------------------------------------------------------------------


def spend(**usd: str) -> dict[str, Spend]:
    return {
        t: Spend(llm=to_nano(Decimal(v)), other=to_nano(Decimal("0.1"))) for t, v in usd.items()
    }


def test_team_and_department_spend_are_the_sums_of_their_tenants() -> None:
    tree = build_tree(config(HIERARCHY))
    rolled = roll_up(tree, spend(a="0.1", b="0.2", c="1.000000001", d="3", e="7.5"))
    total = {k: v.spend.total for k, v in rolled.items()}
    assert total["team:search"] == to_nano(Decimal("0.5"))  # 0.1 + 0.2 + 2 x 0.1 other
    assert total["team:chat"] == to_nano(Decimal("1.100000001"))
    assert total["department:eng"] == total["team:search"] + total["team:chat"]
    assert rolled["department:eng"].tenants.total == 0
    assert total[ORGANIZATION] == to_nano(Decimal("12.300000001"))
    assert rolled[ORGANIZATION].tenants.total == to_nano(Decimal("7.6"))  # e, unattached


@st.composite
def trees(draw: st.DrawFn) -> tuple[CostConfig, dict[str, Spend]]:
    count = draw(st.integers(0, 8))
    nodes: list[dict[str, Any]] = []
    for i in range(count):
        parent = draw(st.one_of(st.none(), st.integers(0, i - 1))) if i else None
        parent_kind = nodes[parent]["kind"] if parent is not None else "department"
        kind = (
            draw(st.sampled_from(["department", "team"])) if parent_kind == "department" else "team"
        )
        pooled = kind == "department" or draw(st.booleans())
        nodes.append(
            {
                "id": f"n{i}",
                "kind": kind,
                "parent": None if parent is None else f"n{parent}",
                "tenants": [],
                "pooled": pooled,
            }
        )
    tenants = [f"t{i}" for i in range(draw(st.integers(1, 12)))]
    for tenant in tenants:
        home = draw(st.one_of(st.none(), st.integers(0, count - 1))) if count else None
        if home is not None:
            nodes[home]["tenants"].append(tenant)
    nano = st.integers(-(10**15), 10**15)
    amounts = {t: Spend(llm=draw(nano), other=draw(nano)) for t in tenants}
    return config({"nodes": nodes}, tenants), amounts


@given(trees())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_node_is_the_exact_sum_of_its_children_and_tenants(
    case: tuple[CostConfig, dict[str, Spend]],
) -> None:
    cfg, amounts = case
    tree = build_tree(cfg)
    rolled = roll_up(tree, amounts)
    assert {n.id for n in tree} == set(rolled)
    for node in tree:
        own = sum(amounts[t].total for t in node.tenants)
        children = sum(rolled[c].spend.total for c in node.children)
        assert rolled[node.id].spend.total == own + children
        assert rolled[node.id].spend.llm == sum(amounts[t].llm for t in node.tenants) + sum(
            rolled[c].spend.llm for c in node.children
        )
    assert rolled[ORGANIZATION].spend.total == sum(s.total for s in amounts.values())
    # Every tenant is counted exactly once below the organization.
    placed = [t for n in tree for t in n.tenants]
    assert sorted(placed) == sorted(amounts)


# -- rollover and status -----------------------------------------------------------------------


def evaluate(
    cfg: CostConfig,
    day: date,
    by_period: Mapping[str, Mapping[str, str]],
    *,
    history_start: date = date(2026, 1, 1),
) -> dict[str, dict[str, Any]]:
    """Status rows of `day` keyed by "node period", with each tenant's spend per period key
    (every tenant's other cost; a period not listed spent nothing)."""
    tree = build_tree(cfg)
    plans = plan_day(tree, day, history_start)
    as_of = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    keys = {p.period.window(as_of): p.period.key for p in plans}
    keys |= {p.previous.window(as_of): p.previous.key for p in plans if p.previous}
    amounts: dict[Window, dict[str, Spend]] = {}
    for window in windows(plans, day, as_of):
        usd = by_period.get(keys.get(window, ""), {})
        amounts[window] = {t: Spend(other=to_nano(Decimal(v))) for t, v in usd.items()}
    status = node_status(tree, plans, amounts, day=day, as_of=as_of)
    assert roll_up_mismatches(status) == []
    return {f"{r['node_id']} {r['period']}": r for r in status.to_dict("records")}


@pytest.mark.parametrize(
    ("rollover", "cap", "october", "carried"),
    [
        ("none", None, "600", "0"),
        ("full", None, "600", "400"),
        ("capped", "250", "600", "250"),
        ("capped", "250", "999.999999999", "0.000000001"),
        ("full", None, "1500", "0"),  # overspend does not reduce November
    ],
)
@pytest.mark.parametrize("tz", ["America/New_York", "Europe/Berlin"])
def test_rollover_carries_exactly_the_configured_amount_across_a_month_boundary(
    tz: str, rollover: str, cap: str | None, october: str, carried: str
) -> None:
    budget = {"monthly_usd": "1000", "rollover": rollover, "rollover_cap_usd": cap}
    cfg = config(
        {
            "timezone": tz,
            "nodes": [{"id": "search", "kind": "team", "tenants": ["a", "b"], "budget": budget}],
        }
    )
    # October's spend split across the team's tenants; November so far: 100.
    rows = evaluate(
        cfg,
        date(2026, 11, 2),
        {"2026-10": {"a": "100", "b": str(Decimal(october) - 100)}, "2026-11": {"a": "100"}},
    )
    row = rows["team:search 2026-11"]
    assert to_nano(row["rollover_usd"]) == to_nano(Decimal(carried))
    assert to_nano(row["limit_usd"]) == to_nano(Decimal(1000) + Decimal(carried))
    if rollover == "none":
        assert pd.isna(row["previous_spend_usd"])
    else:
        assert to_nano(row["previous_spend_usd"]) == to_nano(Decimal(october))
    expected = float(100 / (1000 + Decimal(carried)) * 100)
    assert row["utilization_pct"] == pytest.approx(expected, abs=1e-4)
    assert rows[f"{ORGANIZATION} 2026-11"]["rollover_usd"] == 0.0


def test_rollover_runs_from_reset_day_to_reset_day_in_the_local_zone() -> None:
    budget = {"monthly_usd": "500", "rollover": "full"}
    cfg = config(
        {
            "timezone": "Europe/Berlin",
            "reset_day": 15,
            "nodes": [{"id": "x", "kind": "team", "tenants": ["a"], "budget": budget}],
        }
    )
    # UTC day Nov 14 holds Berlin's reset (23:00 UTC): both periods have a row.
    rows = evaluate(cfg, date(2026, 11, 14), {"2026-10-15": {"a": "120"}})
    assert rows["team:x 2026-10-15"]["rollover_usd"] == 500.0  # Sep 15 - Oct 14 spent nothing
    assert rows["team:x 2026-10-15"]["limit_usd"] == 1000.0
    assert rows["team:x 2026-11-15"]["rollover_usd"] == 380.0
    assert rows["team:x 2026-11-15"]["spend_usd"] == 0.0


def test_no_rollover_from_a_period_before_the_history() -> None:
    budget = {"monthly_usd": "1000", "rollover": "full"}
    cfg = config({"nodes": [{"id": "x", "kind": "team", "tenants": ["a"], "budget": budget}]})
    rows = evaluate(cfg, date(2026, 11, 2), {}, history_start=date(2026, 10, 2))
    assert rows["team:x 2026-11"]["rollover_usd"] == 0.0
    assert pd.isna(rows["team:x 2026-11"]["previous_spend_usd"])


def test_thresholds_above_100_percent_are_reached_and_alerted() -> None:
    cfg = config(
        {
            "nodes": [
                {"id": "eng", "kind": "department", "budget": {"monthly_usd": 100}},
                {
                    "id": "search",
                    "kind": "team",
                    "parent": "eng",
                    "tenants": ["a"],
                    "budget": {"monthly_usd": 100, "thresholds": [50, 100, 150, 200]},
                },
            ]
        }
    )
    rows = evaluate(cfg, date(2026, 10, 10), {"2026-10": {"a": "160", "b": "5"}})
    team, eng = rows["team:search 2026-10"], rows["department:eng 2026-10"]
    assert (team["utilization_pct"], team["threshold_reached"], team["status"]) == (
        160.0,
        150.0,
        "exceeded",
    )
    assert (eng["threshold_reached"], eng["spend_usd"]) == (100.0, 160.0)  # default thresholds
    organization = rows[f"{ORGANIZATION} 2026-10"]
    assert organization["spend_usd"] == 165.0 and pd.isna(organization["limit_usd"])
    assert organization["status"] == "ok" and pd.isna(organization["threshold_reached"])

    facts = alert_facts(pd.DataFrame(list(rows.values())))
    assert facts.to_dict("records") == [
        {"tenant_id": t, "period": "2026-10", "kind": "budget_threshold", "ref": ref}
        for t, ref in (("department:eng", "100"), ("team:search", "150"))
    ]


def test_status_bands_and_daily_utilization() -> None:
    budget = {"monthly_usd": "1000", "daily_usd": "50"}
    cfg = config({"nodes": [{"id": "x", "kind": "team", "tenants": ["a"], "budget": budget}]})
    for spent, status in (
        ("749", "ok"),
        ("750", "warning"),
        ("900", "critical"),
        ("1000", "exceeded"),
    ):
        row = evaluate(cfg, date(2026, 10, 10), {"2026-10": {"a": spent}})["team:x 2026-10"]
        assert row["status"] == status
    assert row["budget_daily_usd"] == 50.0 and row["daily_utilization_pct"] == 0.0  # fmt: skip


def test_an_unpooled_team_gives_each_tenant_the_budget() -> None:
    team = {"id": "x", "kind": "team", "tenants": ["a", "b"], "pooled": False}
    cfg = config({"nodes": [{**team, "budget": {"monthly_usd": 100}}]})
    tree = {n.id: n for n in build_tree(cfg)}
    assert tree["team:x"].children == ("team:x/a", "team:x/b")
    rows = evaluate(cfg, date(2026, 10, 10), {"2026-10": {"a": "80", "b": "30"}})
    assert pd.isna(rows["team:x 2026-10"]["limit_usd"])
    assert rows["team:x 2026-10"]["spend_usd"] == 110.0
    assert rows["team:x/a 2026-10"]["utilization_pct"] == 80.0
    assert rows["team:x/b 2026-10"]["node_kind"] == "member"
    facts = alert_facts(pd.DataFrame(list(rows.values())))
    # a: 80 of its 100 in 10 days (threshold 75, and the run rate projects ~248); b: 30 (~93).
    assert sorted(zip(facts["tenant_id"], facts["kind"], strict=True)) == [
        ("team:x/a", "budget_threshold"),
        ("team:x/a", "forecast_breach"),
    ]


def test_mixed_calendars_roll_up_in_each_nodes_own_window() -> None:
    cfg = config(
        {
            "timezone": "UTC",
            "nodes": [
                {"id": "ny", "kind": "team", "tenants": ["a"], "timezone": "America/New_York"},
                {"id": "ber", "kind": "team", "tenants": ["b"], "timezone": "Europe/Berlin"},
            ],
        }
    )
    tree = build_tree(cfg)
    day = date(2026, 10, 10)
    as_of = datetime(2026, 10, 11, tzinfo=UTC)
    plans = plan_day(tree, day, date(2026, 1, 1))
    amounts = {w: {"a": Spend(llm=1), "b": Spend(llm=2)} for w in windows(plans, day, as_of)}
    status = node_status(tree, plans, amounts, day=day, as_of=as_of)
    assert roll_up_mismatches(status) == []
    assert set(status["timezone"]) == {"UTC", "America/New_York", "Europe/Berlin"}
    organization = status.set_index("node_id").loc[ORGANIZATION]
    assert to_nano(organization["children_spend_usd"]) == 3


def test_roll_up_mismatches_name_the_broken_row() -> None:
    cfg = config(HIERARCHY)
    rows = evaluate(cfg, date(2026, 10, 10), {"2026-10": {"a": "1", "b": "2", "c": "3"}})
    frame = pd.DataFrame(list(rows.values()))
    assert roll_up_mismatches(frame) == []
    broken = frame.copy()
    broken.loc[broken["node_id"] == "team:chat", ["spend_usd", "other_cost_usd"]] = 3.000000001
    broken.loc[broken["node_id"] == "team:chat", "tenants_spend_usd"] = 3.000000001
    problems = roll_up_mismatches(broken)
    assert problems == ["department:eng 2026-10: children rows sum to 6.000000001 USD, not 6.0"]


@pytest.mark.parametrize(
    ("value", "nano"),
    [(0.1, 100_000_000), (Decimal("1.000000001"), 1_000_000_001), (2.5e-10, 0), (7.5e-10, 1)],
)
def test_nano_conversion_is_exact_and_half_even(value: float | Decimal, nano: int) -> None:
    assert to_nano(value) == nano
    assert to_nano(from_nano(123_456_789_012_345)) == 123_456_789_012_345
