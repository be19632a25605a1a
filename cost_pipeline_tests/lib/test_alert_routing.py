"""Protects alert routing and its configuration: which channels get which kinds, per tenant."""

from __future__ import annotations

import pandas as pd
import pytest

from cost_pipeline.lib.config import Channels, ConfigError, parse_config
from cost_pipeline.lib.messages import email_body, email_subject, message_id, plain
from cost_pipeline.lib.outbox import route_alerts, row_key

BASE = {
    "tiers": {"pro": {"name": "Pro", "included_usage_usd": 200}},
    "tenants": [{"id": "acme", "name": "Acme", "tier": "pro"}],
}
CHANNELS = {
    "email_to": ["finops@example.com"],
    "routes": [
        {"kinds": ["budget_threshold", "forecast_breach"], "channels": ["slack", "email"]},
        {"kinds": ["billing_overage_held", "run_failure"], "channels": ["email", "webhook"]},
        {"kinds": ["*"], "channels": ["slack"]},
    ],
    "tenants": {"acme": {"email_to": ["cfo@acme.example"]}},
}


def test_without_a_channels_section_everything_goes_to_slack_only() -> None:
    config = parse_config(BASE)
    assert config.channels.channels_for("acme", "anomaly") == ["slack"]
    assert config.channels.channels_for("__pipeline__", "run_failure") == ["slack"]


@pytest.mark.parametrize(
    ("tenant", "kind", "channels"),
    [
        ("acme", "budget_threshold", ["slack", "email"]),
        ("acme", "forecast_breach", ["slack", "email"]),
        ("acme", "anomaly", ["slack"]),
        ("acme", "billing_overage_held", ["slack", "email", "webhook"]),
        ("__pipeline__", "run_failure", ["slack", "email", "webhook"]),
    ],
)
def test_an_alert_goes_to_every_channel_of_every_matching_route(
    tenant: str, kind: str, channels: list[str]
) -> None:
    assert Channels.model_validate(CHANNELS).channels_for(tenant, kind) == channels


def test_a_tenant_routes_replace_the_default_ones_and_its_recipients_are_its_own() -> None:
    own = {
        **CHANNELS,
        "tenants": {"acme": {"routes": [{"kinds": ["anomaly"], "channels": ["webhook"]}]}},
    }
    channels = Channels.model_validate(own)
    assert channels.channels_for("acme", "anomaly") == ["webhook"]
    assert channels.channels_for("acme", "budget_threshold") == []
    assert channels.channels_for("other", "budget_threshold") == ["slack", "email"]
    mine = Channels.model_validate(CHANNELS)
    assert mine.email_recipients("acme") == ["cfo@acme.example"]
    assert mine.email_recipients("__pipeline__") == ["finops@example.com"]


@pytest.mark.parametrize(
    ("channels", "error"),
    [
        ({"routes": [{"kinds": ["budget"], "channels": ["slack"]}]}, "unknown alert kind"),
        ({"routes": [{"channels": ["pager"]}]}, "channels.routes.0.channels.0"),
        ({"routes": [{"channels": ["email"]}]}, "email_to is empty"),
        ({"email_to": ["not-an-address"]}, "channels.email_to.0"),
        (
            {"tenants": {"acme": {"routes": [{"channels": ["email"]}]}}},
            "tenants.acme: routes send email but no email_to",
        ),
    ],
)
def test_a_bad_channels_section_fails_at_load_naming_the_key(channels: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_config({**BASE, "channels": channels})


def test_routing_gives_one_row_per_channel_with_its_destination() -> None:
    alerts = pd.DataFrame(
        {
            "tenant_id": ["acme", "acme"],
            "period": "2026-10",
            "kind": ["budget_threshold", "anomaly"],
            "ref": ["90", "incident@2026-10-01"],
            "channel": "#acme",
            "text": ["t1", "t2"],
        }
    )
    routed = route_alerts(alerts, Channels.model_validate(CHANNELS))
    assert routed[["kind", "transport", "channel"]].values.tolist() == [
        ["budget_threshold", "slack", "#acme"],
        ["budget_threshold", "email", "cfo@acme.example"],
        ["anomaly", "slack", "#acme"],
    ]
    assert row_key("k", "slack") == row_key("k", None) == "k"
    assert row_key("k", "email") == "k#email"


def test_an_email_reads_as_the_slack_message_says() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Unusual spend — Acme"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Why*\nLLM spend 4x"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "<http://ui/x|x in Dagster>"}]},
    ]
    assert email_subject("HIGH spend anomaly", blocks) == "[Cost alert] Unusual spend — Acme"
    assert email_subject("line one\nline two", []) == "[Cost alert] line one"
    body = email_body("HIGH spend anomaly", blocks, fact_key="acme:2026-10:anomaly:x")
    assert body.splitlines()[0] == "HIGH spend anomaly"
    assert "Why\nLLM spend 4x" in body and "x in Dagster (http://ui/x)" in body
    assert plain("```trace```") == "trace"
    assert message_id("a:b", "d.example") == message_id("a:b", "d.example")
    assert message_id("a:b", "d.example").endswith("@d.example>")
