"""Slack: post Block Kit messages with `slack_sdk`, honouring 429 Retry-After; dry-run twin.

Without a bot token the resource is its own offline twin: `post_message` logs the message and
returns None, and the outbox records the alert as `dry_run` — never lost, never sent.
"""

from __future__ import annotations

import json
import logging

import dagster as dg
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler

from cost_pipeline.lib.outbox import SendError

log = logging.getLogger(__name__)

# Slack errors that will not go away by retrying the same message.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "too_many_attachments",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
    }
)


class SlackResource(dg.ConfigurableResource):
    """Slack Web API client. `bot_token` empty means dry-run."""

    bot_token: str | None = None
    default_channel: str = ""
    base_url: str = "https://slack.com/api/"
    timeout_seconds: int = 15
    max_rate_limit_retries: int = 3

    @property
    def dry_run(self) -> bool:
        return not self.bot_token

    def client(self) -> WebClient:
        client = WebClient(
            token=self.bot_token,
            base_url=self.base_url if self.base_url.endswith("/") else self.base_url + "/",
            timeout=self.timeout_seconds,
        )
        client.retry_handlers.append(
            RateLimitErrorRetryHandler(max_retry_count=self.max_rate_limit_retries)
        )
        return client

    def post_message(
        self, *, channel: str | None, text: str, blocks: list[dict] | None = None
    ) -> str | None:
        """Post one message; return its `ts` (None in dry-run). Raises `SendError`."""
        target = channel or self.default_channel
        if self.dry_run:
            log.info(
                "Slack dry-run (no SLACK_BOT_TOKEN) to %s: %s\n%s",
                target,
                text,
                json.dumps(blocks or [], ensure_ascii=False),
            )
            return None
        if not target:
            raise SendError("no Slack channel: set SLACK_CHANNEL or a routing", retryable=False)
        try:
            response = self.client().chat_postMessage(channel=target, text=text, blocks=blocks)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error")) if exc.response else "?"
            status = exc.response.status_code if exc.response is not None else None
            raise SendError(
                f"slack chat.postMessage to {target}: HTTP {status} {error}",
                retryable=error not in PERMANENT_ERRORS,
            ) from None
        except (OSError, ValueError) as exc:
            # Connection refused / reset / timeout, or a body that is not JSON (a proxy page).
            raise SendError(
                f"slack chat.postMessage to {target}: {type(exc).__name__}", retryable=True
            ) from None
        return str(response.get("ts"))
