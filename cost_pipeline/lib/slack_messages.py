"""Slack Block Kit messages people can act on: budget, anomaly, run-failure alerts and digests.

Every builder returns `(text, blocks)`: `text` is the notification / screen-reader fallback,
`blocks` stay within Slack's limits (header <= 150 chars, section text <= 3000, <= 10 fields of
<= 2000, context <= 10 elements, <= 50 blocks per message).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import pandas as pd

from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.periods import COMPANY

HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
MAX_BLOCKS = 50

KIND_TITLES = {
    "budget_threshold": "Budget {ref}% reached",
    "forecast_breach": "Forecast to exceed budget",
    "daily_limit": "Daily budget reached on {ref}",
    "anomaly": "Unusual spend",
    "run_failure": "Pipeline run failed",
}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def usd(value: Any) -> str:
    if value is None or pd.isna(value):
        return "n/a"
    return f"${float(value):,.2f}"


def asset_url(ui_url: str, asset: str, partition: str | None = None) -> str:
    """Link to an asset (and partition) in the Dagster UI."""
    url = f"{ui_url.rstrip('/')}/assets/{quote(asset)}"
    return f"{url}?partition={quote(partition)}" if partition else url


def _header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": clip(text, HEADER_MAX)}}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_MAX)}}


def _fields(pairs: list[tuple[str, str]]) -> dict:
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": clip(f"*{k}*\n{v}", FIELD_MAX)} for k, v in pairs[:10]
        ],
    }


def _context(items: list[str]) -> dict:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": clip(t, FIELD_MAX)} for t in items[:10]],
    }


def _drivers(top_drivers: Any) -> str:
    try:
        drivers = json.loads(top_drivers) if isinstance(top_drivers, str) else top_drivers or []
    except ValueError:
        drivers = []
    if not isinstance(drivers, list):  # a missing value (NaN) of a row without drivers
        drivers = []
    if not drivers:
        return "_no cost drivers recorded_"
    return "\n".join(f"• {d['driver']}: {usd(d['cost_usd'])}" for d in drivers[:3])


def budget_message(
    status: Mapping[str, Any],
    *,
    kind: str,
    ref: str,
    tenant_name: str,
    ui_url: str,
) -> tuple[str, list[dict]]:
    """A budget threshold or forecast-breach alert from one `budget_status` row."""
    title = KIND_TITLES[kind].format(ref=ref)
    pct = status.get("utilization_pct")
    pct_text = "n/a" if pct is None or pd.isna(pct) else f"{float(pct):.1f}%"
    limit_kind = {"budget": "budget", "hard_cap": "tier hard cap", "included": "included usage"}
    limit_name = limit_kind.get(str(status.get("limit_kind")), "limit")
    if _node_name(status):  # a node of the budget hierarchy: its budget, maybe rolled over
        rollover = status.get("rollover_usd")
        carried = rollover is not None and not pd.isna(rollover) and float(rollover) > 0
        limit_name = f"budget (incl. {usd(rollover)} rolled over)" if carried else "budget"
    breach = status.get("projected_breach_date")
    breach_text = "not projected" if breach is None or pd.isna(breach) else str(breach)
    # A tier allowance or cap that counts LLM usage only is measured on the LLM part.
    counted = status.get("counted_spend_usd")
    spent = status["spend_usd"] if counted is None or pd.isna(counted) else counted
    on_llm = status.get("allowance_counts") == "llm" and status.get("limit_kind") in (
        "hard_cap",
        "included",
    )
    spent_text = f"{usd(spent)} of LLM usage" if on_llm else usd(spent)
    text = (
        f"{title}: {tenant_name} has spent {spent_text} of "
        f"{usd(status.get('limit_usd'))} {limit_name} ({pct_text}) in {status['period']}"
    )
    if kind == "daily_limit":
        daily_pct = status.get("daily_utilization_pct")
        daily_text = "n/a" if daily_pct is None or pd.isna(daily_pct) else f"{daily_pct:.1f}%"
        text = (
            f"{title}: {tenant_name} spent {usd(status.get('day_spend_usd'))} on {ref} (UTC "
            f"day) against a daily budget of {usd(status.get('budget_daily_usd'))} "
            f"({daily_text}); {spent_text} of {usd(status.get('limit_usd'))} {limit_name} "
            f"in {status['period']} so far"
        )
    asset = "budget_node_status" if _node_name(status) else "budget_status"
    link = asset_url(ui_url, asset, str(status["day"]))
    blocks = [
        _header(f"{title} — {tenant_name}"),
        _fields(
            [
                (
                    ("LLM spend vs " if on_llm else "Spend vs ") + limit_name,
                    f"{usd(spent)} / {usd(status.get('limit_usd'))} ({pct_text})",
                ),
                ("Period", f"{status['period']} ({status.get('timezone', 'UTC')})"),
                (
                    "Forecast month end",
                    f"{usd(status.get('forecast_month_end_usd'))} "
                    f"({status.get('forecast_source') or 'n/a'})",
                ),
                ("Projected breach", breach_text),
                ("Status", str(status.get("status", "n/a"))),
            ]
        ),
        _section("*Top drivers*\n" + _drivers(status.get("top_drivers"))),
        _context(
            [
                f"<{link}|{asset} {status['day']} in Dagster>",
                f"tenant `{status['tenant_id']}`",
            ]
        ),
    ]
    return clip(text, SECTION_MAX), blocks


def anomaly_message(
    anomaly: Mapping[str, Any], *, tenant_name: str, ui_url: str
) -> tuple[str, list[dict]]:
    """An alert for one high / critical row of `anomaly_scores`."""
    severity = str(anomaly.get("severity", "high"))
    day = str(anomaly.get("day"))
    reason = str(anomaly.get("reason") or "spend far from its usual level")
    text = f"{severity.upper()} spend anomaly for {tenant_name} on {day}: {reason}"
    score = anomaly.get("score")
    blocks = [
        _header(f"Unusual spend ({severity}) — {tenant_name}"),
        _fields(
            [
                ("Day", day),
                ("Score", "n/a" if score is None or pd.isna(score) else f"{float(score):.2f}"),
                ("Cost that day", usd(anomaly.get("cost_usd"))),
                ("Expected", usd(anomaly.get("expected_usd"))),
            ]
        ),
        _section(f"*Why*\n{reason}"),
        _context(
            [
                f"<{asset_url(ui_url, 'anomaly_scores', day)}|anomaly_scores {day} in Dagster>",
                f"tenant `{anomaly.get('tenant_id')}`",
            ]
        ),
    ]
    return clip(text, SECTION_MAX), blocks


def run_failure_message(
    *, job_name: str, run_id: str, error: str, ui_url: str
) -> tuple[str, list[dict]]:
    """An alert for a failed run of the pipeline itself (no tenant data in it)."""
    link = f"{ui_url.rstrip('/')}/runs/{run_id}"
    text = f"Run of {job_name} failed: {clip(error, 300)}"
    blocks = [
        _header(f"Pipeline run failed — {job_name}"),
        _section(f"```{clip(error, SECTION_MAX - 6)}```"),
        _context([f"<{link}|run {run_id[:8]} in Dagster>"]),
    ]
    return text, blocks


def digest_message(alerts: pd.DataFrame, *, title: str = "Cost alerts") -> tuple[str, list[dict]]:
    """One message summarizing many outbox rows (their `text`), within Slack's block limits."""
    n = len(alerts)
    lines = [f"• {clip(str(t), 400)}" for t in alerts["text"]]
    sections: list[str] = []
    current = ""
    for line in lines:
        if len(current) + len(line) + 1 > SECTION_MAX:
            sections.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        sections.append(current)
    room = MAX_BLOCKS - 2
    shown = sections[:room]
    blocks = [_header(f"{title}: {n} alerts"), *(_section(s) for s in shown)]
    hidden = sum(s.count("\n") + 1 for s in sections[room:])
    kinds = alerts["kind"].value_counts().to_dict() if "kind" in alerts else {}
    summary = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(kinds.items()))
    blocks.append(_context([summary or f"{n} alerts"] + ([f"and {hidden} more"] if hidden else [])))
    return f"{title}: {n} alerts ({summary})", blocks


