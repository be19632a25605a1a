"""A stateful fake of Stripe's Billing Meter endpoints on 127.0.0.1, able to misbehave.

It keeps what real Stripe keeps and tests rely on: meter events unique by `identifier` (a second
event with a used identifier is rejected with 400 `resource_already_exists`), responses stored per
`Idempotency-Key` and replayed (500s included, as Stripe does; the same key with other parameters
is a 400 `idempotency_error`; a replay carries `Idempotent-Replayed: true`), cancellations
through meter event adjustments within 24 hours, the meters list and each meter's event summaries
(`GET /v1/billing/meters/{id}/event_summaries`: the sum of the accepted, uncancelled events of a
customer with `start_time <= timestamp < end_time`, both minute-aligned).

Faults are queued per endpoint with `fail_next`: `"429"` (rate limited, `Retry-After`, nothing
recorded), `"503"` (fails before recording, not stored), `"500_after_record"` (records the event,
stores and answers 500: the answer is lost after the accept), `"500_stored"` (records nothing,
stores and answers 500: every retry with the key gets the same 500) and `"hang"` (sleeps
`hang_seconds` before handling, so the client times out and retries while the first request is
still in flight). `summaries_lag = True` keeps newly accepted events out of the summaries (Stripe
aggregates asynchronously) until `catch_up_summaries()`.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cost_pipeline_tests.fakes.loopback import JsonHandler, LoopbackServer

METER_EVENTS = "/v1/billing/meter_events"
ADJUSTMENTS = "/v1/billing/meter_event_adjustments"
METERS = "/v1/billing/meters"
CANCEL_WINDOW_SECONDS = 24 * 3600
# The event names the project's resources use by default and in tests: each has an active meter.
DEFAULT_METER_EVENT_NAMES = ("cost_pipeline_overage_cents", "overage_cents")


@dataclass
class FakeStripeState:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    idempotency: dict[str, tuple[tuple, int, dict[str, Any]]] = field(default_factory=dict)
    faults: dict[str, deque[str]] = field(default_factory=lambda: defaultdict(deque))
    requests: list[dict[str, Any]] = field(default_factory=list)
    rejected_customers: set[str] = field(default_factory=set)
    meters: dict[str, str] = field(default_factory=dict)  # meter id -> event name
    unsummarized: set[str] = field(default_factory=set)  # accepted, not yet aggregated


class FakeStripe(LoopbackServer):
    """The server and its state; use as a context manager or via `running()`."""

    def __init__(
        self,
        *,
        hang_seconds: float = 1.0,
        retry_after: str = "0",
        meter_event_names: tuple[str, ...] = DEFAULT_METER_EVENT_NAMES,
    ) -> None:
        self.state = FakeStripeState()
        self.state.meters = {f"mtr_{i + 1:04d}": n for i, n in enumerate(meter_event_names)}
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self.summaries_lag = False
        self.clock = time.time  # replaced by tests that need "24 hours later"
        self._lock = threading.Lock()
        super().__init__(self._handler_class())

    # -- test controls -------------------------------------------------------------------------

    def fail_next(self, fault: str, *, times: int = 1, path: str = METER_EVENTS) -> None:
        self.state.faults[path].extend([fault] * times)

    def reject_customer(self, customer: str) -> None:
        self.state.rejected_customers.add(customer)

    def forget_idempotency_keys(self) -> None:
        """What Stripe does after 24 hours: the identifier stays the dedup key, the keys go."""
        with self._lock:
            self.state.idempotency.clear()

    def catch_up_summaries(self) -> None:
        """Stripe's asynchronous aggregation catches up: every accepted event is summarized."""
        with self._lock:
            self.state.unsummarized.clear()

    # -- what was billed -----------------------------------------------------------------------

    def live_events(self) -> list[dict[str, Any]]:
        return [e for i, e in self.state.events.items() if i not in self.state.cancelled]

    def totals_by_customer(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for event in self.live_events():
            out[event["payload"]["stripe_customer_id"]] += int(event["payload"]["value"])
        return dict(out)

    def meter_event_posts(self) -> int:
        return sum(1 for r in self.state.requests if r["path"] == METER_EVENTS)

    def summary_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.state.requests if r["path"].endswith("/event_summaries")]

    # -- request handling ----------------------------------------------------------------------

    def _handle(self, path: str, headers: dict[str, str], body: str) -> tuple[int, dict, dict]:
        params = _parse_form(body)
        key = headers.get("idempotency-key")
        self.state.requests.append({"path": path, "params": params, "key": key})
        fault = None
        with self._lock:
            if self.state.faults[path]:
                fault = self.state.faults[path].popleft()
        if fault == "hang":
            time.sleep(self.hang_seconds)
        if fault == "429":
            return (
                429,
                {"Retry-After": self.retry_after},
                _error("rate_limit_error", "rate_limit", "Too many requests"),
            )
        if fault == "503":
            return 503, {}, _error("api_error", None, "Service unavailable")
        with self._lock:
            if fault == "500_stored" and key not in self.state.idempotency:
                status, payload = 500, _error("api_error", None, "An unknown error occurred")
                if key is not None:
                    self.state.idempotency[key] = (tuple(sorted(params.items())), status, payload)
                return status, {}, payload
        with self._lock:
            signature = tuple(sorted(params.items()))
            if key is not None and key in self.state.idempotency:
                stored_sig, status, payload = self.state.idempotency[key]
                if stored_sig != signature:
                    return (
                        400,
                        {},
                        _error(
                            "idempotency_error",
                            None,
                            "Idempotency key reused with other parameters",
                        ),
                    )
                return status, {"Idempotent-Replayed": "true"}, payload
            status, payload = self._execute(path, params)
            if fault == "500_after_record" and status == 200:
                status, payload = 500, _error("api_error", None, "An unknown error occurred")
            # Validation failures are not stored by Stripe; executed requests (500s too) are.
            if key is not None and status not in (400, 404):
                self.state.idempotency[key] = (signature, status, payload)
            return status, {}, payload

    def _execute(self, path: str, params: dict[str, str]) -> tuple[int, dict]:
        if path == METER_EVENTS:
            return self._create_event(params)
        if path == ADJUSTMENTS:
            return self._cancel_event(params)
        return 404, _error("invalid_request_error", "resource_missing", f"No route {path}")

    def _create_event(self, params: dict[str, str]) -> tuple[int, dict]:
        identifier = params.get("identifier", "")
        customer = params.get("payload[stripe_customer_id]")
        value = params.get("payload[value]")
        if not params.get("event_name") or customer is None or value is None:
            return 400, _error("invalid_request_error", "parameter_missing", "Missing parameter")
        if customer in self.state.rejected_customers:
            return 400, _error("invalid_request_error", "resource_missing", "No such customer")
        if not identifier or len(identifier) > 100:
            return 400, _error("invalid_request_error", "parameter_invalid", "Bad identifier")
        now = self.clock()
        timestamp = int(params.get("timestamp", now))
        if timestamp < now - 35 * 86400 or timestamp > now + 300:
            return 400, _error("invalid_request_error", "timestamp_out_of_range", "Bad timestamp")
        if identifier in self.state.events:
            return 400, _error(
                "invalid_request_error",
                "resource_already_exists",
                f"An event already exists with identifier {identifier}",
            )
        event = {
            "object": "billing.meter_event",
            "created": int(now),
            "event_name": params["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": {"stripe_customer_id": customer, "value": value},
            "timestamp": timestamp,
        }
        self.state.events[identifier] = event
        if self.summaries_lag:
            self.state.unsummarized.add(identifier)
        return 200, event

    def _get(self, path: str, query: dict[str, str]) -> tuple[int, dict]:
        self.state.requests.append({"path": path, "params": query, "key": None})
        with self._lock:
            if self.state.faults[path]:
                fault = self.state.faults[path].popleft()
                if fault in ("500_stored", "500_after_record", "503"):
                    return 503, _error("api_error", None, "Service unavailable")
            if path == METERS:
                data = [_meter(i, n) for i, n in sorted(self.state.meters.items())]
                return 200, {"object": "list", "data": data, "has_more": False, "url": path}
            parts = path.strip("/").split("/")
            if len(parts) == 5 and path.startswith(METERS + "/") and parts[4] == "event_summaries":
                return self._summaries(parts[3], query)
        return 404, _error("invalid_request_error", "resource_missing", f"No route {path}")

    def _summaries(self, meter_id: str, query: dict[str, str]) -> tuple[int, dict]:
        event_name = self.state.meters.get(meter_id)
        if event_name is None:
            return 404, _error("invalid_request_error", "resource_missing", "No such meter")
        try:
            customer = query["customer"]
            start, end = int(query["start_time"]), int(query["end_time"])
        except (KeyError, ValueError):
            return 400, _error("invalid_request_error", "parameter_missing", "Missing parameter")
        if start % 60 or end % 60 or end <= start:
            return 400, _error(
                "invalid_request_error", "parameter_invalid", "Times must be minute-aligned"
            )
        total = sum(
            float(e["payload"]["value"])
            for i, e in self.state.events.items()
            if e["event_name"] == event_name
            and e["payload"]["stripe_customer_id"] == customer
            and start <= e["timestamp"] < end
            and i not in self.state.cancelled
            and i not in self.state.unsummarized
        )
        summary = {
            "object": "billing.meter_event_summary",
            "id": f"mrs_{meter_id}_{customer}_{start}",
            "aggregated_value": total,
            "start_time": start,
            "end_time": end,
            "livemode": False,
            "meter": meter_id,
        }
        url = f"{METERS}/{meter_id}/event_summaries"
        return 200, {"object": "list", "data": [summary], "has_more": False, "url": url}

    def _cancel_event(self, params: dict[str, str]) -> tuple[int, dict]:
        identifier = params.get("cancel[identifier]", "")
        event = self.state.events.get(identifier)
        if params.get("type") != "cancel" or event is None:
            return 400, _error("invalid_request_error", "resource_missing", "No such event")
        if self.clock() - event["created"] > CANCEL_WINDOW_SECONDS:
            return 400, _error(
                "invalid_request_error", "meter_event_adjustment_too_late", "Event too old"
            )
        self.state.cancelled.add(identifier)
        return 200, {
            "object": "billing.meter_event_adjustment",
            "event_name": params.get("event_name"),
            "status": "complete",
            "type": "cancel",
            "cancel": {"identifier": identifier},
        }

    def _handler_class(self) -> type[JsonHandler]:
        fake = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                if not headers.get("authorization", "").startswith("Bearer "):
                    self.send_json(401, _error("invalid_request_error", None, "No key"))
                    return
                url = urlsplit(self.path)
                status, payload = fake._get(url.path, _parse_form(url.query))
                self.send_json(status, payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                if not headers.get("authorization", "").startswith("Bearer "):
                    status, extra, payload = (
                        401,
                        {},
                        _error("invalid_request_error", None, "No key"),
                    )
                else:
                    status, extra, payload = fake._handle(self.path, headers, body)
                self.send_json(status, payload, extra)

        return Handler


def _meter(meter_id: str, event_name: str) -> dict[str, Any]:
    return {
        "object": "billing.meter",
        "id": meter_id,
        "event_name": event_name,
        "status": "active",
        "display_name": event_name,
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "value_settings": {"event_payload_key": "value"},
    }


def _parse_form(body: str) -> dict[str, str]:
    return dict(parse_qsl(body, keep_blank_values=True))


def _error(type_: str, code: str | None, message: str) -> dict[str, Any]:
    return {"error": {"type": type_, "code": code, "message": message}}


@contextmanager
def running(**kwargs: Any) -> Iterator[FakeStripe]:
    fake = FakeStripe(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()
