"""The weekly Slack digest of the top cost recommendations, and its one outbox row per ISO week.

The digest lists the largest open (new or open) recommendations of a day with their monthly
saving, current and projected cost and confidence; its fact key is
`<tenant_id>:<week>:recommendations_digest:<week>`, so the outbox sends a week's digest once.
"""

from __future__ import annotations

import json
from datetime import date

import pandas as pd

from cost_pipeline.lib.recommendations import ACTIVE, best_saving
from cost_pipeline.lib.repricing import CACHING, DEFERRAL, LONG_CONTEXT, SUBSTITUTION
from cost_pipeline.lib.slack_messages import asset_url, clip, usd

DIGEST_KIND = "recommendations_digest"
KIND_LABELS = {
    SUBSTITUTION: "cheaper model",
    CACHING: "prompt caching",
    DEFERRAL: "batch / flex",
    LONG_CONTEXT: "long-context tier",
}


def iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def digest_message(
    rows: pd.DataFrame,
    *,
    week: str,
    tenant_names: dict[str, str],
    ui_url: str,
    top: int,
) -> tuple[str, list[dict]]:
    """The weekly Slack digest (text, blocks) of the `top` largest open recommendations."""
    active = rows[rows["status"].isin(ACTIVE)].sort_values(
        "saving_monthly_usd", ascending=False, kind="stable"
    )
    shown = active.head(top)
    total = best_saving(rows)
    day = str(active["day"].iloc[0]) if len(active) else ""
    lines = []
    for r in shown.itertuples():
        tenant = tenant_names.get(r.tenant_id, r.tenant_id)
        agent = r.agent_id if isinstance(r.agent_id, str) else "(no agent)"
        status = " · *new*" if r.status == "new" else ""
        lines.append(
            f"*{usd(r.saving_monthly_usd)}/month* — {tenant} · `{agent}` · {r.model} → "
            f"{r.option} ({KIND_LABELS.get(r.kind, r.kind)}, {r.confidence} confidence, "
            f"{usd(r.current_monthly_usd)} → {usd(r.projected_monthly_usd)}){status}"
        )
    header = f"Cost recommendations — week {week}"
    text = (
        f"{header}: {len(active)} recommendation(s), up to {usd(total)}/month with the best "
        f"option of each agent and model; the largest {len(shown)} below."
    )
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(header, 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, 3000)}},
        *(
            {"type": "section", "text": {"type": "mrkdwn", "text": clip(line, 3000)}}
            for line in lines
        ),
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": clip(
                        f"Re-priced from the last days of actual calls as of {day}; "
                        f"<{asset_url(ui_url, 'cost_recommendations', day or None)}|all "
                        "recommendations and their assumptions>",
                        2000,
                    ),
                }
            ],
        },
    ]
    return text, blocks


def digest_outbox_row(
    rows: pd.DataFrame,
    *,
    week: str,
    tenant_id: str,
    channel: str,
    tenant_names: dict[str, str],
    ui_url: str,
    top: int,
) -> pd.DataFrame:
    """The week's one Slack outbox row (see `store.outbox.enqueue`): fact key
    `<tenant_id>:<week>:recommendations_digest:<week>`, so a week has one digest."""
    text, blocks = digest_message(
        rows, week=week, tenant_names=tenant_names, ui_url=ui_url, top=top
    )
    day = rows["day"].max() if len(rows) else None
    return pd.DataFrame(
        [
            {
                "tenant_id": tenant_id,
                "period": week,
                "kind": DIGEST_KIND,
                "ref": week,
                "day": day,
                "channel": channel,
                "text": text,
                "blocks": json.dumps(blocks, ensure_ascii=False),
                "transport": "slack",
            }
        ]
    )
