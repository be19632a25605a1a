"""Protects the anomaly evaluation: it counts the messages production sends, not scored rows."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from cost_pipeline.lib.evaluation import (
    alert_messages,
    estimated_impact,
    incident_thresholds,
    message_metrics,
)
from cost_pipeline.lib.periods import COMPANY

D0 = date(2026, 6, 1)


def _row(day: int, tenant: str, driver: str, since: int | None, impact: float, sev="high"):
    return {
        "day": D0 + timedelta(days=day),
        "tenant_id": tenant,
        "driver": driver,
        "severity": sev,
        "kind": "spike",
        "impact_usd": impact,
        "since_day": None if since is None else D0 + timedelta(days=since),
    }


def _scores(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_one_message_per_episode_as_the_sensor_sends_them() -> None:
    scores = _scores(
        [
            # Day 0: two drivers of t1 from the same start: the larger impact speaks.
            _row(0, "t1", "agent:a", 0, 5.0),
            _row(0, "t1", "tenant", 0, 9.0),
            # Still alerting on days 1-3: the same episode, nothing new.
            *[_row(d, "t1", "tenant", 0, 9.0 + d) for d in (1, 2, 3)],
            # A step whose estimated start moved by a few days: the same episode.
            _row(9, "t1", "agent:b", 4, -20.0),
            # Ten days after the first: a new episode.
            _row(10, "t1", "agent:a", 10, 3.0),
            # Not alerts: low severity, the company row.
            _row(0, "t2", "tenant", 0, 50.0, sev="low"),
            _row(0, COMPANY, "tenant", 0, 50.0),
            # No since_day: the day itself is the start.
            _row(5, "t2", "tenant", None, 4.0, sev="critical"),
        ]
    )
    sent = alert_messages(scores)
    got = sorted(zip(sent["tenant_id"], sent["start"], sent["driver"], strict=True))
    assert got == [
        ("t1", D0, "tenant"),
        ("t1", D0 + timedelta(days=10), "agent:a"),
        ("t2", D0 + timedelta(days=5), "tenant"),
    ]
    assert sent.set_index("start").loc[D0, "impact_usd"] == 9.0
    assert alert_messages(scores.iloc[:0]).empty


def _incident(tenant: str, start: int, end: int, impact: float = 100.0) -> dict:
    return {
        "tenant_id": tenant,
        "start_day": D0 + timedelta(days=start),
        "end_day": D0 + timedelta(days=end),
        "impact_usd": impact,
    }


def _messages(items: list[tuple[str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenant_id": [t for t, _, _ in items],
            "start": [D0 + timedelta(days=s) for _, s, _ in items],
            "day": [D0 + timedelta(days=d) for _, _, d in items],
        }
    )


def test_message_metrics_count_messages_and_skip_sub_threshold_incidents() -> None:
    incidents = [
        _incident("t1", 10, 11),  # alerted on its second day
        _incident("t1", 30, 40),  # a step alerted a week in: its start is inside
        _incident("t2", 10, 10),  # missed
        _incident("t3", 20, 20, impact=0.4),  # below the threshold: not alertable
    ]
    messages = _messages(
        [
            ("t1", 11, 11),
            ("t1", 30, 37),
            ("t2", 50, 50),  # false alarm, one message however many days it lasted
            ("t4", 60, 62),  # false alarm
            ("t5", 1, 3),  # inside an incident that began before scoring
        ]
    )
    earlier = [_incident("t5", -3, 2)]
    m = message_metrics(
        messages,
        incidents,
        [True, True, True, False],
        tenant_days=910,
        earlier_incidents=earlier,
    )
    assert (m["messages"], m["false_alarms"]) == (5, 2)
    assert (m["incidents"], m["alertable"], m["detected"]) == (4, 3, 2)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["false_alarms_per_tenant_quarter"] == pytest.approx(2 / 10)
    # The sub-threshold incident alerted would count as detected below the threshold.
    m2 = message_metrics(
        _messages([("t3", 20, 20)]), incidents, [True, True, True, False], tenant_days=91
    )
    assert m2["detected_below_threshold"] == 1 and m2["false_alarms"] == 0


def test_incident_threshold_is_the_budget_share_or_the_usual_month() -> None:
    days = [D0 - timedelta(days=k) for k in range(1, 40)]
    daily = pd.DataFrame({"day": days * 2, "tenant_id": ["a"] * 39 + ["b"] * 39})
    daily["cost_usd"] = [200.0] * 39 + [0.5] * 39
    incidents = [_incident("a", 0, 0), _incident("b", 0, 0), _incident("c", 0, 0)]
    got = incident_thresholds(daily, incidents, budgets={"c": 7500.0})
    # a: 1 % of 30 x $200; b: the $1 floor; c: 1 % of its budget.
    assert got == pytest.approx([60.0, 1.0, 75.0])


def test_estimated_impact_is_the_excess_over_the_usual_day() -> None:
    days = [D0 + timedelta(days=k) for k in range(-28, 3)]
    cost = [2.0] * 28 + [12.0, 7.0, 2.0]
    daily = pd.DataFrame({"day": days, "tenant_id": "t", "agent_id": "x", "cost_usd": cost})
    inc = {"tenant_id": "t", "driver": "agent:x", "start_day": D0, "end_day": D0 + timedelta(1)}
    assert estimated_impact(daily, inc) == pytest.approx(15.0)
