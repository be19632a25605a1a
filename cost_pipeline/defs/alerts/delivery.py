"""Delivering the alert outbox, one channel at a time: claim its due rows, send each (or a Slack
digest), record the outcome.

On Slack a row tried before — its answer lost to a timeout, a 5xx or a dead run — is first looked
up in its channel's history by the key in the message metadata, and recorded `sent` if found.
Email and webhooks cannot be asked: they re-send under the same Message-ID / event id. See
`lib.outbox` for what each channel guarantees.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime

import pandas as pd

from cost_pipeline.lib.outbox import (
    HISTORY_MARGIN,
    SLACK,
    DigestBuilder,
    DrainResult,
    Finder,
    Outgoing,
    Sender,
    SendError,
    backoff,
    decode_attachments,
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
    build_digest: DigestBuilder | None,
    find: Finder | None = None,
    max_attempts: int = 8,
    transport: str = SLACK,
) -> DrainResult:
    """Claim the due alerts of `transport` and send them: one message each, or one digest per
    destination with more than `digest_after` (when `build_digest` is given; a row carrying
    files, a report digest, is always sent on its own with them). Rows tried before
    are looked up with `find` first (None: nothing to look up — a dry run, or a channel whose
    receiver recognises a re-send by its id). The first retryable failure ends the channel's
    tick: the rest go back to `pending` untried, with backoff (the service is likely down;
    hammering it helps no one)."""
    result = DrainResult()
    claimed = claim(warehouse, now=now, transport=transport)
    if claimed.empty:
        return result
    if find is not None:
        claimed = _settle_tried(warehouse, claimed, find, now, result, max_attempts, transport)
    batches: list[Outgoing] = []
    for channel, rows in claimed.groupby("channel", sort=True):
        # A row with files (a report digest) is always its own message, never bundled.
        has_files = _attachments(rows).map(bool)
        group = rows[~has_files]
        if build_digest is not None and len(group) > digest_after:
            text, blocks = build_digest(group)
            batches.append(
                Outgoing(group["alert_key"].tolist(), str(channel), text, blocks, _facts(group))
            )
            group = group.iloc[0:0]
        for _, row in pd.concat([group, rows[has_files]]).iterrows():
            blocks = json.loads(row["blocks"]) if row["blocks"] else []
            one = rows.loc[[row.name]]
            batches.append(
                Outgoing(
                    [row["alert_key"]],
                    str(channel),
                    row["text"],
                    blocks,
                    _facts(one),
                    decode_attachments(row.get("attachments")),
                )
            )
    for i, message in enumerate(batches):
        keys = message.keys
        try:
            ts = send(message)
        except SendError as exc:
            # The service may have it anyway (a lost answer): Slack looks it up on the next
            # try; email and webhooks send it again under the same id.
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
                rest = [k for b in batches[i + 1 :] for k in b.keys]
                release(warehouse, rest, now=now, until=now + backoff(1))
                result.failed += rest
                break
            continue
        record_sent(warehouse, keys, now=now, ts=ts, dry_run=dry_run, transport=transport)
        result.sent += keys
        result.messages += 1
        result.digests += int(len(keys) > 1)
    return result


def _attachments(rows: pd.DataFrame) -> pd.Series:
    """Each row's `attachments` column value (None on rows from before the column)."""
    if "attachments" not in rows:
        return pd.Series(None, index=rows.index, dtype=object)
    return rows["attachments"].where(rows["attachments"].notna(), None)


def _facts(rows: pd.DataFrame) -> list[dict]:
    """What a message says about its rows' facts (older rows have no `fact_key`: their key)."""
    fact_key = rows["fact_key"].fillna(rows["alert_key"])
    out = rows[["tenant_id", "period", "kind", "ref", "day"]].assign(fact_key=fact_key)
    out["day"] = [None if pd.isna(d) else str(d)[:10] for d in out["day"]]
    return out.to_dict("records")


def _settle_tried(
    warehouse: Warehouse,
    claimed: pd.DataFrame,
    find: Finder,
    now: datetime,
    result: DrainResult,
    max_attempts: int,
    transport: str,
) -> pd.DataFrame:
    """Record as sent the tried rows the channel already has; back off those whose history
    cannot be read (sending blind could send twice). Return the rows left to send."""
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
        _record_found(warehouse, found, now, result, transport)
        settled.update(found)
    return claimed[~claimed["alert_key"].isin(settled)]


def _record_found(
    warehouse: Warehouse, found: dict[str, str], now: datetime, result: DrainResult, transport: str
) -> None:
    by_ts: dict[str, list[str]] = defaultdict(list)
    for key, ts in found.items():
        by_ts[ts].append(key)
    for ts, keys in by_ts.items():
        record_sent(warehouse, keys, now=now, ts=ts, dry_run=False, transport=transport)
        result.sent += keys
        result.found += keys


def _since(group: pd.DataFrame) -> datetime:
    """Where a history search for these rows starts: their first attempt, less a margin."""
    first = pd.to_datetime(group["first_attempt_at"], utc=True).min()
    return first.to_pydatetime() - HISTORY_MARGIN
