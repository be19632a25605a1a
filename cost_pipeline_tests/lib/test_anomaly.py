"""Protects anomaly scoring: robust weekday baselines, drivers, reasons, new tenants, zero spend."""

from __future__ import annotations

import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from cost_pipeline.lib.anomaly import RANK, AnomalyParams, episode_speakers, score_days

DAY = date(2026, 6, 17)  # a Wednesday
WEEKLY = np.array([1.2, 1.2, 1.2, 1.2, 1.2, 0.4, 0.4])
DAYS = 120


def _frame(agents: dict[str, np.ndarray], end: date = DAY, tenant: str = "t1") -> pd.DataFrame:
    rows = []
    for agent, series in agents.items():
        for i, v in enumerate(series):
            day = end - timedelta(days=len(series) - 1 - i)
            if v:
                rows.append(
                    {
                        "day": day,
                        "tenant_id": tenant,
                        "cost_category": "llm",
                        "model_or_service": "gpt-4o" if agent == "a" else "gpt-4o-mini",
                        "agent_id": agent,
                        "requests": int(v * 100),
                        "input_tokens": int(v * 90_000),
                        "output_tokens": int(v * 20_000),
                        "cost_usd": float(v),
                    }
                )
    return pd.DataFrame(rows)


def _series(level: float, seed: int = 0, days: int = DAYS, end: date = DAY) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dows = np.array([(end - timedelta(days=days - 1 - i)).weekday() for i in range(days)])
    return level * WEEKLY[dows] * rng.lognormal(0, 0.08, days)


def _score(daily: pd.DataFrame, day: date = DAY, **kw) -> pd.DataFrame:
    return score_days(daily, [day], **kw).set_index("driver")


def test_normal_day_is_not_flagged() -> None:
    out = _score(_frame({"a": _series(20), "b": _series(5, seed=1)}))
    assert set(out.index) == {"tenant", "agent:a", "agent:b", "model:gpt-4o", "model:gpt-4o-mini"}
    assert (out["severity"] == "none").all()
    assert out.loc["tenant", "ratio"] == pytest.approx(1.0, abs=0.25)


def test_runaway_agent_is_flagged_with_an_actionable_reason() -> None:
    a, b = _series(20), _series(5, seed=1)
    a[-2:] *= 6  # since yesterday
    out = _score(_frame({"a": a, "b": b}))
    agent = out.loc["agent:a"]
    assert agent["severity"] == "critical"
    assert agent["ratio"] == pytest.approx(6, rel=0.25)
    assert agent["since_day"] == DAY - timedelta(days=1)
    assert "agent:a" in agent["reason"] and "usual" in agent["reason"]
    assert str(DAY - timedelta(days=1)) in agent["reason"]
    assert out.loc["agent:b", "severity"] == "none"
    assert RANK[out.loc["tenant", "severity"]] >= RANK["high"]
    assert "largest driver agent:a" in out.loc["tenant", "reason"]


def test_weekday_seasonality_is_respected() -> None:
    saturday = DAY + timedelta(days=3)
    series = _series(20, days=DAYS + 3, end=saturday)
    assert (_score(_frame({"a": series}, saturday), saturday)["severity"] == "none").all()
    # A Saturday at weekday level is 3x the usual Saturday.
    series[-1] = 20 * 1.2
    out = _score(_frame({"a": series}, saturday), saturday)
    assert out.loc["agent:a", "ratio"] == pytest.approx(3, rel=0.2)
    assert out.loc["agent:a", "severity"] in ("high", "critical")


def test_baseline_is_not_inflated_by_earlier_spikes() -> None:
    series = _series(20)
    series[-8] *= 10  # last week's Wednesday incident, same weekday
    series[-3] *= 10
    series[-1] *= 3
    out = _score(_frame({"a": series}))
    assert out.loc["agent:a", "expected_usd"] == pytest.approx(24, rel=0.15)
    assert RANK[out.loc["agent:a", "severity"]] >= RANK["high"]


def test_new_tenant_is_not_flagged_for_being_new() -> None:
    new = np.zeros(DAYS)
    new[-5:] = [2, 3, 40, 60, 80]  # ramping up fast in its first week
    out = _score(_frame({"a": new}))
    assert (out["severity"] == "none").all()
    assert out.loc["tenant", "reason"].startswith("not enough history")


def test_zero_spend_tenant_and_listed_tenant_without_rows() -> None:
    out = score_days(_frame({"a": _series(20)}), [DAY], tenants=["t1", "ghost"])
    ghost = out[out["tenant_id"] == "ghost"]
    assert list(ghost["driver"]) == ["tenant"]
    assert ghost["severity"].iloc[0] == "none" and ghost["actual_usd"].iloc[0] == 0
    empty = score_days(pd.DataFrame(), [DAY], tenants=["x"])
    assert list(empty["severity"]) == ["none"]


