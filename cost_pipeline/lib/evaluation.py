"""Measuring the analytics against labelled data: alert precision/recall, forecast MAPE.

Definitions used by `make eval` (and written here so a reviewer can check them):

- Acceptance: the *messages* production sends (`alert_messages`): of each day's high and
  critical rows, one per tenant and start (the largest impact speaks), none for a start within
  `outbox.EPISODE_DAYS` of one already alerted — `anomaly_alert_sensor` and the outbox, replayed
  day by day. A message is true when its anomaly (start to the day sent) overlaps an incident of
  its tenant (start to end + 1 day). Recall is over the *alertable* incidents: those whose dollar
  impact reaches the tenant's alert threshold (`incident_thresholds`, the same
  `anomaly.impact_threshold` the scorer applies); missing one below it is not a miss.
- Diagnostic (`detector_metrics`): an *alert* is a tenant-day whose rows (total or any driver)
  of the detector reach `min_severity`. It is a true alert when an incident of that tenant
  covers the day (start to end, plus `grace_days` after the end while the baseline still
  remembers it), else a false alarm.
- An incident is *detected* when at least one true alert falls in its span. Recall and F1 are
  computed on incidents whose measured size (peak daily cost of the driver during the incident /
  its median daily cost over the 28 days before) is at least `min_size`; precision on all alerts.
- False alarms per tenant-quarter = false alarms / (tenant-days scored / 91).
- Forecast MAPE: mean over tenant-months of |projection - actual month total| / actual, for
  months with an actual total of at least `min_month_usd` ($1: the acceptance metric); coverage:
  share of those months whose actual lies in the 80 % interval. The same figures for
  `min_month_usd=50` ("material" tenant-months) are reported beside it as a diagnostic only.
- Oracle forecast (when the scenario provides `oracle_usd`): spend to date + the tenant's TRUE
  expected cost of the remaining days from the generator's parameters, without the incidents
  still to come. No forecaster can expect to beat it, so its MAPE is the noise floor.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from cost_pipeline.lib.anomaly import RANK, AnomalyParams, impact_threshold
from cost_pipeline.lib.outbox import ANOMALY_KIND, EPISODE_PREFIX, new_episodes
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.lib.pricing import PRICED, UNPRICED_STATUSES

SUMMARY_KEYS = ["day", "tenant_id", "cost_category", "provider", "model_or_service", "agent_id"]


def summarize_events(priced: pd.DataFrame) -> pd.DataFrame:
    """Priced LLM interactions aggregated into the `daily_cost_summary` shape."""
    frame = priced.assign(
        cost_category="llm",
        model_or_service=priced["model"],
        requests=1,
        unpriced_requests=priced.get("pricing_status", pd.Series(PRICED, index=priced.index))
        .isin(UNPRICED_STATUSES)
        .astype(int),
    )
    frame["agent_id"] = frame["agent_id"].fillna("(none)")
    sums = ["requests", "input_tokens", "output_tokens", "cost_usd", "unpriced_requests"]
    return frame.groupby(SUMMARY_KEYS, as_index=False, dropna=False)[sums].sum()


def driver_series(daily: pd.DataFrame, tenant: str, driver: str) -> pd.Series:
    """Daily cost of one incident driver (`tenant`, `agent:<id>`, `model:<id>`)."""
    rows = daily[daily["tenant_id"] == tenant]
    kind, _, name = driver.partition(":")
    if kind == "agent":
        rows = rows[rows["agent_id"] == name]
    elif kind == "model":
        rows = rows[rows["model_or_service"] == name]
    return rows.groupby("day")["cost_usd"].sum()


def incident_sizes(daily: pd.DataFrame, incidents: list[dict]) -> list[float]:
    """Measured size of each incident: peak driver cost in its span / usual (28-day median)."""
    sizes = []
    for inc in incidents:
        series = driver_series(daily, inc["tenant_id"], inc["driver"])
        start, end = inc["start_day"], inc["end_day"]
        before = [series.get(start - timedelta(days=k), 0.0) for k in range(1, 29)]
        during = [series.get(start + timedelta(days=k), 0.0) for k in range((end - start).days + 1)]
        usual = float(np.median(before))
        sizes.append(max(during) / usual if usual > 0 else float("inf"))
    return sizes


def detector_metrics(
    alerts: pd.DataFrame,
    incidents: list[dict],
    sizes: list[float],
    *,
    tenant_days: int,
    min_size: float = 3.0,
    grace_days: int = 1,
    earlier_incidents: list[dict] | tuple = (),
) -> dict[str, float]:
    """Precision, recall, F1 and false alarms per tenant-quarter of one detector's alerts.

    `alerts` has one row per alerting tenant-day (`tenant_id`, `day`); incidents must all lie
    within the scored days. `earlier_incidents` started before the first scored day but may
    still run into it: an alert on one of their days is not a false alarm, and they do not
    count for recall.
    """

    def frame(items: list[dict] | tuple) -> pd.DataFrame:
        # Typed even when empty, so that merging no incidents matches nothing.
        return pd.DataFrame(
            {
                "tenant_id": pd.Series([i["tenant_id"] for i in items], dtype=object),
                "start": pd.Series([i["start_day"] for i in items], dtype=object),
                "end": pd.Series(
                    [i["end_day"] + timedelta(days=grace_days) for i in items], dtype=object
                ),
            }
        )

    spans = frame(incidents).assign(size=list(sizes))
    alerts = alerts[["tenant_id", "day"]].drop_duplicates()
    joined = alerts.reset_index().merge(spans.reset_index(names="inc"), on="tenant_id")
    hit = joined[(joined["day"] >= joined["start"]) & (joined["day"] <= joined["end"])]
    earlier = alerts.reset_index().merge(frame(earlier_incidents), on="tenant_id")
    earlier = earlier[(earlier["day"] >= earlier["start"]) & (earlier["day"] <= earlier["end"])]
    true_alerts = len(set(hit["index"]) | set(earlier["index"]))
    false_alarms = len(alerts) - true_alerts
    big = spans["size"] >= min_size
    detected = spans.index.isin(hit["inc"].unique())
    first_day = hit[hit["day"] == hit["start"]]["inc"].unique()
    recall = float(detected[big].mean()) if big.any() else float("nan")
    precision = true_alerts / len(alerts) if len(alerts) else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "alerts": len(alerts),
        "incidents": int(big.sum()),
        "detected": int(detected[big].sum()),
        "detected_first_day": int(np.isin(spans.index[big], first_day).sum()),
        "recall_all_sizes": float(detected.mean()) if len(spans) else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarms": false_alarms,
        "tenant_quarters": tenant_days / 91,
        "false_alarms_per_tenant_quarter": false_alarms / max(tenant_days / 91, 1e-9),
    }


def alert_messages(scores: pd.DataFrame, *, min_severity: str = "high") -> pd.DataFrame:
    """The anomaly messages production sends for these `anomaly_scores` rows, replaying
    `anomaly_alert_sensor` and the outbox day after day as the daily schedule runs them.

    Each day: rows of `min_severity` or above (company rows excluded); their start is `since_day`
    (the day itself without one); of a tenant's rows with the same start, the one with the
    largest |impact| speaks; a start already alerted, or within `EPISODE_DAYS` of one already
    alerted for the tenant (`outbox.new_episodes`), sends nothing. One row per message:
    `tenant_id`, `day` (sent), `start`, `driver`, `kind`, `severity`, `impact_usd`.
    """
    columns = ["tenant_id", "day", "start", "driver", "kind", "severity", "impact_usd"]
    rows = scores[
        (scores["severity"].map(RANK) >= RANK[min_severity]) & (scores["tenant_id"] != COMPANY)
    ]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(
        start=rows["since_day"].where(rows["since_day"].notna(), rows["day"]),
        size_=rows["impact_usd"].abs().fillna(0.0),
    )
    rows = rows.assign(kind_=ANOMALY_KIND, ref=EPISODE_PREFIX + rows["start"].astype(str))
    alerted = pd.DataFrame(columns=["tenant_id", "kind", "ref"])
    known: set[tuple[str, str]] = set()
    sent = []
    for _, today in rows.groupby("day", sort=True):
        facts = today.sort_values("size_", ascending=False).drop_duplicates(["tenant_id", "start"])
        facts = facts[
            [(t, r) not in known for t, r in zip(facts["tenant_id"], facts["ref"], strict=True)]
        ]
        facts = facts[new_episodes(facts.assign(kind=facts["kind_"]), alerted)]
        if facts.empty:
            continue
        known |= set(zip(facts["tenant_id"], facts["ref"], strict=True))
        new = facts[["tenant_id", "kind_", "ref"]].rename(columns={"kind_": "kind"})
        alerted = pd.concat([alerted, new], ignore_index=True)
        sent.append(facts[columns])
    return pd.concat(sent, ignore_index=True) if sent else pd.DataFrame(columns=columns)


def incident_thresholds(
    daily: pd.DataFrame,
    incidents: list[dict],
    *,
    budgets: dict[str, float | None] | None = None,
    params: AnomalyParams | None = None,
) -> list[float]:
    """The alert impact threshold (USD) production applies to each incident's tenant: of its
    monthly budget, or without one of 30 x its mean daily total over the 28 days before the
    incident (see `anomaly.impact_threshold`)."""
    budgets = budgets or {}
    params = params or AnomalyParams()
    totals = daily.groupby(["tenant_id", "day"])["cost_usd"].sum()
    out = []
    for inc in incidents:
        month = budgets.get(inc["tenant_id"])
        if month is None:
            tenant = totals.get(inc["tenant_id"], pd.Series(dtype=float))
            before = [inc["start_day"] - timedelta(days=k) for k in range(1, 29)]
            month = 30.0 * float(tenant.reindex(before, fill_value=0.0).mean())
        out.append(float(impact_threshold(month, params)))
    return out


def estimated_impact(daily: pd.DataFrame, incident: dict) -> float:
    """Extra USD of an incident's driver over its span above its median day of the 28 before,
    for labels that do not carry their true `impact_usd`."""
    series = driver_series(daily, incident["tenant_id"], incident["driver"])
    start, end = incident["start_day"], incident["end_day"]
    usual = float(np.median([series.get(start - timedelta(days=k), 0.0) for k in range(1, 29)]))
    span = [start + timedelta(days=k) for k in range((end - start).days + 1)]
    return float(sum(series.get(d, 0.0) - usual for d in span))


def message_metrics(
    messages: pd.DataFrame,
    incidents: list[dict],
    alertable: list[bool],
    *,
    tenant_days: int,
    grace_days: int = 1,
    earlier_incidents: list[dict] | tuple = (),
) -> dict[str, float]:
    """Precision, recall and F1 of the messages production sends (`alert_messages`).

    A message is true when its anomaly, from its start to the day it was sent, overlaps an
    incident of its tenant (start to end + `grace_days`), of `incidents` or `earlier_incidents`
    (those that began before the first scored day); otherwise it is a false alarm. An incident
    is detected when a message overlaps it. Recall counts the `alertable` incidents only: those
    whose dollar impact reaches the alert threshold — one below it is, by the product's
    definition, not an incident to alert on, so missing it is not a miss.
    """
    spans = pd.DataFrame(
        {
            "tenant_id": pd.Series(
                [i["tenant_id"] for i in [*incidents, *earlier_incidents]], dtype=object
            ),
            "start": pd.Series(
                [i["start_day"] for i in [*incidents, *earlier_incidents]], dtype=object
            ),
            "end": pd.Series(
                [
                    i["end_day"] + timedelta(days=grace_days)
                    for i in [*incidents, *earlier_incidents]
                ],
                dtype=object,
            ),
        }
    )
    msgs = messages[["tenant_id", "day", "start"]].reset_index(drop=True)
    joined = msgs.reset_index(names="msg").merge(spans.reset_index(names="inc"), on="tenant_id")
    hit = joined[(joined["start_x"] <= joined["end"]) & (joined["day"] >= joined["start_y"])]
    true_msgs = hit["msg"].nunique()
    detected = np.isin(np.arange(len(incidents)), hit["inc"].unique())
    ok = np.asarray(alertable, dtype=bool)
    precision = true_msgs / len(msgs) if len(msgs) else float("nan")
    recall = float(detected[ok].mean()) if ok.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    false_alarms = len(msgs) - true_msgs
    return {
        "messages": len(msgs),
        "incidents": len(incidents),
        "alertable": int(ok.sum()),
        "detected": int(detected[ok].sum()),
        "detected_below_threshold": int(detected[~ok].sum()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarms": false_alarms,
        "tenant_quarters": tenant_days / 91,
        "false_alarms_per_tenant_quarter": false_alarms / max(tenant_days / 91, 1e-9),
    }


def alerts_of(scores: pd.DataFrame, detector: str, min_severity: str = "high") -> pd.DataFrame:
    """Alerting tenant-days of one detector view of `anomaly_scores` rows.

    `total`: the tenant-total row (robust); `drivers`: agent/model rows; `multivariate`: tenant
    rows raised by the multivariate view (its own flag level); `combined`: any row.
    """
    level = scores["severity"].map(RANK)
    if detector == "total":
        rows = scores[(scores["driver"] == "tenant") & scores["detector"].str.contains("robust")]
    elif detector == "drivers":
        rows = scores[scores["driver"] != "tenant"]
    elif detector == "multivariate":
        rows = scores[scores["detector"].fillna("").str.contains("multivariate")]
        return rows[["tenant_id", "day"]].drop_duplicates()
    else:
        rows = scores
    rows = rows[level.loc[rows.index] >= RANK[min_severity]]
    return rows[["tenant_id", "day"]].drop_duplicates()


def month_totals(daily: pd.DataFrame) -> pd.DataFrame:
    """Actual spend per tenant (and `__company__`) and month (first day of the month)."""
    frame = daily.assign(month=[d.replace(day=1) for d in daily["day"]])
    per = frame.groupby(["tenant_id", "month"], as_index=False)["cost_usd"].sum()
    company = per.groupby("month", as_index=False)["cost_usd"].sum().assign(tenant_id="__company__")
    return pd.concat([per, company], ignore_index=True).rename(columns={"cost_usd": "actual_usd"})


def forecast_metrics(forecasts: pd.DataFrame, *, min_month_usd: float = 1.0) -> pd.DataFrame:
    """Per as-of day of month (7, 14, 21): MAPE of the forecast, of the naive run-rate and (with
    an `oracle_usd` column) of the oracle, and 80 % / 95 % interval coverage, over tenant-months
    with an actual total of at least `min_month_usd`. `forecasts` are `cost_forecasts` rows with
    `actual_usd`."""
    f = forecasts
    f = f[(f["actual_usd"] >= min_month_usd) & (f["tenant_id"] != "__company__")]
    err = (f["forecast_usd"] - f["actual_usd"]).abs() / f["actual_usd"]
    naive = (f["naive_run_rate_usd"] - f["actual_usd"]).abs() / f["actual_usd"]
    oracle = (
        (f["oracle_usd"] - f["actual_usd"]).abs() / f["actual_usd"]
        if "oracle_usd" in f
        else pd.Series(np.nan, index=f.index)
    )
    f = f.assign(
        err=err,
        naive_err=naive,
        oracle_err=oracle,
        in80=(f["actual_usd"] >= f["lower_80_usd"]) & (f["actual_usd"] <= f["upper_80_usd"]),
        in95=(f["actual_usd"] >= f["lower_95_usd"]) & (f["actual_usd"] <= f["upper_95_usd"]),
    )
    out = f.groupby("days_elapsed").agg(
        tenant_months=("err", "size"),
        mape_pct=("err", "mean"),
        naive_mape_pct=("naive_err", "mean"),
        oracle_mape_pct=("oracle_err", "mean"),
        median_ape_pct=("err", "median"),
        coverage_80_pct=("in80", "mean"),
        coverage_95_pct=("in95", "mean"),
    )
    pct = ("mape_pct", "naive_mape_pct", "oracle_mape_pct", "median_ape_pct")
    for c in (*pct, "coverage_80_pct", "coverage_95_pct"):
        out[c] = out[c] * 100
    out["improvement_pct"] = (1 - out["mape_pct"] / out["naive_mape_pct"]) * 100
    out["oracle_improvement_pct"] = (1 - out["oracle_mape_pct"] / out["naive_mape_pct"]) * 100
    return out


def months_in(start: date, days: int, *, min_history_days: int) -> list[date]:
    """First days of the whole months within the range that have enough history before them."""
    end = start + timedelta(days=days - 1)
    first = (start + timedelta(days=min_history_days)).replace(day=1)
    months = []
    m = first if first >= start + timedelta(days=min_history_days) else _next_month(first)
    while _next_month(m) - timedelta(days=1) <= end:
        months.append(m)
        m = _next_month(m)
    return months


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)
