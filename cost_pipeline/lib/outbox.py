"""The alert outbox: every alert is a row keyed by its fact and channel, sent once, never lost.

Fact key: `alert_key(tenant, period, kind, ref)` where `ref` is the threshold, the anomaly id or
the run id. Routing (`route_alerts`, from `channels` in the configuration) gives a fact one row per
channel that receives its kind: the Slack row is keyed by the fact key itself, the others by
`row_key` (`<fact key>#email`, `<fact key>#webhook`). Life of a row, the same on every channel:

    pending --claim--> sending --send ok, or found in Slack's history--> sent | dry_run
                          |--send failed--> pending (attempts + 1, next_attempt_at backed off)
                          |                 or failed once `max_attempts` is reached
                          |--the run dies--> (after LEASE) claimed again, looked up first
    pending --a higher threshold of the same tenant and period arrives--> superseded

`enqueue` inserts only facts not seen before (a re-run of the whole month adds nothing) and
keeps only the highest budget threshold of a tenant and period. `claim` moves due rows of one
channel to `sending` under a lock, so two runs never send the same row, and stamps
`first_attempt_at` the first time. A crash between the answer and `record_*` leaves a row in
`sending`; after `LEASE` it is due again, and the outbox sensor requests a run for it on its own.

Why a re-send is not a duplicate depends on the channel, because only Slack can be asked:

- Slack: every message carries its alert keys in Slack message metadata (`message_metadata`). A
  row attempted before (timeout, 5xx, crash, expired lease: the outcome is unknown) is looked up
  in its channel's history since `first_attempt_at - HISTORY_MARGIN` before it is sent again; if a
  message carrying its key is there, the row is recorded `sent` with that message's `ts` and
  nothing is posted. If the history cannot be read, the row backs off rather than risk a second
  message. What is left: a message Slack accepted but does not yet list.
- Webhook: every attempt carries the fact key as its event id (`X-Cost-Pipeline-Event-Id`, also
  `Idempotency-Key`). The receiver's side of the contract is to act once per event id and to
  answer a repeat with 2xx (or 409); a re-send after an unknown outcome is then harmless, so
  delivery is exactly once *as the receiver sees it*. A receiver that ignores the id gets
  at-least-once.
- Email: SMTP offers no way to ask whether a message was taken. Each alert is one message with a
  `Message-ID` derived from its key, the same on every attempt, so a re-send after an unknown
  outcome (the server took the message but its answer was lost, or the run died after sending)
  is recognisable as the same message: delivery is at-least-once at the SMTP server, with
  `Message-ID` as the dedup key (mail clients and many mailbox providers fold duplicates by it).
  A transient refusal (4xx), a timeout before the server took the message or a crash before
  sending gives exactly one message; a permanent refusal (5xx, RFC 5321) none: the row is
  `failed`, naming the server's answer, like a Slack `channel_not_found`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from cost_pipeline.lib.config import Channels

LOCK = "alert_outbox"
THRESHOLD_KIND = "budget_threshold"
DONE = ("sent", "dry_run")
# A `sending` row untouched this long belongs to a run that died: it is due again.
LEASE = timedelta(minutes=15)
# Slack's clock and ours differ a little; history is searched from this much before the first try.
HISTORY_MARGIN = timedelta(minutes=5)
SLACK = "slack"
TRANSPORTS = ("slack", "email", "webhook")
EVENT_TYPE = "cost_pipeline_alert"
ANOMALY_KIND = "anomaly"
EPISODE_PREFIX = "incident@"
# An anomaly whose estimated start is this close to an alerted one of the same tenant is the
# same episode: a step's start estimate moves by a day or two as days are added.
EPISODE_DAYS = 7


def alert_key(tenant_id: str, period: str, kind: str, ref: str | float) -> str:
    if isinstance(ref, float):
        ref = f"{ref:g}"
    return f"{tenant_id}:{period}:{kind}:{ref}"


def row_key(fact_key: str, transport: str | None) -> str:
    """The outbox row of a fact on one channel: the fact key itself for Slack (as it always
    was), `<fact key>#<channel>` for the others."""
    return fact_key if transport in (None, SLACK) else f"{fact_key}#{transport}"


def route_alerts(alerts: pd.DataFrame, channels: Channels) -> pd.DataFrame:
    """One row per alert and channel that receives its kind (`channels.channels_for`), with
    `transport` and `channel` (the destination: the Slack channel already set, the email
    recipients, or `webhook`)."""
    if alerts.empty:
        return alerts.assign(transport=pd.Series(dtype=str))
    out = []
    for row in alerts.to_dict("records"):
        for transport in channels.channels_for(str(row["tenant_id"]), str(row["kind"])):
            if transport == "email":
                destination = ", ".join(channels.email_recipients(str(row["tenant_id"])))
            elif transport == "webhook":
                destination = "webhook"
            else:
                destination = row["channel"]
            out.append({**row, "transport": transport, "channel": destination})
    return pd.DataFrame(
        out, columns=[*alerts.columns.drop("transport", errors="ignore"), "transport"]
    )


def new_episodes(facts: pd.DataFrame, alerted: pd.DataFrame) -> pd.Series:
    """For each fact (tenant_id, kind, ref): False for an anomaly whose episode is already
    alerted, or is an earlier fact of this batch, with a start within `EPISODE_DAYS`; True for
    every other fact. `alerted` holds the outbox rows (tenant_id, kind, ref).

    Only a sustained shift merges that way: its start is an estimate that moves by a day or two
    as days come in. A spike (a fact with `since_day` empty or its own `day`) starts on its day
    for sure, so a new spike a few days after an alerted one is a new episode."""
    starts: dict[str, list[date]] = {}
    for tenant, kind, ref in zip(
        alerted["tenant_id"], alerted["kind"], alerted["ref"], strict=True
    ):
        start = _episode_start(kind, ref)
        if start is not None:
            starts.setdefault(tenant, []).append(start)
    keep = pd.Series(True, index=facts.index)
    window = timedelta(days=EPISODE_DAYS)
    order = facts.assign(
        _start=[_episode_start(k, r) for k, r in zip(facts["kind"], facts["ref"], strict=True)],
        _moving=_estimated_start(facts),
    )
    for index, row in order.sort_values("_start", na_position="first").iterrows():
        if row["_start"] is None or pd.isna(row["_start"]):
            continue
        seen = starts.setdefault(row["tenant_id"], [])
        reach = window if row["_moving"] else timedelta(0)
        if any(abs(row["_start"] - s) <= reach for s in seen):
            keep[index] = False
        else:
            seen.append(row["_start"])
    return keep


def _estimated_start(facts: pd.DataFrame) -> list[bool]:
    """Whether each fact's start is an estimate before its day (a shift), not the day itself
    (a spike). Without the columns, every start counts as an estimate."""
    if "since_day" not in facts.columns or "day" not in facts.columns:
        return [True] * len(facts)
    since = pd.to_datetime(facts["since_day"], errors="coerce")
    day = pd.to_datetime(facts["day"], errors="coerce")
    return (since.notna() & (since < day)).tolist()


def _episode_start(kind: str, ref: object) -> date | None:
    if kind != ANOMALY_KIND or not str(ref).startswith(EPISODE_PREFIX):
        return None
    try:
        return date.fromisoformat(str(ref)[len(EPISODE_PREFIX) :][:10])
    except ValueError:
        return None


def backoff(attempts: int, *, base: float = 60.0, cap: float = 3600.0) -> timedelta:
    """Delay before the next try after `attempts` failed ones: base * 2^(n-1), capped."""
    return timedelta(seconds=min(cap, base * 2 ** max(attempts - 1, 0)))


@dataclass
class EnqueueResult:
    inserted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


def message_metadata(keys: list[str]) -> dict[str, Any]:
    """The Slack message metadata naming the alert keys a message delivers (one, or a digest's)."""
    if len(keys) == 1:
        return {"event_type": EVENT_TYPE, "event_payload": {"alert_key": keys[0]}}
    digest = hashlib.sha1("|".join(sorted(keys)).encode()).hexdigest()[:16]
    return {
        "event_type": EVENT_TYPE,
        "event_payload": {"alert_key": f"digest:{digest}", "alert_keys": sorted(keys)},
    }


def keys_in_metadata(metadata: Any) -> list[str]:
    """The alert keys a message's metadata says it delivered (none for anyone else's message)."""
    if not isinstance(metadata, dict) or metadata.get("event_type") != EVENT_TYPE:
        return []
    payload = metadata.get("event_payload")
    if not isinstance(payload, dict):
        return []
    keys = payload.get("alert_keys")
    if isinstance(keys, list):
        return [str(k) for k in keys]
    key = payload.get("alert_key")
    return [str(key)] if key else []


class SendError(Exception):
    """A message could not be delivered; `retryable` says whether trying later may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Attachment:
    """A file a message carries (a digest's chart): on Slack it is uploaded into the message's
    thread, in an email it is an inline part the HTML shows as `cid:<content_id>`."""

    filename: str
    mime_type: str
    data: bytes
    title: str = ""

    @property
    def content_id(self) -> str:
        """The same on every attempt (a hash of the name and bytes), short enough for one
        header line."""
        digest = hashlib.sha256(self.filename.encode() + b"\0" + self.data).hexdigest()[:24]
        return f"{digest}@cost-pipeline"


def encode_attachments(attachments: list[Attachment]) -> str | None:
    """The `attachments` column of an outbox row (None without any)."""
    if not attachments:
        return None
    return json.dumps(
        [
            {
                "filename": a.filename,
                "mime_type": a.mime_type,
                "title": a.title,
                "data": base64.b64encode(a.data).decode(),
            }
            for a in attachments
        ]
    )


def decode_attachments(value: Any) -> tuple[Attachment, ...]:
    """The files of an outbox row's `attachments` column (none when null or empty)."""
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return ()
    items = json.loads(value) if isinstance(value, str) else value
    return tuple(
        Attachment(
            filename=str(i["filename"]),
            mime_type=str(i.get("mime_type") or "application/octet-stream"),
            data=base64.b64decode(i["data"]),
            title=str(i.get("title") or ""),
        )
        for i in items or []
    )


@dataclass(frozen=True)
class Outgoing:
    """One message to send: the outbox rows it delivers (one, or a Slack digest's), where to,
    and what it says. `facts` are the rows' tenant_id, period, kind, ref, day and fact_key;
    `attachments` the files of a single row that carries some (never bundled in a digest)."""

    keys: list[str]
    channel: str
    text: str
    blocks: list[dict]
    facts: list[dict[str, Any]]
    attachments: tuple[Attachment, ...] = ()

    @property
    def metadata(self) -> dict[str, Any]:
        return message_metadata(self.keys)

    @property
    def fact_key(self) -> str:
        """The fact of a single-alert message (its event id / Message-ID source)."""
        return str(self.facts[0]["fact_key"])


# send(message) -> receipt: Slack ts, Message-ID or event id (None in dry-run); raises SendError.
Sender = Callable[[Outgoing], str | None]
# find(channel, oldest, keys) -> {alert_key: ts} of the keys already in the channel since
# `oldest`; raises SendError when the history cannot be read.
Finder = Callable[[str, datetime, list[str]], dict[str, str]]
# None: the channel sends one message per alert (email and webhooks: one id per alert).
DigestBuilder = Callable[[pd.DataFrame], tuple[str, list[dict]]]


@dataclass
class DrainResult:
    sent: list[str] = field(default_factory=list)
    # Of `sent`: found already in Slack from an earlier attempt, so not posted again.
    found: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    messages: int = 0
    digests: int = 0
