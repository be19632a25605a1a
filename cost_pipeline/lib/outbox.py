"""The alert outbox: every alert is a row keyed by its fact, so it is sent once and never lost.

Key: `alert_key(tenant, period, kind, ref)` where `ref` is the threshold, the anomaly id or the
run id. Life of a row:

    pending --claim--> sending --send ok--> sent | dry_run
                          |--send failed--> pending (attempts + 1, next_attempt_at backed off)
                          |                 or failed once `max_attempts` is reached
    pending --a higher threshold of the same tenant and period arrives--> superseded

`enqueue` inserts only facts not seen before (a re-run of the whole month adds nothing) and
keeps only the highest budget threshold of a tenant and period. `claim` moves due rows to
`sending` under a lock, so two runs never send the same row. A crash between Slack's answer and
`record_*` leaves a row in `sending`; after `lease` it is claimed again — the one case where an
alert can be sent twice (at-least-once in that window, never lost).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import ALERT_OUTBOX
from cost_pipeline.lib.warehouse import Warehouse

LOCK = "alert_outbox"
THRESHOLD_KIND = "budget_threshold"
DONE = ("sent", "dry_run")


def alert_key(tenant_id: str, period: str, kind: str, ref: str | float) -> str:
    if isinstance(ref, float):
        ref = f"{ref:g}"
    return f"{tenant_id}:{period}:{kind}:{ref}"


def backoff(attempts: int, *, base: float = 60.0, cap: float = 3600.0) -> timedelta:
    """Delay before the next try after `attempts` failed ones: base * 2^(n-1), capped."""
    return timedelta(seconds=min(cap, base * 2 ** max(attempts - 1, 0)))


@dataclass
class EnqueueResult:
    inserted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


def enqueue(warehouse: Warehouse, alerts: pd.DataFrame, *, now: datetime) -> EnqueueResult:
    """Insert new alert facts as `pending`; return what was inserted, skipped and superseded.

    `alerts` has tenant_id, period, kind, ref, day, channel, text, blocks. A budget threshold
    at or below one already recorded for the tenant and period is skipped; a pending lower one
    is superseded (nobody needs "50 %" once "90 %" is known).
    """
    result = EnqueueResult()
    if alerts.empty:
        return result
    df = alerts.copy()
    df["ref"] = df["ref"].map(lambda r: f"{r:g}" if isinstance(r, float) else str(r))
    df["alert_key"] = [
        alert_key(*k)
        for k in zip(df["tenant_id"], df["period"], df["kind"], df["ref"], strict=True)
    ]
    is_thr = df["kind"] == THRESHOLD_KIND
    df["_level"] = pd.to_numeric(df["ref"].where(is_thr), errors="coerce")
    # Within one batch only the highest threshold of a tenant and period survives.
    top = df[is_thr].groupby(["tenant_id", "period"])["_level"].transform("max")
    stale_in_batch = df.index[is_thr][df.loc[is_thr, "_level"] < top]
    result.skipped += df.loc[stale_in_batch, "alert_key"].tolist()
    df = df.drop(stale_in_batch).drop_duplicates("alert_key")
    table = warehouse.table(ALERT_OUTBOX)
    with warehouse.transaction(LOCK) as conn:
        existing = pd.DataFrame(
            conn.execute(
                sa.select(
                    table.c.alert_key,
                    table.c.tenant_id,
                    table.c.period,
                    table.c.kind,
                    table.c.ref,
                    table.c.status,
                )
                .where(table.c.tenant_id.in_(df["tenant_id"].unique().tolist()))
                .where(table.c.period.in_(df["period"].unique().tolist()))
            ).all(),
            columns=["alert_key", "tenant_id", "period", "kind", "ref", "status"],
        )
        known = df["alert_key"].isin(existing["alert_key"])
        thr_old = existing[
            (existing["kind"] == THRESHOLD_KIND) & (existing["status"] != "superseded")
        ]
        thr_old = thr_old.assign(level=pd.to_numeric(thr_old["ref"], errors="coerce"))
        old_max = thr_old.groupby(["tenant_id", "period"])["level"].max()
        prior = pd.Series(
            [old_max.get((t, p)) for t, p in zip(df["tenant_id"], df["period"], strict=True)],
            index=df.index,
            dtype="float64",
        )
        below = (df["kind"] == THRESHOLD_KIND) & prior.notna() & (df["_level"] <= prior)
        result.skipped += df.loc[known | below, "alert_key"].tolist()
        new = df[~known & ~below]
        if new.empty:
            return result
        # Pending lower thresholds of the same tenant and period are stale now.
        new_max = new[new["kind"] == THRESHOLD_KIND].set_index(["tenant_id", "period"])["_level"]
        pending = thr_old[thr_old["status"] == "pending"]
        is_stale = [
            (t, p) in new_max.index and lvl < new_max[(t, p)]
            for t, p, lvl in zip(
                pending["tenant_id"], pending["period"], pending["level"], strict=True
            )
        ]
        stale = pending.loc[pd.Series(is_stale, index=pending.index, dtype=bool), "alert_key"]
        stale = stale.tolist()
        if stale:
            conn.execute(
                table.update()
                .where(table.c.alert_key.in_(stale))
                .values(status="superseded", updated_at=now)
            )
        result.superseded += stale
        rows = new.drop(columns=["_level"]).assign(
            status="pending", attempts=0, next_attempt_at=now, created_at=now, updated_at=now
        )
        warehouse.append(ALERT_OUTBOX, rows, conn=conn)
        result.inserted += rows["alert_key"].tolist()
    return result


def claim(
    warehouse: Warehouse,
    *,
    now: datetime,
    limit: int = 500,
    lease: timedelta = timedelta(minutes=15),
) -> pd.DataFrame:
    """Move due `pending` rows (and `sending` rows whose claim outlived `lease`) to `sending`."""
    table = warehouse.table(ALERT_OUTBOX)
    token = uuid.uuid4().hex
    due = sa.or_(
        sa.and_(table.c.status == "pending", table.c.next_attempt_at <= now),
        sa.and_(table.c.status == "sending", table.c.updated_at <= now - lease),
    )
    with warehouse.transaction(LOCK) as conn:
        keys = [
            r[0]
            for r in conn.execute(
                sa.select(table.c.alert_key).where(due).order_by(table.c.created_at).limit(limit)
            ).all()
        ]
        if not keys:
            return ALERT_OUTBOX.empty_frame()
        conn.execute(
            table.update()
            .where(table.c.alert_key.in_(keys))
            .values(status="sending", claim_token=token, updated_at=now)
        )
    return warehouse.read(ALERT_OUTBOX, where={"claim_token": [token]})


def record_sent(
    warehouse: Warehouse, keys: list[str], *, now: datetime, ts: str | None, dry_run: bool
) -> None:
    table = warehouse.table(ALERT_OUTBOX)
    with warehouse.transaction(LOCK) as conn:
        conn.execute(
            table.update()
            .where(table.c.alert_key.in_(keys))
            .values(
                status="dry_run" if dry_run else "sent",
                sent_at=now,
                slack_ts=ts,
                updated_at=now,
                last_error=None,
            )
        )


def record_failure(
    warehouse: Warehouse,
    keys: list[str],
    *,
    now: datetime,
    error: str,
    retryable: bool = True,
    max_attempts: int = 8,
) -> None:
    """Count one failed attempt; back off, or give up (`failed`) when out of attempts."""
    table = warehouse.table(ALERT_OUTBOX)
    with warehouse.transaction(LOCK) as conn:
        rows = conn.execute(
            sa.select(table.c.alert_key, table.c.attempts).where(table.c.alert_key.in_(keys))
        ).all()
        for key, attempts in rows:
            n = int(attempts) + 1
            give_up = not retryable or n >= max_attempts
            conn.execute(
                table.update()
                .where(table.c.alert_key == key)
                .values(
                    status="failed" if give_up else "pending",
                    attempts=n,
                    next_attempt_at=now + backoff(n),
                    last_error=error[:500],
                    updated_at=now,
                )
            )


def release(warehouse: Warehouse, keys: list[str], *, now: datetime, until: datetime) -> None:
    """Give claimed rows back as `pending` without counting an attempt (they were not tried)."""
    if not keys:
        return
    table = warehouse.table(ALERT_OUTBOX)
    with warehouse.transaction(LOCK) as conn:
        conn.execute(
            table.update()
            .where(table.c.alert_key.in_(keys))
            .values(status="pending", next_attempt_at=until, updated_at=now)
        )


class SendError(Exception):
    """A message could not be delivered; `retryable` says whether trying later may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


