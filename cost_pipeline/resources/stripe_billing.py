"""Stripe Billing Meters: the resource that sends meter events and cancels them, or dry-runs.

The wire is stripe-python's own `StripeClient` (it signs, encodes and retries Stripe requests;
`JsonHttpClient` is not used here). Every request carries the ledger identifier as its
`Idempotency-Key`, so retries — stripe-python's on 5xx, 409, timeouts and connection errors, and
ours on 429 with `Retry-After` — can never bill twice. A response Stripe replays for a key
(`Idempotent-Replayed`, e.g. a stored 500) is flagged, so the ledger confirms the event against
the meter's event summaries (`meter_event_total`) instead of resending into the same answer.
Without an API key the resource is its own offline twin: a dry-run sender whose events the
ledger records as `dry_run`, never sent.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import dagster as dg
import stripe

from cost_pipeline.lib.billing_ledger import CONFIRM_AFTER, MeterEventSender, SendOutcome

DEFAULT_API_BASE = "https://api.stripe.com"
DEFAULT_EVENT_NAME = "cost_pipeline_overage_cents"
# Stripe rejects a re-used meter event identifier; for us that means "already recorded".
ALREADY_RECORDED_CODES = frozenset({"resource_already_exists", "duplicate_meter_event"})


class _RetryingRequestsClient(stripe.RequestsClient):
    """stripe-python's requests client, plus 429 retries honouring `Retry-After` and a
    configurable backoff (stripe-python's own starts at 0.5 s and ignores `Retry-After`)."""

    def __init__(self, *, timeout: float, backoff_seconds: float, max_backoff: float) -> None:
        super().__init__(timeout=timeout)
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff

    def _should_retry(
        self,
        response: Any,
        api_connection_error: Any,
        num_retries: int,
        max_network_retries: int | None,
    ) -> bool:
        self._thread_local.retry_after = 0.0
        if response is not None and response[1] == 429:
            if num_retries >= (max_network_retries or 0):
                return False
            self._thread_local.retry_after = _retry_after(response[2])
            return True
        return super()._should_retry(
            response, api_connection_error, num_retries, max_network_retries
        )

    def _sleep_time_seconds(self, num_retries: int) -> float:
        base = min(self._backoff * 2 ** (num_retries - 1), self._max_backoff)
        jittered = base * (0.5 + random.random() / 2)
        return max(jittered, getattr(self._thread_local, "retry_after", 0.0))


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, float((headers or {}).get("Retry-After", 0)))
    except (TypeError, ValueError):
        return 0.0


def _describe(exc: stripe.StripeError) -> str:
    # The user message and status only: never the request headers, which hold the key.
    status = f"HTTP {exc.http_status}" if exc.http_status else "no response"
    code = f" {exc.code}" if getattr(exc, "code", None) else ""
    return f"Stripe {status}{code}: {exc.user_message or type(exc).__name__}"


def _replayed(exc: stripe.StripeError) -> bool:
    headers = exc.headers or {}
    value = next((v for k, v in headers.items() if k.lower() == "idempotent-replayed"), "")
    return str(value).lower() == "true"


