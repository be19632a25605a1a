"""Protects one-day dips of a tenant's total, empty days, and drops that are over."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from cost_pipeline.lib.anomaly import RANK, AnomalyParams, score_days
from cost_pipeline_tests.benchmarks.evaluate_real import cloud_cost_rows
from cost_pipeline_tests.lib.test_anomaly import _infra_tenant

START = date(2026, 1, 1)


def _alerts(scores: pd.DataFrame) -> pd.DataFrame:
    return scores[scores["severity"].map(RANK) >= RANK["high"]]


def _cloud_tenant(total: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, list[date]]:
    """A cloud-only tenant with one service whose daily cost is `total` ($0 days have no rows)."""
    days = [START + timedelta(days=i) for i in range(len(total))]
    summary, detail = cloud_cost_rows("c1", days, total)
    return summary, detail, days


def test_a_one_day_fall_of_the_tenant_is_alerted_and_names_its_driver() -> None:
    # Service a ($200 of the usual $300) falls to a tenth for one day: the tenant is at 0.4x.
    daily, detail, days = _infra_tenant("cloud", 0.1)
    scores = score_days(daily, [days[89], days[90]], detail=detail)
    assert _alerts(scores[scores["day"] == days[89]]).empty
    alerts = _alerts(scores[scores["day"] == days[90]])
    # The tenant total dips; its drivers are not alerted on their own.
    assert list(alerts["driver"]) == ["tenant"]
    row = alerts.iloc[0]
    assert row["kind"] == "drop" and row["detector"] == "robust"
    assert row["since_day"] == days[90]
    assert -200 < row["impact_usd"] < -160
    assert "fell to 0.4" in row["reason"] and "largest driver service:svc-a" in row["reason"]
    assert f"{row['impact_usd']:+,.2f}" in row["reason"]


def test_a_shallow_or_immaterial_dip_is_not_alerted() -> None:
    # 0.73x of the usual day is no dip.
    daily, detail, days = _infra_tenant("cloud", 0.6)
    assert _alerts(score_days(daily, [days[90]], detail=detail)).empty
    # A dip below the alert impact is kept at low, with its reason.
    daily, detail, days = _infra_tenant("cloud", 0.1)
    params = AnomalyParams(min_impact_usd=10_000.0)
    tenant = score_days(daily, [days[90]], detail=detail, params=params).set_index("driver")
    assert tenant.loc["tenant", "severity"] == "low"
    assert tenant.loc["tenant", "reason"].startswith("below the alert impact of $10,000.00")


def test_a_day_without_any_cost_is_not_alerted_as_a_drop() -> None:
    total = 100 * np.random.default_rng(3).lognormal(0, 0.05, 100)
    total[90] = 0.0  # no rows at all: a late export looks the same
    daily, detail, days = _cloud_tenant(total)
    scores = score_days(daily, [days[90]], detail=detail)
    assert _alerts(scores).empty
    row = scores.set_index("driver").loc["tenant"]
    assert row["severity"] == "low" and row["kind"] == "drop"
    assert "may be missing" in row["reason"]
    # The same tenant at 0.3x that day is alerted.
    total[90] = 30.0
    daily, detail, days = _cloud_tenant(total)
    row = score_days(daily, [days[90]], detail=detail).set_index("driver").loc["tenant"]
    assert row["severity"] == "high" and "fell to 0.3" in row["reason"]


def test_a_tenant_whose_days_often_fall_that_low_has_no_dip() -> None:
    rng = np.random.default_rng(4)
    total = 100 * rng.lognormal(0, 0.05, 100)
    total[rng.random(100) < 0.2] *= 0.45  # a fifth of its days are at about 0.45x
    total[90] = 40.0
    daily, detail, days = _cloud_tenant(total)
    assert _alerts(score_days(daily, [days[90]], detail=detail)).empty
    # A steady tenant at 0.4x that day dips.
    steady = 100 * rng.lognormal(0, 0.05, 100)
    steady[90] = 40.0
    daily, detail, days = _cloud_tenant(steady)
    assert not _alerts(score_days(daily, [days[90]], detail=detail)).empty


def test_a_drop_that_is_over_is_no_longer_alerted() -> None:
    # A week at 0.47x (service a at a fifth), then back to the usual level.
    daily, detail, days = _infra_tenant("cloud", 0.2, at=80, length=7)
    scores = score_days(daily, days[80:92], detail=detail)
    tenant = scores[scores["driver"] == "tenant"].set_index("day")
    during = tenant.loc[days[80] : days[86]]
    assert (during["severity"].map(RANK) >= RANK["high"]).all()
    assert (during["kind"] == "drop").all() and (during["since_day"] == days[80]).all()
    # Day 7 of the fall is also a sustained drop (the level-shift test).
    assert tenant.loc[days[86], "detector"] == "level_shift"
    # Back at its level: no drop, even though the median since the start is still low.
    after = scores[scores["day"] >= days[87]]
    assert _alerts(after).empty, after.loc[after["severity"] != "none", "reason"].tolist()


def test_a_range_with_dips_scores_each_day_as_it_would_alone() -> None:
    daily, detail, days = _infra_tenant("cloud", 0.2, at=80, length=4)
    scored = days[78:88]
    ranged = score_days(daily, scored, detail=detail).set_index(["day", "driver"]).sort_index()
    for day in scored:
        # As the asset scores a day: its window up to the day, and the warehouse's newest
        # cloud day, which says whether the day's cloud rows have settled.
        alone = score_days(
            daily[daily["day"] <= day],
            [day],
            detail=detail[detail["day"] <= day],
            infra_through={"cloud": days[-1]},
        ).set_index(["day", "driver"])
        pd.testing.assert_frame_equal(ranged.loc[[day]], alone.sort_index(), check_like=True)


def test_a_credit_is_not_a_dip() -> None:
    total = 100 * np.random.default_rng(5).lognormal(0, 0.05, 100)
    daily, detail, days = _cloud_tenant(total)
    credit = daily.iloc[[90]].assign(model_or_service="Marketplace", cost_usd=-80.0)
    with_credit = pd.concat([daily, credit], ignore_index=True)
    scores = score_days(with_credit, [days[90]], detail=detail)
    assert _alerts(scores).empty
    # The same $80 less from usage is a dip.
    daily.loc[daily["day"] == days[90], "cost_usd"] -= 80.0
    assert not _alerts(score_days(daily, [days[90]], detail=detail)).empty


def test_a_dip_of_cloud_rows_still_arriving_waits_for_the_later_days() -> None:
    """FOCUS exports keep filling a day in for a few days: a dip on the newest day of cloud
    rows is kept at low until two later days have rows, then it is an alert."""
    total = 100 * np.random.default_rng(5).lognormal(0, 0.05, 100)
    total[97] = 30.0
    daily, detail, days = _cloud_tenant(total[:98])  # the dip is the newest day
    row = score_days(daily, [days[97]], detail=detail).set_index("driver").loc["tenant"]
    assert row["severity"] == "low" and row["kind"] == "drop"
    assert "may still be arriving" in row["reason"]
    # One later day is not enough; the warehouse's newest cloud day (infra_through) counts
    # when the scorer reads only the days up to the scored one.
    later = {"cloud": days[97] + timedelta(days=1)}
    row = score_days(daily, [days[97]], detail=detail, infra_through=later)
    assert row.set_index("driver").loc["tenant", "severity"] == "low"
    later = {"cloud": days[97] + timedelta(days=2)}
    row = score_days(daily, [days[97]], detail=detail, infra_through=later)
    assert row.set_index("driver").loc["tenant", "severity"] == "high"
    daily, detail, days = _cloud_tenant(total)
    row = score_days(daily, [days[97]], detail=detail).set_index("driver").loc["tenant"]
    assert row["severity"] == "high" and "fell to 0.3" in row["reason"]


def test_a_dip_of_kubernetes_rows_not_yet_answered_waits_as_cloud_rows_do() -> None:
    """Kubecost had not answered for the newest day: the tenant's LLM spend is there, its
    Kubernetes spend is not. The fall is held at low, naming the source, until two later days
    have Kubernetes rows."""
    rng = np.random.default_rng(11)
    n = 98
    days = [START + timedelta(days=i) for i in range(n)]
    rows = []
    for i, day in enumerate(days):
        llm = 40 * rng.lognormal(0, 0.05)
        rows.append(("llm", "openai", "gpt-4o", int(400 * llm / 40), llm, day))
        if i < n - 1:  # the newest day has no Kubernetes rows yet
            rows.append(("k8s", "Kubernetes", "prod-1", 0, 100 * rng.lognormal(0, 0.05), day))
    daily = pd.DataFrame(
        rows,
        columns=["cost_category", "provider", "model_or_service", "requests", "cost_usd", "day"],
    ).assign(tenant_id="t1", agent_id=None, input_tokens=0, output_tokens=0)
    row = score_days(daily, [days[-1]]).set_index("driver").loc["tenant"]
    assert row["severity"] == "low" and row["kind"] == "drop"
    assert "mostly in its k8s rows" in row["reason"]
    assert "Kubernetes allocations" in row["reason"]
    # Two later days with Kubernetes rows in the warehouse, and it still fell: an alert.
    later = {"k8s": days[-1] + timedelta(days=2)}
    row = score_days(daily, [days[-1]], infra_through=later).set_index("driver").loc["tenant"]
    assert row["severity"] == "high" and "fell to 0.2" in row["reason"]
