"""The alert outbox: every alert is a row keyed by its fact, so it is sent once and never lost.

Key: `alert_key(tenant, period, kind, ref)` where `ref` is the threshold, the anomaly id or the
run id. Life of a row:

    pending --claim--> sending --send ok, or found in Slack's history--> sent | dry_run
                          |--send failed--> pending (attempts + 1, next_attempt_at backed off)
                          |                 or failed once `max_attempts` is reached
                          |--the run dies--> (after LEASE) claimed again, looked up first
    pending --a higher threshold of the same tenant and period arrives--> superseded

`enqueue` inserts only facts not seen before (a re-run of the whole month adds nothing) and
keeps only the highest budget threshold of a tenant and period. `claim` moves due rows to
`sending` under a lock, so two runs never send the same row, and stamps `first_attempt_at` the
first time. A crash between Slack's answer and `record_*` leaves a row in `sending`; after
`LEASE` it is due again, and the outbox sensor requests a run for it on its own.

Why a re-send is not a duplicate: every message carries its alert keys in Slack message metadata
(`message_metadata`). A row that was attempted before (timeout, 5xx, crash, expired lease: the
outcome is unknown) is looked up in its channel's history since `first_attempt_at - HISTORY_MARGIN`
before it is sent again; if a message carrying its key is there, the row is recorded `sent` with
that message's `ts` and nothing is posted. If the history cannot be read, the row backs off rather
than risk a second message. What is left: a message Slack accepted but does not yet list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

LOCK = "alert_outbox"
THRESHOLD_KIND = "budget_threshold"
DONE = ("sent", "dry_run")
# A `sending` row untouched this long belongs to a run that died: it is due again.
LEASE = timedelta(minutes=15)
# Slack's clock and ours differ a little; history is searched from this much before the first try.
HISTORY_MARGIN = timedelta(minutes=5)
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


def new_episodes(facts: pd.DataFrame, alerted: pd.DataFrame) -> pd.Series:
    """For each fact (tenant_id, kind, ref): False for an anomaly whose episode is already
    alerted, or is an earlier fact of this batch, with a start within `EPISODE_DAYS`; True for
    every other fact. `alerted` holds the outbox rows (tenant_id, kind, ref)."""
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
        _start=[_episode_start(k, r) for k, r in zip(facts["kind"], facts["ref"], strict=True)]
    )
    for index, row in order.sort_values("_start", na_position="first").iterrows():
        if row["_start"] is None or pd.isna(row["_start"]):
            continue
        seen = starts.setdefault(row["tenant_id"], [])
        if any(abs(row["_start"] - s) <= window for s in seen):
            keep[index] = False
        else:
            seen.append(row["_start"])
    return keep


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


# send(channel, text, blocks, metadata) -> message ts (None in dry-run); raises SendError.
Sender = Callable[[str, str, list[dict], dict[str, Any]], str | None]
# find(channel, oldest, keys) -> {alert_key: ts} of the keys already in the channel since
# `oldest`; raises SendError when the history cannot be read.
Finder = Callable[[str, datetime, list[str]], dict[str, str]]
DigestBuilder = Callable[[pd.DataFrame], tuple[str, list[dict]]]


@dataclass
class DrainResult:
    sent: list[str] = field(default_factory=list)
    # Of `sent`: found already in Slack from an earlier attempt, so not posted again.
    found: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    messages: int = 0
    digests: int = 0