# send(channel, text, blocks) -> message ts (None in dry-run); raises SendError.
Sender = Callable[[str, str, list[dict]], str | None]
DigestBuilder = Callable[[pd.DataFrame], tuple[str, list[dict]]]


@dataclass
class DrainResult:
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    messages: int = 0
    digests: int = 0


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


def unseen(warehouse: Warehouse, facts: pd.DataFrame) -> pd.DataFrame:
    """The facts (tenant_id, period, kind, ref) the outbox does not know yet — what a sensor
    should request a run for. A budget threshold at or below a recorded one is not new."""
    if facts.empty:
        return facts
    existing = warehouse.read(
        ALERT_OUTBOX,
        where={"tenant_id": facts["tenant_id"].unique().tolist()},
        columns=["alert_key", "tenant_id", "period", "kind", "ref", "status"],
    )
    keys = [
        alert_key(*k)
        for k in zip(facts["tenant_id"], facts["period"], facts["kind"], facts["ref"], strict=True)
    ]
    known = pd.Series(keys, index=facts.index).isin(existing["alert_key"])
    thr = existing[(existing["kind"] == THRESHOLD_KIND) & (existing["status"] != "superseded")]
    top = (
        thr.assign(level=pd.to_numeric(thr["ref"], errors="coerce"))
        .groupby(["tenant_id", "period"])["level"]
        .max()
    )
    prior = pd.Series(
        [top.get((t, p)) for t, p in zip(facts["tenant_id"], facts["period"], strict=True)],
        index=facts.index,
        dtype="float64",
    )
    level = pd.to_numeric(facts["ref"], errors="coerce")
    below = (facts["kind"] == THRESHOLD_KIND) & prior.notna() & (level <= prior)
    return facts[~known & ~below]


def due_fingerprint(warehouse: Warehouse, *, now: datetime) -> tuple[int, str]:
    """How many rows are due to send, and a fingerprint that changes whenever that set or its
    attempts change (a deterministic run key for the drain run)."""
    table = warehouse.table(ALERT_OUTBOX)
    stmt = sa.select(table.c.alert_key, table.c.attempts, table.c.updated_at).where(
        table.c.status == "pending", table.c.next_attempt_at <= now
    )
    with warehouse.engine.connect() as conn:
        rows = sorted((str(k), int(a), str(u)) for k, a, u in conn.execute(stmt).all())
    return len(rows), hashlib.sha1(repr(rows).encode()).hexdigest()[:16]
