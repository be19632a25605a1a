"""Protects the rollups: call trees (depth, orphans, loops, midnight), unpriced calls never
passed off as $0, agent figures, per-agent revenue, and that every rollup adds up to the day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cost_pipeline.lib.config import parse_config
from cost_pipeline.lib.rollups import (
    agent_costs,
    agent_unit_economics,
    end_user_costs,
    missing_parents,
    period_windows,
    resolve_call_trees,
    workflow_runs,
)
from cost_pipeline_tests.billing_helpers import RAW_CONFIG

DAY = date(2026, 9, 10)
T0 = datetime(2026, 9, 10, 12, tzinfo=UTC)


def call(event_id: str, parent: str | None = None, **fields: object) -> dict:
    """One priced call of DAY: 1 USD, 100 in / 10 out tokens, 200 ms, ok, unless told."""
    row = {
        "event_id": event_id,
        "occurred_at": T0 + timedelta(seconds=int(event_id.lstrip("e") or 0)),
        "tenant_id": "acme",
        "user_id": "u1",
        "agent_id": "support",
        "workflow_id": "wf1",
        "parent_event_id": parent,
        "latency_ms": 200,
        "status": "ok",
        "cost_usd": 1.0,
        "pricing_status": "priced",
        "input_tokens": 100,
        "cache_read_tokens": 0,
        "output_tokens": 10,
    }
    return row | fields


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def runs_of(*rows: dict, earlier: pd.DataFrame | None = None) -> pd.DataFrame:
    return workflow_runs(frame(*rows), DAY, earlier_parents=earlier).runs.set_index("root_event_id")


# -- call trees -------------------------------------------------------------------------------


def test_a_chain_resolves_to_its_root_with_levels() -> None:
    trees = resolve_call_trees(np.array([-1, 0, 1, 2, 3]))
    assert trees.root.tolist() == [0] * 5
    assert trees.level.tolist() == [0, 1, 2, 3, 4]
    assert not trees.loop_broken.any()


def test_a_long_chain_resolves_in_logarithmic_rounds() -> None:
    n = 200_000
    trees = resolve_call_trees(np.arange(n) - 1)
    assert (trees.root == 0).all() and trees.level[-1] == n - 1


@pytest.mark.parametrize(
    ("parent", "root", "broken"),
    [
        ([0], [0], [0]),  # a call naming itself
        ([1, 0], [0, 0], [0]),
        ([1, 2, 0, 0, 3], [0] * 5, [0]),  # a loop with a tail hanging on it
        ([2, 0, 1, -1, 3], [0, 0, 0, 3, 3], [0]),
        ([-1, 2, 3, 4, 1], [0, 1, 1, 1, 1], [1]),  # a loop of four (a power of two)
        ([1, 0, 3, 2], [0, 0, 2, 2], [0, 2]),  # two loops
    ],
)
def test_loops_are_broken_at_their_earliest_call(
    parent: list[int], root: list[int], broken: list[int]
) -> None:
    trees = resolve_call_trees(np.array(parent))
    assert trees.root.tolist() == root
    assert np.flatnonzero(trees.loop_broken).tolist() == broken


def test_a_run_has_its_calls_depth_cost_duration_and_success() -> None:
    runs = runs_of(
        call("e0"),
        call("e1", "e0"),
        call("e2", "e1", latency_ms=5_000, status="error"),
        call("e3", "e0", cost_usd=0.5),
    )
    assert len(runs) == 1
    run = runs.loc["e0"]
    assert (run["calls"], run["depth"], run["cost_usd"]) == (4, 3, 3.5)
    assert run["duration_ms"] == 2_000 + 5_000  # e2 starts 2 s after e0 and lasts 5 s
    assert not run["success"] and run["failed_calls"] == 1
    assert not (run["orphan"] or run["cycle"] or run["spans_days"])


def test_unpriced_calls_are_counted_not_passed_off_as_zero() -> None:
    built = workflow_runs(
        frame(
            call("e0"),
            call("e1", "e0", cost_usd=0.0, pricing_status="unknown_model"),
            call("e2", workflow_id=None, cost_usd=0.0, pricing_status="invalid_usage"),
        ),
        DAY,
    )
    assert built.runs["unpriced_calls"].tolist() == [1]
    assert built.outside_unpriced_calls == 1


def test_an_orphan_is_its_own_root_and_flagged() -> None:
    runs = runs_of(call("e0"), call("e1", "gone"), call("e2", "e1"))
    assert runs.loc["e1", "orphan"] and runs.loc["e1", "calls"] == 2
    assert not runs.loc["e0", "orphan"]


def test_a_parent_of_another_tenant_is_missing() -> None:
    runs = runs_of(call("e0"), call("e1", "e0", tenant_id="other"))
    assert set(runs.index) == {"e0", "e1"}
    assert runs.loc["e1", "orphan"] and runs.loc["e1", "tenant_id"] == "other"


def test_a_run_past_midnight_continues_as_a_flagged_row() -> None:
    rows = (call("e5", "late"), call("e6", "e5"), call("e7", "gone"))
    assert missing_parents(frame(*rows)).to_dict("records") == [
        {"tenant_id": "acme", "event_id": "late"},
        {"tenant_id": "acme", "event_id": "gone"},
    ]
    earlier = pd.DataFrame({"tenant_id": ["acme"], "event_id": ["late"]})
    runs = runs_of(*rows, earlier=earlier)
    assert runs.loc["e5", "spans_days"] and not runs.loc["e5", "orphan"]
    assert runs.loc["e5", "calls"] == 2
    assert runs.loc["e7", "orphan"] and not runs.loc["e7", "spans_days"]


def test_a_loop_is_one_run_rooted_at_its_earliest_call() -> None:
    runs = runs_of(call("e3", "e1"), call("e1", "e2"), call("e2", "e3"), call("e4", "e4"))
    assert runs.loc["e1", "cycle"] and runs.loc["e1", "calls"] == 3
    assert runs.loc["e1", "depth"] == 3
    assert runs.loc["e4", "cycle"] and runs.loc["e4", "calls"] == 1


def test_a_loop_of_simultaneous_calls_breaks_at_the_smallest_id_in_any_input_order() -> None:
    rows = [call("e9", "e7", occurred_at=T0), call("e7", "e8", occurred_at=T0)]
    rows.append(call("e8", "e9", occurred_at=T0))
    for ordered in (rows, rows[::-1]):
        runs = runs_of(*ordered)
        assert runs.index.tolist() == ["e7"] and runs.loc["e7", "cycle"]


def test_lone_calls_are_outside_runs_and_everything_adds_up() -> None:
    built = workflow_runs(
        frame(
            call("e0", workflow_id=None),  # lone: no workflow, no parent, no child
            call("e1", workflow_id=None),  # a parent without a workflow id: a run
            call("e2", "e1", workflow_id=None),
            call("e3"),  # a single call with a workflow id: a run
        ),
        DAY,
    )
    assert built.runs["root_event_id"].tolist() == ["e1", "e3"]
    assert built.runs["workflow_id"].isna().tolist() == [True, False]
    assert (built.outside_calls, built.outside_cost_usd) == (1, 1.0)


def test_the_workflow_id_falls_back_to_one_logged_in_the_run() -> None:
    runs = runs_of(call("e0", workflow_id=None), call("e1", "e0", workflow_id="wf9"))
    assert runs.loc["e0", "workflow_id"] == "wf9"


def test_no_calls_no_runs() -> None:
    none = frame(call("e0")).iloc[:0]
    built = workflow_runs(none, DAY)
    assert built.runs.empty and built.outside_calls == 0
    assert end_user_costs(none, DAY).empty and agent_costs(none, DAY).empty


@st.composite
def call_days(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(min_value=1, max_value=40))
    rows = []
    for i in range(n):
        link = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=n + 3)))
        rows.append(
            call(
                f"e{i}",
                None if link is None else f"e{link}",  # e{n}.. are missing parents
                tenant_id=draw(st.sampled_from(["acme", "pronto"])),
                workflow_id=draw(st.sampled_from([None, "wf1", "wf2"])),
                cost_usd=draw(st.floats(min_value=0, max_value=50, allow_nan=False)),
                pricing_status=draw(st.sampled_from(["priced", "priced", "unknown_model"])),
                status=draw(st.sampled_from(["ok", "error", None])),
                latency_ms=draw(st.one_of(st.none(), st.integers(min_value=0, max_value=10**6))),
            )
        )
    return frame(*rows)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=call_days())
def test_every_call_is_in_one_run_or_outside_and_costs_add_up(calls: pd.DataFrame) -> None:
    built = workflow_runs(calls, DAY)
    runs = built.runs
    assert runs["root_event_id"].is_unique
    assert int(runs["calls"].sum()) + built.outside_calls == len(calls)
    assert float(runs["cost_usd"].sum()) + built.outside_cost_usd == pytest.approx(
        calls["cost_usd"].sum(), abs=1e-6
    )
    unpriced = int((calls["pricing_status"] == "unknown_model").sum())
    assert int(runs["unpriced_calls"].sum()) + built.outside_unpriced_calls == unpriced
    assert (runs["depth"] >= 1).all() and (runs["depth"] <= runs["calls"]).all()
    assert (runs["duration_ms"] >= 0).all()
    for rollup in (end_user_costs(calls, DAY), agent_costs(calls, DAY)):
        assert int(rollup["calls"].sum()) == len(calls)
        assert float(rollup["cost_usd"].sum()) == pytest.approx(calls["cost_usd"].sum(), abs=1e-6)
        assert int(rollup["unpriced_calls"].sum()) == unpriced


# -- end users and agents ---------------------------------------------------------------------


def test_end_users_keep_calls_without_a_user() -> None:
    users = end_user_costs(
        frame(
            call("e0"),
            call("e1", user_id="u2", cost_usd=0.0, pricing_status="unknown_model"),
            call("e2", user_id=None),
        ),
        DAY,
    ).set_index("user_id", drop=False)
    assert len(users) == 3 and users["user_id"].isna().sum() == 1
    assert users.loc["u2", "unpriced_calls"] == 1 and users.loc["u2", "cost_usd"] == 0
    assert users.loc["u1", ["input_tokens", "output_tokens"]].tolist() == [100, 10]


def test_agent_figures_count_priced_calls_only() -> None:
    agents = agent_costs(
        frame(
            call("e0", cost_usd=2.0, input_tokens=1_000, cache_read_tokens=600, latency_ms=100),
            call("e1", cost_usd=2.0, status="error", latency_ms=300),
            call("e2", cost_usd=0.0, pricing_status="unknown_model", latency_ms=1_000),
            call("e3", agent_id="coder", latency_ms=None),
        ),
        DAY,
    ).set_index("agent_id")
    support = agents.loc["support"]
    assert (support["calls"], support["successful_calls"], support["unpriced_calls"]) == (3, 2, 1)
    # $4 over the one successful priced call: the failed call's cost is part of the price.
    assert support["cost_per_successful_call_usd"] == 4.0
    assert support["tokens_per_usd"] == pytest.approx((1_010 + 110) / 4.0)
    assert support["cache_hit_share"] == pytest.approx(600 / 1_200)
    assert support["latency_p50_ms"] == 300 and support["latency_p95_ms"] == pytest.approx(930)
    assert np.isnan(agents.loc["coder", "latency_p50_ms"])


def test_an_agent_with_only_unpriced_calls_has_no_per_dollar_figures() -> None:
    [agent] = agent_costs(
        frame(call("e0", cost_usd=0.0, pricing_status="unknown_model")), DAY
    ).to_dict("records")
    assert agent["unpriced_calls"] == 1
    assert pd.isna(agent["cost_per_successful_call_usd"]) and pd.isna(agent["tokens_per_usd"])


# -- unit economics per agent -----------------------------------------------------------------


def test_period_windows_follow_each_tenants_time_zone() -> None:
    config = parse_config(RAW_CONFIG)
    windows = period_windows(config, ["nyc", "acme", "stranger"], [date(2026, 10, 1)])
    assert windows[("nyc", "2026-09")][1] == datetime(2026, 10, 1, 4, tzinfo=UTC)
    assert windows[("nyc", "2026-10")][0] == datetime(2026, 10, 1, 4, tzinfo=UTC)
    assert set(windows) == {("nyc", "2026-09"), ("nyc", "2026-10"), ("acme", "2026-10"),
                            ("stranger", "2026-10")}  # fmt: skip


def test_revenue_is_shared_by_calls_and_missing_revenue_stays_null() -> None:
    usage = pd.DataFrame(
        {
            "tenant_id": ["pronto", "pronto", "stranger"],
            "period": ["2026-09"] * 3,
            "agent_id": ["cheap", "pricey", "x"],
            "calls": [3, 1, 5],
            "unpriced_calls": [0, 1, 0],
            "cost_usd": [10.0, 150.0, 1.0],
        }
    )
    now = datetime(2026, 9, 20, tzinfo=UTC)
    econ = agent_unit_economics(usage, {("pronto", "2026-09"): 400.0}, computed_at=now)
    econ = econ.set_index("agent_id")
    assert econ.loc["cheap", "revenue_usd"] == 300.0 and econ.loc["pricey", "revenue_usd"] == 100
    assert econ.loc["pricey", "gross_margin_usd"] == -50.0
    assert econ.loc["cheap", "margin_pct"] == pytest.approx(96.67)
    assert econ.loc[["cheap", "pricey"], "tenant_revenue_usd"].tolist() == [400.0, 400.0]
    assert pd.isna(econ.loc["x", "revenue_usd"]) and pd.isna(econ.loc["x", "gross_margin_usd"])
    assert econ.loc["x", "call_share"] == 1.0