def channel_for(config: CostConfig, tenant_id: str) -> str:
    """A tenant's (or budget node's) own channel if it has one, else the default alert channel."""
    tenant = config.tenants_by_id.get(tenant_id)
    node = None if tenant else config.budget_node(tenant_id)
    own = tenant.slack_channel if tenant else (node.slack_channel if node else None)
    return own or config.alerts.default_channel


def _node_name(row: Mapping[str, Any]) -> str | None:
    """The name of a budget node's row (`budget_node_status`); None for a tenant's row."""
    kind, name = row.get("node_kind"), row.get("name")
    if not isinstance(kind, str) or not kind:
        return None
    return name if isinstance(name, str) and name else str(row.get("tenant_id"))


def _name(config: CostConfig, tenant_id: str) -> str:
    tenant = config.tenants_by_id.get(tenant_id)
    return tenant.name if tenant else ("the company" if tenant_id == COMPANY else tenant_id)


def budget_alerts(status: pd.DataFrame, facts: pd.DataFrame, config: CostConfig) -> pd.DataFrame:
    """Outbox rows (see `outbox.enqueue`) for budget `facts` (tenant_id, period, kind, ref),
    each message built from the matching `budget_status` row."""
    rows = facts.merge(status, on=["tenant_id", "period"], how="inner")
    out = []
    for row in rows.to_dict("records"):
        text, blocks = budget_message(
            row,
            kind=row["kind"],
            ref=str(row["ref"]),
            # A budget node's row names it (`budget_node_status.name`); a tenant's does not.
            tenant_name=_node_name(row) or _name(config, row["tenant_id"]),
            ui_url=config.alerts.dagster_ui_url,
        )
        out.append(_alert(row, config, text, blocks))
    return pd.DataFrame(out, columns=ALERT_COLUMNS)


