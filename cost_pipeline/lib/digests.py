"""Weekly and monthly cost digests, per tenant and for the company: what they say, and how.

A digest covers one ISO week (Monday..Sunday, UTC days) or one calendar month and tells: spend
against the previous period of the same kind, the budget status (the latest `budget_status` row
of the period's month), the latest month-end forecast, the top drivers (category and model or
service, with their change), the period's anomalies (medium and above) and, when
`cost_recommendations` exists, its largest savings. A tenant's digest holds that tenant's rows
only; the company's (`periods.COMPANY`) adds the top tenants.

`digest_rows` turns digests into alert-outbox rows (kinds `weekly_digest` / `monthly_digest`,
period and ref the period's label, so each is unique per tenant and ISO week or month), each
carrying its chart (`lib.report_charts.spend_chart`) as an attachment, which email shows inline
(`lib.email_html`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

import pandas as pd

from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.display import cents, format_amount, format_change, to_decimal
from cost_pipeline.lib.outbox import Attachment, encode_attachments
from cost_pipeline.lib.periods import COMPANY
from cost_pipeline.lib.report_charts import spend_chart
from cost_pipeline.lib.slack_messages import ALERT_COLUMNS, channel_for, clip

DigestKind = Literal["weekly", "monthly"]
KINDS: tuple[DigestKind, ...] = ("weekly", "monthly")
SEVERITY_RANK = {"medium": 2, "high": 3, "critical": 4}
SECTION_MAX = 3000
# Columns a `cost_recommendations` table may name its text and its saving with (another part of
# the pipeline builds it; read defensively).
RECOMMENDATION_TEXT = ("title", "recommendation", "summary", "description", "action", "reason")
RECOMMENDATION_SAVING = (
    "monthly_saving_usd",
    "estimated_monthly_saving_usd",
    "saving_usd",
    "estimated_savings_usd",
    "savings_usd",
    "impact_usd",
)


@dataclass(frozen=True)
class DigestPeriod:
    """One ISO week or calendar month of UTC days, `start..end` inclusive."""

    kind: DigestKind
    start: date
    end: date

    @property
    def label(self) -> str:
        if self.kind == "weekly":
            year, week, _ = self.start.isocalendar()
            return f"{year}-W{week:02d}"
        return f"{self.start:%Y-%m}"

    @property
    def alert_kind(self) -> str:
        return f"{self.kind}_digest"

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def previous(self) -> DigestPeriod:
        return period_containing(self.kind, self.start - timedelta(days=1))


def period_containing(kind: DigestKind, day: date) -> DigestPeriod:
    if kind == "weekly":
        start = day - timedelta(days=day.weekday())
        return DigestPeriod(kind, start, start + timedelta(days=6))
    start = day.replace(day=1)
    end = (pd.Timestamp(start) + pd.offsets.MonthEnd(0)).date()
    return DigestPeriod(kind, start, end)


def last_complete_period(kind: DigestKind, today: date) -> DigestPeriod:
    """The latest week or month that ended before `today` (a Monday run: last week)."""
    return period_containing(kind, today).previous()


def parse_period(kind: DigestKind, label: str) -> DigestPeriod:
    """`2026-W41` (weekly) or `2026-10` (monthly); raises ValueError naming the label."""
    try:
        if kind == "weekly":
            year, week = re.fullmatch(r"(\d{4})-W(\d{2})", label).groups()  # type: ignore[union-attr]
            return period_containing(kind, date.fromisocalendar(int(year), int(week), 1))
        return period_containing(kind, date.fromisoformat(f"{label}-01"))
    except (AttributeError, ValueError):
        form = "YYYY-Www" if kind == "weekly" else "YYYY-MM"
        raise ValueError(f"{kind} digest period {label!r}: expected {form}") from None


@dataclass(frozen=True)
class Digest:
    tenant_id: str
    name: str
    period: DigestPeriod
    currency: str
    spend: Decimal
    previous_spend: Decimal
    daily: pd.Series
    previous_daily: pd.Series
    budget: dict[str, Any] | None
    forecast: dict[str, Any] | None
    drivers: list[dict[str, Any]]
    anomalies: list[dict[str, Any]]
    recommendations: list[dict[str, Any]]
    tenants: list[dict[str, Any]] = field(default_factory=list)


def _driver(frame: pd.DataFrame) -> pd.Series:
    item = frame["model_or_service"].fillna("").astype(str)
    item = item.where(item != "", frame["provider"].fillna("other").astype(str))
    return frame["cost_category"].astype(str) + " · " + item


def _daily(rows: pd.DataFrame, period: DigestPeriod) -> pd.Series:
    by_day = rows.groupby("day")["cost_usd"].sum() if len(rows) else pd.Series(dtype=float)
    return by_day.reindex(period.days, fill_value=0.0).astype(float)


def _latest(rows: pd.DataFrame, as_of: date) -> dict[str, Any] | None:
    rows = rows[pd.to_datetime(rows["day"]).dt.date <= as_of]
    if rows.empty:
        return None
    return rows.sort_values("day").iloc[-1].to_dict()


def top_recommendations(
    recommendations: pd.DataFrame | None, tenant_id: str, n: int
) -> list[dict[str, Any]]:
    """The `n` largest savings of a `cost_recommendations` frame for `tenant_id` (the company:
    every tenant's), as {text, saving}; [] without the table or a column to show."""
    if recommendations is None or recommendations.empty:
        return []
    text = next((c for c in RECOMMENDATION_TEXT if c in recommendations), None)
    if text is None:
        return []
    rows = recommendations
    if tenant_id != COMPANY and "tenant_id" in rows:
        rows = rows[rows["tenant_id"] == tenant_id]
    saving = next((c for c in RECOMMENDATION_SAVING if c in rows), None)
    if saving is not None:
        rows = rows.assign(_s=pd.to_numeric(rows[saving], errors="coerce")).sort_values(
            "_s", ascending=False, na_position="last"
        )
    rows = rows.drop_duplicates(text).head(n)
    out = []
    for row in rows.to_dict("records"):
        value = row.get("_s")
        item = {"text": str(row[text]), "saving": None if pd.isna(value) else float(value)}
        if tenant_id == COMPANY and "tenant_id" in row:
            item["tenant_id"] = row["tenant_id"]
        out.append(item)
    return out


def build_digests(
    summary: pd.DataFrame,
    *,
    budget_status: pd.DataFrame,
    forecasts: pd.DataFrame,
    anomalies: pd.DataFrame,
    recommendations: pd.DataFrame | None,
    config: CostConfig,
    period: DigestPeriod,
    as_of: date,
    tenant_ids: list[str] | None = None,
) -> list[Digest]:
    """One digest per configured tenant and one for the company (or those of `tenant_ids`).

    `summary` holds `daily_cost_summary` rows of the period and the previous one; status and
    forecasts are taken as of `as_of` (their latest day not after it); `anomalies` are the
    period's `anomaly_scores` rows."""
    top_n = config.reports.top_n
    previous = period.previous()
    summary = summary.assign(
        day=pd.to_datetime(summary["day"]).dt.date, cost_usd=summary["cost_usd"].astype(float)
    )
    summary = summary.assign(driver=_driver(summary))
    month_key = period.label if period.kind == "monthly" else f"{period.end:%Y-%m}"
    ids = [t.id for t in config.tenants] + [COMPANY]
    names = {t.id: t.name for t in config.tenants} | {COMPANY: config.organization}
    out = []
    for tenant in tenant_ids or ids:
        mine = summary if tenant == COMPANY else summary[summary["tenant_id"] == tenant]
        now = mine[mine["day"].between(period.start, period.end)]
        before = mine[mine["day"].between(previous.start, previous.end)]
        drivers = _drivers(now, before, top_n)
        status = budget_status[
            (budget_status["tenant_id"] == tenant) & (budget_status["period"] == month_key)
        ]
        flagged = anomalies[anomalies["severity"].isin(list(SEVERITY_RANK))]
        if tenant != COMPANY:
            flagged = flagged[flagged["tenant_id"] == tenant]
        out.append(
            Digest(
                tenant_id=tenant,
                name=names.get(tenant, tenant),
                period=period,
                currency=config.currency,
                spend=cents(sum((to_decimal(v) for v in now["cost_usd"]), Decimal(0))),
                previous_spend=cents(sum((to_decimal(v) for v in before["cost_usd"]), Decimal(0))),
                daily=_daily(now, period),
                previous_daily=_daily(before, previous),
                budget=_latest(status, as_of),
                forecast=_latest(forecasts[forecasts["tenant_id"] == tenant], as_of),
                drivers=drivers,
                anomalies=_anomalies(flagged, names, top_n),
                recommendations=top_recommendations(recommendations, tenant, top_n),
                tenants=_tenants(now, before, names, top_n) if tenant == COMPANY else [],
            )
        )
    return out


def _changes(now: pd.DataFrame, before: pd.DataFrame, key: str, n: int) -> pd.DataFrame:
    current = now.groupby(key)["cost_usd"].sum()
    prior = before.groupby(key)["cost_usd"].sum()
    both = pd.DataFrame({"cost": current, "previous": prior}).fillna(0.0)
    return both[both["cost"] != 0].sort_values("cost", ascending=False).head(n)


def _drivers(now: pd.DataFrame, before: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    return [
        {"driver": str(k), "cost": float(r.cost), "previous": float(r.previous)}
        for k, r in _changes(now, before, "driver", n).iterrows()
    ]


def _tenants(
    now: pd.DataFrame, before: pd.DataFrame, names: dict[str, str], n: int
) -> list[dict[str, Any]]:
    return [
        {
            "tenant_id": str(k),
            "name": names.get(str(k), str(k)),
            "cost": float(r.cost),
            "previous": float(r.previous),
        }
        for k, r in _changes(now, before, "tenant_id", n).iterrows()
    ]


def _anomalies(flagged: pd.DataFrame, names: dict[str, str], n: int) -> list[dict[str, Any]]:
    if flagged.empty:
        return []
    ranked = flagged.assign(
        _rank=flagged["severity"].map(SEVERITY_RANK),
        _impact=pd.to_numeric(flagged["impact_usd"], errors="coerce").abs().fillna(0.0),
    ).sort_values(["_rank", "_impact", "day"], ascending=[False, False, True])
    # One line per tenant and driver: the worst day of it.
    ranked = ranked.drop_duplicates(["tenant_id", "driver"]).head(n)
    return [
        {
            "day": pd.Timestamp(r["day"]).date(),
            "tenant_id": r["tenant_id"],
            "tenant": names.get(r["tenant_id"], r["tenant_id"]),
            "driver": r["driver"],
            "severity": r["severity"],
            "reason": r["reason"],
            "impact": None if pd.isna(r["impact_usd"]) else float(r["impact_usd"]),
        }
        for r in ranked.to_dict("records")
    ]


# -- the message --------------------------------------------------------------------------------


def _span(period: DigestPeriod) -> str:
    if period.kind == "monthly":
        return f"{period.start:%B %Y}"
    return f"{period.start:%b %d} – {period.end:%b %d, %Y}"


def _budget_text(budget: dict[str, Any] | None, currency: str) -> str:
    if budget is None:
        return "no budget status yet"
    limit = budget.get("limit_usd")
    if limit is None or pd.isna(limit):
        return f"{format_amount(budget.get('spend_usd'), currency)} spent, no budget set"
    pct = budget.get("utilization_pct")
    pct_text = "" if pct is None or pd.isna(pct) else f", {float(pct):.1f}% used"
    return (
        f"{format_amount(budget.get('spend_usd'), currency)} of "
        f"{format_amount(limit, currency)} ({budget.get('status', 'n/a')}{pct_text}) "
        f"in {budget.get('period')}"
    )


def _forecast_text(forecast: dict[str, Any] | None, currency: str) -> str:
    if forecast is None:
        return "no forecast yet"
    month = pd.Timestamp(forecast["month"]).strftime("%B")
    text = (
        f"{month}: {format_amount(forecast['forecast_usd'], currency)} "
        f"(80 %: {format_amount(forecast['lower_80_usd'], currency)}–"
        f"{format_amount(forecast['upper_80_usd'], currency)})"
    )
    budget = forecast.get("budget_usd")
    if budget is not None and not pd.isna(budget):
        text += f" vs budget {format_amount(budget, currency)}"
    return text


def _bullets(lines: list[str], empty: str) -> str:
    text = "\n".join(f"• {line}" for line in lines) or empty
    return clip(text, SECTION_MAX - 40)


def digest_message(digest: Digest) -> tuple[str, list[dict]]:
    """`(text, blocks)` of a digest, within Slack's limits (see `lib.slack_messages`)."""
    cur = digest.currency
    kind = "Weekly" if digest.period.kind == "weekly" else "Monthly"
    unit = "week" if digest.period.kind == "weekly" else "month"
    change = format_change(digest.spend, digest.previous_spend)
    spend = (
        f"{format_amount(digest.spend, cur)} ({change} vs "
        f"{format_amount(digest.previous_spend, cur)} the {unit} before)"
    )
    text = f"{kind} cost digest for {digest.name}, {digest.period.label}: {spend}"
    drivers = [
        f"{d['driver']}: {format_amount(d['cost'], cur)} "
        f"({format_change(d['cost'], d['previous'])})"
        for d in digest.drivers
    ]
    anomalies = [
        f"{a['day']:%b %d} — {a['severity'].upper()}"
        + (f" {a['tenant']}" if digest.tenant_id == COMPANY else "")
        + f" `{a['driver']}`: {clip(str(a['reason']), 300)}"
        for a in digest.anomalies
    ]
    blocks: list[dict] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": clip(f"{kind} cost digest — {digest.name} ({digest.period.label})", 150),
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": clip(f"*{k}*\n{v}", 2000)}
                for k, v in (
                    ("Spend", spend),
                    ("Period", _span(digest.period)),
                    ("Budget", _budget_text(digest.budget, cur)),
                    ("Forecast", _forecast_text(digest.forecast, cur)),
                )
            ],
        },
        _section("*Top drivers*\n" + _bullets(drivers, "_no spend in the period_")),
    ]
    if digest.tenant_id == COMPANY:
        tenants = [
            f"{t['name']}: {format_amount(t['cost'], cur)} "
            f"({format_change(t['cost'], t['previous'])})"
            for t in digest.tenants
        ]
        blocks.append(_section("*Top tenants*\n" + _bullets(tenants, "_none_")))
    blocks.append(_section("*Anomalies*\n" + _bullets(anomalies, "_none in the period_")))
    if digest.recommendations:
        recs = [
            str(r["text"])
            + (
                f" — saves about {format_amount(r['saving'], cur)} a month"
                if r.get("saving") is not None
                else ""
            )
            for r in digest.recommendations
        ]
        blocks.append(_section("*Recommendations*\n" + _bullets(recs, "_none_")))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"{digest.period.alert_kind} {digest.period.label}"},
                {"type": "mrkdwn", "text": f"tenant `{digest.tenant_id}`"},
                {"type": "mrkdwn", "text": "daily spend chart attached"},
            ],
        }
    )
    return clip(text, SECTION_MAX), blocks


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_MAX)}}


def digest_chart(digest: Digest) -> bytes:
    title = f"{digest.name}, {digest.period.label}: spend per day"
    return spend_chart(digest.daily, digest.previous_daily, title=title, currency=digest.currency)


def digest_rows(digests: list[Digest], config: CostConfig) -> pd.DataFrame:
    """Alert-outbox rows (`outbox.enqueue`, before routing) of the digests, each with its chart."""
    rows = []
    for d in digests:
        text, blocks = digest_message(d)
        chart = Attachment(
            filename=f"{d.period.alert_kind}_{d.tenant_id}_{d.period.label}.png",
            mime_type="image/png",
            data=digest_chart(d),
            title=f"{d.name} {d.period.label} daily spend",
        )
        rows.append(
            {
                "tenant_id": d.tenant_id,
                "period": d.period.label,
                "kind": d.period.alert_kind,
                "ref": d.period.label,
                "day": d.period.end,
                "channel": channel_for(config, d.tenant_id),
                "text": text,
                "blocks": json.dumps(blocks, ensure_ascii=False),
                "attachments": encode_attachments([chart]),
            }
        )
    return pd.DataFrame(rows, columns=[*ALERT_COLUMNS, "attachments"])
