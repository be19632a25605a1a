"""Alerts beyond Slack: an email's subject, body and Message-ID, and a webhook's signed event.

The outbox stores each alert as Slack renders it (`text` plus Block Kit `blocks`, see
`lib.slack_messages`); the other channels are derived from that, so every channel says the same.

The webhook contract (what a receiver implements):

- `POST` with a JSON body (`webhook_event`): `event_id`, `type`, `kind`, `tenant_id`, `period`,
  `ref`, `day`, `text`, `blocks`.
- `X-Cost-Pipeline-Event-Id` (and `Idempotency-Key`, the same value): the alert's fact key,
  identical on every attempt. The receiver acts once per event id and answers a repeat with
  2xx (or 409): that is what makes a re-send after a lost answer harmless.
- `X-Cost-Pipeline-Timestamp`: Unix seconds of this attempt; `X-Cost-Pipeline-Signature`:
  `v1=` + hex HMAC-SHA256, keyed by the shared secret, of `<timestamp>.<raw body>`
  (`signature`). The receiver recomputes it over the raw bytes, compares in constant time and
  rejects a timestamp older than its tolerance (`verify_signature`, 5 minutes) against replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

EVENT_TYPE = "cost_pipeline.alert"
EVENT_ID_HEADER = "X-Cost-Pipeline-Event-Id"
TIMESTAMP_HEADER = "X-Cost-Pipeline-Timestamp"
SIGNATURE_HEADER = "X-Cost-Pipeline-Signature"
ALERT_KEY_HEADER = "X-Cost-Pipeline-Alert-Key"
SIGNATURE_VERSION = "v1"
TOLERANCE_SECONDS = 300
SUBJECT_MAX = 150

_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>")
_BARE_LINK = re.compile(r"<([^<>|]+)>")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def plain(mrkdwn: str) -> str:
    """Slack mrkdwn as plain text: links as `label (url)`, no bold stars or code fences."""
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", mrkdwn)
    text = _BARE_LINK.sub(lambda m: m.group(1), text)
    text = text.replace("```", "")
    return _BOLD.sub(lambda m: m.group(1), text)


def email_subject(text: str, blocks: list[dict]) -> str:
    """The message's header block (what Slack shows as its title), else its first line."""
    header = next((b for b in blocks if b.get("type") == "header"), None)
    title = header["text"]["text"] if header else (text.splitlines() or [""])[0]
    subject = f"[Cost alert] {title}"
    return subject if len(subject) <= SUBJECT_MAX else subject[: SUBJECT_MAX - 1] + "…"


def email_body(text: str, blocks: list[dict], *, fact_key: str) -> str:
    """A plain-text email: the summary line, then the blocks' content, then the alert key."""
    lines = [plain(text), ""]
    for block in blocks:
        kind = block.get("type")
        if kind == "section" and block.get("text"):
            lines += [plain(block["text"]["text"]), ""]
        elif kind == "section":
            for field in block.get("fields", []):
                name, _, value = field["text"].partition("\n")
                lines.append(f"{plain(name)}: {plain(value)}")
            lines.append("")
        elif kind == "context":
            lines += [" · ".join(plain(e.get("text", "")) for e in block.get("elements", [])), ""]
    lines.append(f"Alert key: {fact_key}")
    return "\n".join(lines).strip() + "\n"


def message_id(fact_key: str, domain: str) -> str:
    """A Message-ID that is the same on every attempt to send this alert (a hash: fact keys hold
    `:` and `@`, which a Message-ID's left part may not)."""
    digest = hashlib.sha256(fact_key.encode()).hexdigest()[:40]
    return f"<alert.{digest}@{domain}>"


def webhook_event(fact: Mapping[str, Any], *, text: str, blocks: list[dict]) -> dict[str, Any]:
    """The JSON body of one alert: the same bytes on every attempt (no send time in it)."""
    return {
        "event_id": str(fact["fact_key"]),
        "type": EVENT_TYPE,
        "kind": fact["kind"],
        "tenant_id": fact["tenant_id"],
        "period": fact["period"],
        "ref": str(fact["ref"]),
        "day": fact.get("day"),
        "text": text,
        "blocks": blocks,
    }


def encode_event(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 of `<timestamp>.<body>` keyed by `secret`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def signed_headers(secret: str, timestamp: int, body: bytes, event_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: event_id,
        "Idempotency-Key": event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify_signature(
    secret: str,
    *,
    timestamp: str | None,
    signature_header: str | None,
    body: bytes,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> str | None:
    """What a receiver checks: None when the request is authentic and fresh, else the reason."""
    if not timestamp or not signature_header:
        return "missing signature or timestamp"
    try:
        sent = int(timestamp)
    except ValueError:
        return "timestamp is not an integer"
    if abs(now - sent) > tolerance:
        return "timestamp outside the tolerance (a replay?)"
    expected = signature(secret, sent, body)
    given = [s.strip() for s in signature_header.split(",")]
    if not any(hmac.compare_digest(expected, s) for s in given):
        return "signature does not match"
    return None
