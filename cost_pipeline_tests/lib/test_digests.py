"""Protects the weekly and monthly digests: their periods, what they say (and about whom), and
the outbox rows and email HTML they become."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pandas as pd
import pytest

from cost_pipeline.lib.config import parse_config
from cost_pipeline.lib.digests import (
    build_digests,
    digest_message,
    digest_rows,
    last_complete_period,
    parse_period,
    period_containing,
    top_recommendations,
)
from cost_pipeline.lib.email_html import email_html
from cost_pipeline.lib.outbox import decode_attachments
from cost_pipeline.lib.periods import COMPANY

CONFIG = parse_config(
    {
        "organization": "Example Co",
        "tiers": {"pro": {"name": "Pro"}},
        "tenants": [
            {"id": "acme", "name": "Acme", "tier": "pro", "slack_channel": "#acme-costs"},
            {"id": "globex", "name": "Globex", "tier": "pro"},
        ],
        "reports": {"top_n": 3},
    }
)
WEEK = parse_period("weekly", "2026-W41")  # Mon 2026-10-05 .. Sun 2026-10-11


def _summary() -> pd.DataFrame:
    rows = []
    for i in range(14):
        day = date(2026, 9, 28) + timedelta(days=i)
        this_week = day >= WEEK.start
        rows += [
            # acme's gpt-4o doubles this week; its k8s cost stays.
            ("acme", "llm", "openai", "gpt-4o", 20.0 if this_week else 10.0, day),
            ("acme", "k8s", "", "payments", 5.0, day),
            ("globex", "llm", "anthropic", "claude-sonnet-4-5", 7.0, day),
        ]
    return pd.DataFrame(
        rows,
        columns=["tenant_id", "cost_category", "provider", "model_or_service", "cost_usd", "day"],
    )


def _anomalies() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"day": date(2026, 10, 7), "tenant_id": "acme", "driver": "model:gpt-4o",
             "severity": "critical", "reason": "gpt-4o spend 2x its usual level",
             "impact_usd": 70.0},
            {"day": date(2026, 10, 8), "tenant_id": "acme", "driver": "model:gpt-4o",
             "severity": "high", "reason": "still high", "impact_usd": 10.0},
            {"day": date(2026, 10, 8), "tenant_id": "globex", "driver": "tenant",
             "severity": "low", "reason": "a little up", "impact_usd": 1.0},
        ]
    )  # fmt: skip


def _digests(recommendations: pd.DataFrame | None = None) -> dict[str, object]:
    budget = pd.DataFrame(
        [
            {"day": date(2026, 10, 11), "tenant_id": "acme", "period": "2026-10",
             "spend_usd": 275.0, "limit_usd": 1000.0, "utilization_pct": 27.5, "status": "ok"},
            {"day": date(2026, 10, 11), "tenant_id": "acme", "period": "2026-09",
             "spend_usd": 999.0, "limit_usd": 1000.0, "utilization_pct": 99.9, "status": "x"},
        ]
    )  # fmt: skip
    forecasts = pd.DataFrame(
        [
            {"day": date(2026, 10, 10), "tenant_id": "acme", "month": date(2026, 10, 1),
             "forecast_usd": 700.0, "lower_80_usd": 650.0, "upper_80_usd": 760.0,
             "budget_usd": 1000.0},
            {"day": date(2026, 10, 11), "tenant_id": "acme", "month": date(2026, 10, 1),
             "forecast_usd": 720.0, "lower_80_usd": 690.0, "upper_80_usd": 750.0,
             "budget_usd": 1000.0},
        ]
    )  # fmt: skip
    digests = build_digests(
        _summary(),
        budget_status=budget,
        forecasts=forecasts,
        anomalies=_anomalies(),
        recommendations=recommendations,
        config=CONFIG,
        period=WEEK,
        as_of=WEEK.end,
    )
    return {d.tenant_id: d for d in digests}


@pytest.mark.parametrize(
    ("kind", "today", "label", "start", "end"),
    [
        ("weekly", date(2026, 10, 12), "2026-W41", date(2026, 10, 5), date(2026, 10, 11)),
        ("weekly", date(2026, 10, 18), "2026-W41", date(2026, 10, 5), date(2026, 10, 11)),
        ("weekly", date(2027, 1, 4), "2026-W53", date(2026, 12, 28), date(2027, 1, 3)),
        ("monthly", date(2026, 11, 4), "2026-10", date(2026, 10, 1), date(2026, 10, 31)),
        ("monthly", date(2027, 1, 4), "2026-12", date(2026, 12, 1), date(2026, 12, 31)),
    ],
)
def test_the_last_complete_period(kind, today, label, start, end) -> None:
    period = last_complete_period(kind, today)
    assert (period.label, period.start, period.end) == (label, start, end)
    assert parse_period(kind, label) == period
    assert period.alert_kind == f"{kind}_digest"


def test_previous_periods_and_bad_labels() -> None:
    assert WEEK.previous().label == "2026-W40"
    assert period_containing("monthly", date(2026, 3, 15)).previous().end == date(2026, 2, 28)
    with pytest.raises(ValueError, match="expected YYYY-Www"):
        parse_period("weekly", "2026-41")
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        parse_period("monthly", "2026-13")


def test_a_digest_compares_spend_names_drivers_and_takes_the_latest_status() -> None:
    acme = _digests()["acme"]
    assert (acme.spend, acme.previous_spend) == (175, 105)
    assert acme.drivers[0] == {"driver": "llm · gpt-4o", "cost": 140.0, "previous": 70.0}
    assert acme.budget["utilization_pct"] == 27.5  # the week's month, not September
    assert acme.forecast["forecast_usd"] == 720.0  # the latest as of the week's end
    assert [a["severity"] for a in acme.anomalies] == ["critical"]  # one line per driver
    text, blocks = digest_message(acme)
    assert text.startswith("Weekly cost digest for Acme, 2026-W41: $175.00 (+66.7% vs $105.00")
    body = json.dumps(blocks, ensure_ascii=False)
    assert "llm · gpt-4o: $140.00 (+100.0%)" in body and "$720.00" in body
    assert blocks[0]["text"]["text"] == "Weekly cost digest — Acme (2026-W41)"


def test_a_tenants_digest_holds_its_own_rows_only_and_the_company_has_everyone() -> None:
    digests = _digests()
    globex, company = digests["globex"], digests[COMPANY]
    assert globex.anomalies == [] and globex.budget is None and globex.forecast is None
    assert "acme" not in json.dumps(digest_message(globex)[1], ensure_ascii=False).lower()
    assert company.spend == 224 and company.name == "Example Co"
    assert [t["tenant_id"] for t in company.tenants] == ["acme", "globex"]
    assert "Acme" in json.dumps(digest_message(company)[1], ensure_ascii=False)


def test_recommendations_show_when_the_table_has_them_in_any_shape() -> None:
    recs = pd.DataFrame(
        {
            "tenant_id": ["acme", "acme", "globex"],
            "title": ["Cache the support prompt", "Batch the nightly job", "Use Haiku"],
            "monthly_saving_usd": [12.5, 80.0, 30.0],
        }
    )
    acme = _digests(recs)["acme"]
    assert [r["text"] for r in acme.recommendations] == [
        "Batch the nightly job",
        "Cache the support prompt",
    ]
    assert "saves about $80.00 a month" in json.dumps(digest_message(acme)[1], ensure_ascii=False)
    assert top_recommendations(None, "acme", 3) == []
    assert top_recommendations(pd.DataFrame({"odd": [1]}), "acme", 3) == []
    no_saving = pd.DataFrame({"tenant_id": ["acme"], "summary": ["Trim long prompts"]})
    assert top_recommendations(no_saving, "acme", 3) == [
        {"text": "Trim long prompts", "saving": None}
    ]


def test_digest_rows_are_outbox_facts_with_their_chart() -> None:
    rows = digest_rows(list(_digests().values()), CONFIG)
    assert list(rows["kind"].unique()) == ["weekly_digest"]
    assert set(rows["period"]) == set(rows["ref"]) == {"2026-W41"}
    assert dict(zip(rows["tenant_id"], rows["channel"], strict=True)) == {
        "acme": "#acme-costs",
        "globex": "#cost-alerts",
        COMPANY: "#cost-alerts",
    }
    (chart,) = decode_attachments(rows.iloc[0]["attachments"])
    assert chart.mime_type == "image/png" and chart.data.startswith(b"\x89PNG")
    assert chart.filename == "weekly_digest_acme_2026-W41.png"
    for blocks in rows["blocks"]:
        for block in json.loads(blocks):
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= 3000


def test_email_html_escapes_text_links_and_shows_the_chart_inline() -> None:
    (row,) = digest_rows([_digests()["acme"]], CONFIG).to_dict("records")
    images = list(decode_attachments(row["attachments"]))
    blocks = [
        *json.loads(row["blocks"]),
        {"type": "section", "text": {"type": "mrkdwn", "text": "*a<b* <http://x.test?a=1&b=2|ui>"}},
    ]
    page = email_html(row["text"], blocks, images=images, fact_key="acme:2026-W41:k")
    assert f'src="cid:{images[0].content_id}"' in page
    assert "<b>a&lt;b</b>" in page and '<a href="http://x.test?a=1&amp;b=2">ui</a>' in page
    assert "<h2>Weekly cost digest — Acme (2026-W41)</h2>" in page
