"""A generic signed webhook for alerts: JSON `POST` with an HMAC-SHA256 signature; dry-run twin.

The wire contract (headers, body, signature) is `lib.messages`'. Every attempt of an alert
carries the same event id (its fact key), so a receiver that acts once per id makes re-sends
harmless: urllib3 retries 429, 5xx, connection errors and read timeouts within one attempt
(`resources.http`, backoff with jitter, `Retry-After` honoured), and the outbox retries later
ones, each signed afresh. 2xx and 409 (a receiver's "already have it") count as delivered; any
other 4xx is permanent (a wrong URL or secret does not fix itself).

Without a URL the resource is its own offline twin: `post_event` logs the event and returns None,
and the outbox records the alert as `dry_run`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import dagster as dg
import requests

from cost_pipeline.lib.messages import encode_event, signed_headers
from cost_pipeline.lib.outbox import SendError
from cost_pipeline.resources.http import JsonHttpClient

log = logging.getLogger(__name__)

DELIVERED = frozenset({409})  # a receiver that already has the event id
RETRYABLE = frozenset({408, 425, 429})


class WebhookResource(dg.ConfigurableResource):
    """One webhook endpoint. `url` empty means dry-run; `secret` signs every request."""

    url: str = ""
    secret: str | None = None
    timeout_seconds: float = 10.0
    max_retries: int = 3
    backoff_seconds: float = 0.5

    @property
    def dry_run(self) -> bool:
        return not self.url

    def post_event(self, *, event: dict[str, Any], event_id: str) -> str | None:
        """POST one signed event; return its event id (None in dry-run). Raises `SendError`."""
        body = encode_event(event)
        if self.dry_run:
            log.info("Webhook dry-run (no ALERT_WEBHOOK_URL): %s", body.decode())
            return None
        if not self.secret:
            raise SendError(
                "webhook: ALERT_WEBHOOK_SECRET is not set; an unsigned alert is not sent",
                retryable=False,
            )
        client = JsonHttpClient(
            service="webhook",
            base_url=self.url,
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_seconds=self.backoff_seconds,
        )
        headers = signed_headers(self.secret, int(time.time()), body, event_id)
        try:
            response = client.session.post(
                client.base_url, data=body, headers=headers, timeout=self.timeout_seconds
            )
        except requests.RequestException as exc:
            # Timed out, reset or refused after the retries: the receiver may have it; the next
            # attempt carries the same event id.
            raise SendError(f"webhook: {type(exc).__name__}", retryable=True) from None
        finally:
            client.session.close()
        status = response.status_code
        if 200 <= status < 300 or status in DELIVERED:
            return event_id
        raise SendError(
            f"webhook: HTTP {status} {response.text[:200]!r}",
            retryable=status >= 500 or status in RETRYABLE,
        )