def anomaly_alerts(anomalies: pd.DataFrame, config: CostConfig) -> pd.DataFrame:
    """Outbox rows for `anomaly_scores` rows; one alert per tenant, driver and episode start."""
    out = []
    for row in anomalies.to_dict("records"):
        since = row.get("since_day")
        start = since if since is not None and not pd.isna(since) else row["day"]
        row = {**row, "cost_usd": row.get("actual_usd")}
        text, blocks = anomaly_message(
            row, tenant_name=_name(config, row["tenant_id"]), ui_url=config.alerts.dagster_ui_url
        )
        fact = {
            **row,
            "period": str(start)[:7],
            "kind": "anomaly",
            # The sensor names the episode (one per tenant and start); else driver and start.
            "ref": row.get("ref") or f"{row.get('driver', 'tenant')}@{start}",
        }
        out.append(_alert(fact, config, text, blocks))
    return pd.DataFrame(out, columns=ALERT_COLUMNS)


ALERT_COLUMNS = ["tenant_id", "period", "kind", "ref", "day", "channel", "text", "blocks"]


def _alert(row: Mapping[str, Any], config: CostConfig, text: str, blocks: list[dict]) -> dict:
    return {
        "tenant_id": row["tenant_id"],
        "period": row["period"],
        "kind": row["kind"],
        "ref": str(row["ref"]),
        "day": row.get("day"),
        "channel": channel_for(config, row["tenant_id"]),
        "text": text,
        "blocks": json.dumps(blocks, ensure_ascii=False),
    }