def test_step_change_is_flagged_at_first_then_becomes_usual() -> None:
    end = DAY + timedelta(days=28)
    series = _series(20, days=DAYS + 28, end=end)
    series[DAYS - 1 :] *= 4  # a permanent step up starting on DAY
    days = [DAY, DAY + timedelta(days=3), end]
    out = score_days(_frame({"a": series}, end), days)
    agent = out[out["driver"] == "agent:a"].set_index("day")["severity"]
    assert agent[DAY] in ("high", "critical")
    assert (
        out[out["driver"] == "agent:a"].set_index("day").loc[DAY + timedelta(days=3), "since_day"]
        == DAY
    )
    assert agent[end] == "none"


def test_small_driver_excess_below_tenant_share_is_not_flagged() -> None:
    big, tiny = _series(100), _series(0.2, seed=2)
    tiny[-1] *= 8  # 8x, but +$1.7 on a $120/day tenant
    out = _score(_frame({"a": big, "b": tiny}))
    assert out.loc["agent:b", "severity"] == "none"
    # With a lower share and no materiality floor beyond $1 it is flagged.
    strict_params = AnomalyParams(min_excess_share=0.005, min_impact_share=0.0)
    strict = _score(_frame({"a": big, "b": tiny}), params=strict_params)
    assert strict.loc["agent:b", "severity"] == "critical"


def test_alert_inside_an_incident_that_began_before_scoring_is_not_a_false_alarm() -> None:
    from cost_pipeline.lib.evaluation import detector_metrics

    first = DAY
    earlier = {"tenant_id": "t1", "start_day": first - timedelta(days=1), "end_day": first}
    inside = {
        "tenant_id": "t1",
        "start_day": first + timedelta(days=5),
        "end_day": first + timedelta(days=5),
    }
    alerts = pd.DataFrame(
        {
            "tenant_id": ["t1", "t1", "t1"],
            "day": [first, first + timedelta(days=5), first + timedelta(days=9)],
        }
    )
    plain = detector_metrics(alerts, [inside], [4.0], tenant_days=91)
    fair = detector_metrics(alerts, [inside], [4.0], tenant_days=91, earlier_incidents=[earlier])
    assert plain["false_alarms"] == 2 and fair["false_alarms"] == 1
    assert fair["recall"] == plain["recall"] == 1.0 and fair["incidents"] == 1


def _infra_tenant(kind: str, mult: float, at: int = 90, length: int = 1, n: int = 100):
    """A cloud-only or Kubernetes-only tenant (requests = 0) with one part multiplied."""
    from cost_pipeline.lib.anomaly import infra_detail

    start = date(2026, 1, 1)
    rng = np.random.default_rng(1)
    days = [start + timedelta(days=i) for i in range(n)]
    parts = {"a": 200.0, "b": 100.0}
    cloud, k8s, summary = [], [], []
    for i, d in enumerate(days):
        for name, level in parts.items():
            cost = (
                level
                * rng.lognormal(0, 0.05)
                * (mult if name == "a" and at <= i < at + length else 1)
            )
            row = {"day": d, "tenant_id": "infra", "cost": cost}
            if kind == "cloud":
                cloud.append(
                    {
                        **row,
                        "service_name": f"svc-{name}",
                        "sub_account_id": "acct",
                        "region": "us-east-1",
                        "effective_cost": cost,
                    }
                )
            else:
                k8s.append({**row, "namespace": f"ns-{name}", "total_cost": cost})
            summary.append(
                {
                    "day": d,
                    "tenant_id": "infra",
                    "cost_category": kind,
                    "provider": "AWS" if kind == "cloud" else "Kubernetes",
                    "model_or_service": "Compute" if kind == "cloud" else "prod-1",
                    "agent_id": None,
                    "requests": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost_usd": cost,
                }
            )
    detail = infra_detail(
        pd.DataFrame(cloud) if cloud else None, pd.DataFrame(k8s) if k8s else None
    )
    return pd.DataFrame(summary), detail, days