class StripeMeterEventSender:
    """Sends meter events and cancellations through a real `StripeClient`."""

    live = True

    def __init__(self, client: stripe.StripeClient, event_name: str, *, meter_id: str = "") -> None:
        self.client = client
        self.event_name = event_name
        self.meter_id = meter_id

    def send_meter_event(
        self,
        *,
        identifier: str,
        customer: str,
        value: int,
        timestamp: int,
        idempotency_key: str | None = None,
    ) -> SendOutcome:
        params: Any = {
            "event_name": self.event_name,
            "identifier": identifier,
            "timestamp": timestamp,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
        }
        return self._call(
            lambda: self.client.v1.billing.meter_events.create(
                params=params, options={"idempotency_key": idempotency_key or identifier}
            )
        )

    def cancel_meter_event(self, *, identifier: str) -> SendOutcome:
        params: Any = {
            "event_name": self.event_name,
            "type": "cancel",
            "cancel": {"identifier": identifier},
        }
        return self._call(
            lambda: self.client.v1.billing.meter_event_adjustments.create(
                params=params, options={"idempotency_key": f"cancel-{identifier}"}
            ),
            duplicate_is_success=False,
        )

    def meter_event_total(self, *, customer: str, start: int, end: int) -> int | None:
        """The meter's aggregated value for `customer` in [start, end) (minute-aligned), or
        None when Stripe cannot say now (the ledger then keeps the event open)."""
        try:
            meter_id = self._meter()
            if meter_id is None:
                return None
            summaries = self.client.v1.billing.meters.event_summaries.list(
                meter_id, params={"customer": customer, "start_time": start, "end_time": end}
            )
        except stripe.StripeError:
            return None
        return round(sum(float(s.aggregated_value) for s in summaries.auto_paging_iter()))

    def _meter(self) -> str | None:
        """The configured meter id, or the active meter whose event name is ours."""
        if not self.meter_id:
            meters = self.client.v1.billing.meters.list(params={"status": "active", "limit": 100})
            found = [m.id for m in meters.auto_paging_iter() if m.event_name == self.event_name]
            self.meter_id = found[0] if len(found) == 1 else ""
        return self.meter_id or None

    def _call(self, request: Any, *, duplicate_is_success: bool = True) -> SendOutcome:
        try:
            request()
        except stripe.InvalidRequestError as exc:
            if duplicate_is_success and exc.code in ALREADY_RECORDED_CODES:
                return SendOutcome("sent", None)
            return SendOutcome("failed", _describe(exc))
        except (stripe.AuthenticationError, stripe.PermissionError, stripe.IdempotencyError) as exc:
            return SendOutcome("failed", _describe(exc))
        except stripe.StripeError as exc:
            # 5xx, 429, timeouts after every retry: Stripe may or may not have recorded it. The
            # ledger keeps the intent; a replayed answer means only a confirmation can settle it.
            return SendOutcome("unconfirmed", _describe(exc), replayed=_replayed(exc))
        return SendOutcome("sent", None)


class DryRunMeterEventSender:
    """The offline twin: sends nothing; the ledger records what would have been sent."""

    live = False

    def __init__(self, event_name: str) -> None:
        self.event_name = event_name

    def send_meter_event(
        self,
        *,
        identifier: str,
        customer: str,
        value: int,
        timestamp: int,
        idempotency_key: str | None = None,
    ) -> SendOutcome:
        return SendOutcome("dry_run", None)

    def cancel_meter_event(self, *, identifier: str) -> SendOutcome:
        return SendOutcome("dry_run", None)

    def meter_event_total(self, *, customer: str, start: int, end: int) -> int | None:
        return None  # nothing was sent; dry-run events are never confirmed


class StripeBillingResource(dg.ConfigurableResource):
    """Stripe Billing Meters. An empty `api_key` (no `STRIPE_API_KEY`) means dry-run."""

    api_key: str = ""
    api_base: str = DEFAULT_API_BASE
    meter_event_name: str = DEFAULT_EVENT_NAME
    max_network_retries: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 20.0
    timeout_seconds: float = 30.0
    meter_id: str = ""  # empty: the active meter whose event name is `meter_event_name`
    confirm_after_seconds: float = CONFIRM_AFTER.total_seconds()

    @property
    def dry_run(self) -> bool:
        return not self.api_key

    @property
    def confirm_after(self) -> timedelta:
        """Age since an event's first attempt past which it is confirmed, not resent."""
        return timedelta(seconds=self.confirm_after_seconds)

    def client(self) -> stripe.StripeClient:
        http_client = _RetryingRequestsClient(
            timeout=self.timeout_seconds,
            backoff_seconds=self.backoff_seconds,
            max_backoff=self.max_backoff_seconds,
        )
        return stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.api_base.rstrip("/")},
            max_network_retries=self.max_network_retries,
            http_client=http_client,
        )

    def sender(self) -> MeterEventSender:
        if self.dry_run:
            return DryRunMeterEventSender(self.meter_event_name)
        return StripeMeterEventSender(self.client(), self.meter_event_name, meter_id=self.meter_id)
