"""Delivering the alert outbox: claim due rows, send each (or a digest), record the outcome.

A row tried before — its answer lost to a timeout, a 5xx or a dead run — is first looked up in
its channel's Slack history by the key in the message metadata, and recorded `sent` if found.
See `lib.outbox` for why this sends once.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime

import pandas as pd

from cost_pipeline.lib.outbox import (
    HISTORY_MARGIN,
    DigestBuilder,
    DrainResult,
    Finder,
    Sender,
    SendError,
    backoff,
    message_metadata,
)
from cost_pipeline.store.outbox import claim, record_failure, record_sent, release
from cost_pipeline.store.warehouse import Warehouse


def drain(
    warehouse: Warehouse,
    send: Sender,
    *,
    now: datetime,
    dry_run: bool,
    digest_after: int,
    build_digest: DigestBuilder,
    find: Finder | None = None,
    max_attempts: int = 8,
) -> DrainResult:
    """Claim due alerts and send them: one message each, or one digest per channel when a
    channel has more than `digest_after`. Rows tried before are looked up with `find` first
    (None: dry-run, nothing to look up). The first retryable failure ends the tick: the rest go
    back to `pending` untried, with backoff (Slack is likely down; hammering it helps no one)."""
    result = DrainResult()
    claimed = claim(warehouse, now=now)
    if claimed.empty:
        return result
    if find is not None:
        claimed = _settle_tried(warehouse, claimed, find, now, result, max_attempts)
    batches: list[tuple[list[str], str, str, list[dict]]] = []
    for channel, group in claimed.groupby("channel", sort=True):
        if len(group) > digest_after:
            text, blocks = build_digest(group)
            batches.append((group["alert_key"].tolist(), str(channel), text, blocks))
        else:
            for row in group.itertuples():
                blocks = json.loads(row.blocks) if row.blocks else []
                batches.append(([row.alert_key], str(channel), row.text, blocks))
    for i, (keys, channel, text, blocks) in enumerate(batches):
        try:
            ts = send(channel, text, blocks, message_metadata(keys))
        except SendError as exc:
            # Slack may have the message anyway (a lost answer): the next try looks it up first.
            record_failure(
                warehouse,
                keys,
                now=now,
                error=str(exc),
                retryable=exc.retryable,
                max_attempts=max_attempts,
            )
            result.failed += keys
            if exc.retryable:
                rest = [k for b in batches[i + 1 :] for k in b[0]]
                release(warehouse, rest, now=now, until=now + backoff(1))
                result.failed += rest
                break
            continue
        record_sent(warehouse, keys, now=now, ts=ts, dry_run=dry_run)
        result.sent += keys
        result.messages += 1
        result.digests += int(len(keys) > 1)
    return result


def _settle_tried(
    warehouse: Warehouse,
    claimed: pd.DataFrame,
    find: Finder,
    now: datetime,
    result: DrainResult,
    max_attempts: int,
) -> pd.DataFrame:
    """Record as sent the tried rows Slack already has; back off those whose history cannot be
    read (sending blind could send twice). Return the rows left to send."""
    settled: set[str] = set()
    for channel, group in claimed[claimed["verify"]].groupby("channel", sort=True):
        keys = group["alert_key"].tolist()
        try:
            found = find(str(channel), _since(group), keys)
        except SendError as exc:
            error = f"cannot tell whether it was sent: {exc}"
            record_failure(
                warehouse,
                keys,
                now=now,
                error=error,
                retryable=exc.retryable,
                max_attempts=max_attempts,
            )
            result.failed += keys
            settled.update(keys)
            continue
        _record_found(warehouse, found, now, result)
        settled.update(found)
    return claimed[~claimed["alert_key"].isin(settled)]


def _record_found(
    warehouse: Warehouse, found: dict[str, str], now: datetime, result: DrainResult
) -> None:
    by_ts: dict[str, list[str]] = defaultdict(list)
    for key, ts in found.items():
        by_ts[ts].append(key)
    for ts, keys in by_ts.items():
        record_sent(warehouse, keys, now=now, ts=ts, dry_run=False)
        result.sent += keys
        result.found += keys


def _since(group: pd.DataFrame) -> datetime:
    """Where a history search for these rows starts: their first attempt, less a margin."""
    first = pd.to_datetime(group["first_attempt_at"], utc=True).min()
    return first.to_pydatetime() - HISTORY_MARGIN