@pytest.mark.parametrize(
    ("kind", "mult", "driver"), [("cloud", 6.0, "service:svc-a"), ("k8s", 10.0, "namespace:ns-a")]
)
def test_cloud_and_kubernetes_spikes_alert_and_name_their_driver(kind, mult, driver) -> None:
    daily, detail, days = _infra_tenant(kind, mult)
    scores = score_days(daily, [days[90]], detail=detail)
    flagged = scores[scores["severity"].map(RANK) >= RANK["high"]]
    assert "tenant" in set(flagged["driver"]) and driver in set(flagged["driver"])
    row = flagged.set_index("driver").loc[driver]
    assert row["impact_usd"] > 0 and row["since_day"] == days[90]
    assert driver in flagged.set_index("driver").loc["tenant", "reason"]
    quiet = score_days(daily, [days[80]], detail=detail)
    assert (quiet["severity"] == "none").all()


def test_sustained_step_and_drop_are_reported_with_impact() -> None:
    for mult, kind in ((1.6, "step"), (0.4, "drop")):
        daily, detail, days = _infra_tenant("cloud", mult, at=85, length=100)
        scores = score_days(daily, [days[92]], detail=detail)
        total = scores.set_index("driver").loc["tenant"]
        assert total["kind"] == kind and RANK[total["severity"]] >= RANK["high"]
        assert total["since_day"] == days[85]
        assert np.sign(total["impact_usd"]) == np.sign(mult - 1)


def test_alert_needs_the_minimum_dollar_impact() -> None:
    daily, detail, days = _infra_tenant("cloud", 6.0)
    params = AnomalyParams(min_impact_usd=10_000.0)
    scores = score_days(daily, [days[90]], detail=detail, params=params)
    assert not (scores["severity"].map(RANK) >= RANK["high"]).any()
    assert (scores["severity"] == "low").any()


def test_a_range_scores_each_day_as_it_would_alone() -> None:
    """A backfill scores a month in one pass: each day must equal that day scored alone, with a
    driver that appears later absent from the earlier days and calls counted in each day's own
    window (an agent that starts mid-range, one whose calls stop, a spike)."""
    a, b = _series(20), _series(5, seed=1)
    late = np.zeros(DAYS)
    late[-5:] = 8.0  # a new agent on the last five days
    b[-20:] = 0.0  # an agent that goes quiet
    a[-10:-7] *= 5
    daily = _frame({"a": a, "b": b, "late": late})
    days = [DAY - timedelta(days=i) for i in range(14, -1, -1)]
    ranged = score_days(daily, days).set_index(["day", "driver"]).sort_index()
    for day in days:
        alone = score_days(daily[daily["day"] <= day], [day]).set_index(["day", "driver"])
        pd.testing.assert_frame_equal(ranged.loc[[day]], alone.sort_index(), check_like=True)


@pytest.mark.parametrize(
    ("kind", "mult", "driver"), [("cloud", 6.0, "service:svc-a"), ("k8s", 10.0, "namespace:ns-a")]
)
def test_the_alert_sent_for_an_infra_spike_names_the_service_or_namespace(
    kind, mult, driver
) -> None:
    """The alert sensor sends one message per tenant and start: the most specific of the rows
    with a large dollar impact, here the service or namespace itself. Every other flagged row
    (the tenant, `category:Compute`, `cluster:prod-1`, `provider:`) names it in its reason."""
    daily, detail, days = _infra_tenant(kind, mult)
    scores = score_days(daily, [days[90]], detail=detail, budgets={"infra": 9000.0})
    alerts = scores[scores["severity"].map(RANK) >= RANK["high"]]
    assert driver in set(alerts["driver"])
    assert alerts["impact_usd"].min() >= 0.01 * 9000.0  # the budget share sets the minimum
    for row in alerts.itertuples():
        assert driver in row.reason, row.reason
    sent = episode_speakers(alerts, ["tenant_id", "since_day"])
    assert len(sent) == 1
    assert sent["driver"].iloc[0] == driver and sent["since_day"].iloc[0] == days[90]


def test_a_step_needs_a_week_of_persistence_and_the_data_start_is_no_step() -> None:
    daily, detail, days = _infra_tenant("cloud", 1.6, at=85, length=100)
    # Three days into a 1.6x rise: not yet a step (nor a spike: 1.6x is no spike).
    early = score_days(daily, [days[87]], detail=detail)
    assert not (early["severity"].map(RANK) >= RANK["high"]).any()
    # A week in: alerted once, from its start.
    late = score_days(daily, [days[91], days[92]], detail=detail)
    total = late[late["driver"] == "tenant"].set_index("day")
    assert (total["kind"] == "step").all() and (total["since_day"] == days[85]).all()
    # The first weeks of data (days before it are missing, not zero) hold no shift.
    first = score_days(daily, days[30:50], detail=detail)
    assert first["kind"].isna().all()


