"""Delivering the alert outbox: claim due rows, send each (or a digest), record the outcome."""

from __future__ import annotations

import json
from datetime import datetime

from cost_pipeline.lib.outbox import DigestBuilder, DrainResult, Sender, SendError, backoff
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
    max_attempts: int = 8,
) -> DrainResult:
    """Claim due alerts and send them: one message each, or one digest per channel when a
    channel has more than `digest_after`. The first retryable failure ends the tick: the rest
    go back to `pending` untried, with backoff (Slack is likely down; hammering it helps no one)."""
    result = DrainResult()
    claimed = claim(warehouse, now=now)
    if claimed.empty:
        return result
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
            ts = send(channel, text, blocks)
        except SendError as exc:
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
