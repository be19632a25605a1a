"""The one place resources are instantiated: real clients from env vars, offline twins in the demo.

Secrets are read only through `dg.EnvVar`, so they never appear in run config, logs or metadata.
A source whose variables are unset is "not configured" (its assets write empty partitions), except
in the demo configuration, where its offline twin stands in. Slack and Stripe without a token, email
without `SMTP_HOST` and the webhook without `ALERT_WEBHOOK_URL` run dry: messages and meter events
are recorded in the outbox tables, never sent.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from cost_pipeline import environment
from cost_pipeline.lib.config import CostConfig, load_config
from cost_pipeline.resources.anthropic_admin import AnthropicAdminResource, AnthropicAdminTwin
from cost_pipeline.resources.email import EmailResource
from cost_pipeline.resources.focus_exports import FocusExports, FocusExportsTwin
from cost_pipeline.resources.fx import EcbRatesResource, EcbRatesTwin
from cost_pipeline.resources.kubecost import KubecostResource, KubecostTwin
from cost_pipeline.resources.landing import LandingFolderResource
from cost_pipeline.resources.openai_admin import OpenAIAdminResource, OpenAIAdminTwin
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.resources.stripe_billing import StripeBillingResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.resources.webhook import WebhookResource


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, "") or default


def _secret(name: str) -> dg.EnvVar | None:
    """`dg.EnvVar(name)` when the variable is set (EnvVar on an unset variable fails a run)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources(config: CostConfig | None = None) -> dict[str, Any]:
    """Resources for the current environment; `config` defaults to `COST_PIPELINE_CONFIG`."""
    config = config or load_config(environment.config_file() or None)
    demo = config.demo.enabled
    cost_config = CostConfigResource(path=environment.config_file())

    openai_key, anthropic_key = _secret("OPENAI_ADMIN_KEY"), _secret("ANTHROPIC_ADMIN_KEY")
    if openai_key is not None:
        openai = OpenAIAdminResource(
            admin_key=openai_key, base_url=_env("OPENAI_BASE_URL", "https://api.openai.com/v1")
        )
    else:
        openai = OpenAIAdminTwin(cost_config=cost_config) if demo else OpenAIAdminResource()
    if anthropic_key is not None:
        anthropic = AnthropicAdminResource(
            admin_key=anthropic_key,
            base_url=_env("ANTHROPIC_BASE_URL", "https://api.anthropic.com/v1"),
        )
    else:
        anthropic = (
            AnthropicAdminTwin(cost_config=cost_config) if demo else AnthropicAdminResource()
        )

    if _env("KUBECOST_URL"):
        kubecost = KubecostResource(
            url=_env("KUBECOST_URL"), flavor=_env("KUBECOST_FLAVOR", "kubecost")
        )
    else:
        kubecost = KubecostTwin(cost_config=cost_config) if demo else KubecostResource()
    if _env("ECB_RATES_URL") or not demo:
        ecb_rates = EcbRatesResource(url=_env("ECB_RATES_URL"))
    else:
        window = config.demo.window(datetime.now(UTC).date())
        ecb_rates = EcbRatesTwin(first_day=window[0].isoformat(), last_day=window[-1].isoformat())
    focus_dir = environment.env_or_demo_dir("FOCUS_EXPORT_DIR", "focus", demo=demo)
    if demo and not _env("FOCUS_EXPORT_DIR"):
        focus_exports = FocusExportsTwin(path=focus_dir, cost_config=cost_config)
    else:
        focus_exports = FocusExports(path=focus_dir)

    return {
        "warehouse": WarehouseResource(
            url=environment.default_warehouse_url(),
            first_day=config.first_partition_day(datetime.now(UTC).date()).isoformat(),
        ),
        "cost_config": cost_config,
        "interaction_log": LandingFolderResource(
            path=environment.env_or_demo_dir(
                environment.INTERACTION_LOG_ENV, "interactions", demo=demo
            )
        ),
        "openai_admin": openai,
        "anthropic_admin": anthropic,
        "kubecost": kubecost,
        "focus_exports": focus_exports,
        "ecb_rates": ecb_rates,
        "slack": SlackResource(
            bot_token=_secret("SLACK_BOT_TOKEN"),
            default_channel=_env("SLACK_CHANNEL", config.alerts.default_channel),
            base_url=_env("SLACK_BASE_URL", "https://slack.com/api/"),
        ),
        "email": EmailResource(
            host=_env("SMTP_HOST"),
            port=int(_env("SMTP_PORT", "587")),
            username=_env("SMTP_USERNAME") or None,
            password=_secret("SMTP_PASSWORD"),
            security=_env("SMTP_SECURITY", "starttls"),
            from_address=_env("ALERT_EMAIL_FROM", "cost-alerts@localhost"),
        ),
        "webhook": WebhookResource(
            url=_secret("ALERT_WEBHOOK_URL") or "", secret=_secret("ALERT_WEBHOOK_SECRET")
        ),
        "stripe_billing": StripeBillingResource(
            api_key=_secret("STRIPE_API_KEY") or "",
            **{
                field: value
                for field, value in (
                    ("api_base", _env("STRIPE_API_BASE")),
                    ("meter_event_name", _env("STRIPE_METER_EVENT_NAME")),
                )
                if value
            },
        ),
    }