@pytest.mark.parametrize("q", [0.5, 0.85, 0.9])
def test_nanquantile0_equals_numpy(q: float) -> None:
    """The one-sort quantile the baselines use equals numpy's, NaNs, zeros and empty columns
    included."""
    from cost_pipeline.lib.changepoints import nanquantile0

    rng = np.random.default_rng(4)
    a = rng.lognormal(size=(28, 60, 7))
    a[rng.random(a.shape) < 0.3] = np.nan
    a[rng.random(a.shape) < 0.1] = 0.0
    a[:, 0, 0] = np.nan  # a column without any value
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanquantile(a, q, axis=0)
    np.testing.assert_allclose(nanquantile0(a, q), expected, rtol=0, atol=1e-12)


def _calls_frame(
    drivers: dict[str, tuple[np.ndarray, np.ndarray]], end: date = DAY, tenant: str = "t1"
) -> pd.DataFrame:
    """Rows of agents given as (calls per day, cost per call per day)."""
    rows = []
    for agent, (calls, per_call) in drivers.items():
        for i, (n, c) in enumerate(zip(calls, per_call, strict=True)):
            if n:
                rows.append(
                    {
                        "day": end - timedelta(days=len(calls) - 1 - i),
                        "tenant_id": tenant,
                        "cost_category": "llm",
                        "provider": "openai",
                        "model_or_service": f"model-{agent}",
                        "agent_id": agent,
                        "requests": int(n),
                        "input_tokens": int(n) * 1000,
                        "output_tokens": int(n) * 100,
                        "cost_usd": float(n * c),
                    }
                )
    return pd.DataFrame(rows)


def _steady(calls: float, per_call: float, days: int = DAYS) -> tuple[np.ndarray, np.ndarray]:
    wobble = 1 + 0.1 * np.sin(np.arange(days))
    return np.full(days, calls), per_call * wobble


def test_quiet_days_of_a_driver_with_few_calls_are_not_a_drop() -> None:
    # Two calls a day; over the last nine days five happen to be quiet. Its median day is $0,
    # but nine days with 8 calls where 18 were usual is Poisson noise, not a drop.
    calls, per_call = _steady(2, 0.8)
    calls[-9:] = [0, 2, 0, 0, 2, 0, 2, 0, 2]
    out = _score(_calls_frame({"a": _steady(200, 0.1), "b": (calls, per_call)}))
    assert out.loc["agent:b", "severity"] == "none"
    # The same driver falling silent for the nine days is a drop.
    calls[-9:] = 0
    out = _score(_calls_frame({"a": _steady(200, 0.1), "b": (calls, per_call)}))
    assert out.loc["agent:b", "kind"] == "drop"
    assert RANK[out.loc["agent:b", "severity"]] >= RANK["high"]
    assert out.loc["agent:b", "impact_usd"] < 0


def test_a_step_in_cost_per_call_with_steady_calls_is_a_step() -> None:
    # Prompts grew (or the agent moved to a dearer model): as many calls, each twice the cost.
    calls, per_call = _steady(30, 0.1)
    per_call[-9:] *= 2
    out = _score(_calls_frame({"a": _steady(200, 0.1), "b": (calls, per_call)}))
    assert out.loc["agent:b", "kind"] == "step"
    assert RANK[out.loc["agent:b", "severity"]] >= RANK["high"]
    assert "agent:b rose to" in out.loc["agent:b", "reason"]
    assert out.loc["agent:b", "impact_usd"] > 0


def test_a_spike_in_calls_is_flagged_on_a_heavy_tailed_series() -> None:
    # Daily cost per call is heavy-tailed (ordinary days reach 4x), so cost alone would need
    # more than 8x; the calls are 7x theirs, far past their own Poisson noise.
    rng = np.random.default_rng(5)
    calls = rng.poisson(50, DAYS).astype(float)
    per_call = 0.05 * rng.lognormal(0, 0.9, DAYS)
    calls[-1], per_call[-1] = 350, 0.05
    out = _score(_calls_frame({"a": (calls, per_call)}))
    assert out.loc["agent:a", "severity"] in ("high", "critical")
    # A day of expensive calls at the usual count is still the series' tail, not a spike.
    calls[-1], per_call[-1] = 50, 0.05 * 7
    out = _score(_calls_frame({"a": (calls, per_call)}))
    assert out.loc["agent:a", "severity"] in ("none", "low", "medium")


def test_the_usual_month_behind_the_impact_threshold_is_not_the_weekday() -> None:
    sunday = DAY + timedelta(days=4)
    big = _series(100, days=DAYS + 4, end=sunday)
    small = _series(5, seed=1, days=DAYS + 4, end=sunday)
    small[-1] += 20  # +$20 on a Sunday: 1 % of 30 usual Sundays, not of 30 usual days
    out = _score(_frame({"a": big, "b": small}, sunday), sunday)
    assert out.loc["agent:b", "severity"] == "low"
    # About 1 % of 30 x the usual ~$100 day; of 30 usual Sundays (~$43) it would be ~$13.
    reason = out.loc["agent:b", "reason"]
    threshold = float(re.match(r"below the alert impact of \$([\d.]+):", reason).group(1))
    assert 25 < threshold < 35
    # With a budget, the threshold is its share.
    out = _score(_frame({"a": big, "b": small}, sunday), sunday, budgets={"t1": 1000.0})
    assert out.loc["agent:b", "severity"] == "critical"


def test_a_level_shift_z_counts_the_uncertainty_of_the_level_before() -> None:
    from cost_pipeline.lib.changepoints import ShiftParams, level_shift

    days = 84
    dows = np.arange(days) % 7
    weekly = np.array([1.1, 0.9, 1.0, 1.1, 0.9, 1.0, 1.0])
    series = 10 * weekly[dows]
    series[-10:] *= 1.5
    r = level_shift(series[None, :], dows, ShiftParams(min_days_after=7, min_z=5.0))
    assert r["days"][0] == 10 and r["ratio"][0] == pytest.approx(1.5)
    # Noise at its floor (5 %); the medians of 10 days after and 28 before.
    se = 0.05 * np.sqrt(np.pi / 2 * (1 / 10 + 1 / 28))
    assert r["z"][0] == pytest.approx(np.log(1.5) / se)


@pytest.mark.parametrize(
    ("rate", "factor", "moved"),
    [
        (2.0, 1.0, False),
        (2.0, 0.5, False),
        (2.0, 0.0, True),
        (200.0, 1.0, False),
        (200.0, 0.7, True),
    ],
)
def test_count_shift_tests_calls_against_their_poisson_noise(
    rate: float, factor: float, moved: bool
) -> None:
    from cost_pipeline.lib.changepoints import ShiftParams, count_shift

    days = 70
    rng = np.random.default_rng(3)
    calls = rng.poisson(rate, (20, days)).astype(float)
    calls[:, -10:] = rng.poisson(rate * factor, (20, 10))
    starts = np.full((20, 1), days - 10)
    ratio, z = count_shift(calls, starts, np.array([days - 1]), np.arange(days) % 7, ShiftParams())
    assert np.median(ratio[:, 0]) == pytest.approx(factor, abs=0.3 if rate < 10 else 0.05)
    assert (np.abs(z[:, 0]) >= 5).all() if moved else (np.abs(z[:, 0]) < 5).all()


def test_the_most_specific_large_driver_speaks_for_an_episode():
    """A namespace that makes most of its cluster's jump is named first; a small service is
    not, however specific; the tenant total speaks only when nothing else is large."""
    scores = pd.DataFrame(
        {
            "tenant_id": ["t"] * 4 + ["u"],
            "start": ["2026-11-23"] * 4 + ["2026-11-20"],
            "driver": [
                "tenant",
                "cluster:prod-1",
                "namespace:tenant-t",
                "service:Amazon S3",
                "tenant",
            ],
            "impact_usd": [45.1, 45.8, 34.6, 4.0, -120.0],
        }
    )
    speakers = episode_speakers(scores, ["tenant_id", "start"])
    assert list(speakers.columns) == list(scores.columns)
    assert dict(zip(speakers["tenant_id"], speakers["driver"], strict=True)) == {
        "t": "namespace:tenant-t",
        "u": "tenant",
    }


def test_drivers_name_what_each_summary_row_is() -> None:
    """Unattributed provider usage is a driver by its model, called unattributed (not a cloud
    service category); k8s rows are clusters, cloud rows service categories."""
    from cost_pipeline.lib.anomaly import driver_panel

    daily = pd.DataFrame(
        {
            "day": [DAY] * 4,
            "tenant_id": ["t"] * 4,
            "cost_category": ["llm", "unattributed", "k8s", "cloud"],
            "model_or_service": ["gpt-4.1", "claude-sonnet-4-5", "prod-1", "Compute"],
            "agent_id": ["bot", None, None, None],
            "provider": ["openai", "anthropic", None, "aws"],
            "cost_usd": [1.0, 2.0, 3.0, 4.0],
        }
    )
    drivers = set(driver_panel(daily, [DAY]).index.get_level_values("driver"))
    assert {
        "tenant",
        "agent:bot",
        "model:gpt-4.1",
        "unattributed:claude-sonnet-4-5",
        "cluster:prod-1",
        "category:Compute",
    } <= drivers
    assert not any(d.startswith("category:claude") for d in drivers)
