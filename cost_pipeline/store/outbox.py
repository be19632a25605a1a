"""The alert outbox's storage: enqueue facts once per channel, claim due rows of a channel under
a lock, record outcomes.

The life of a row and why it is sent once on each channel is told in `lib.outbox`; this module is
the SQL. Rows from before email and webhooks have no `fact_key` / `transport`: they are Slack rows
whose fact key is their `alert_key`.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import ALERT_OUTBOX
from cost_pipeline.lib.outbox import (
    LEASE,
    LOCK,
    SLACK,
    THRESHOLD_KIND,
    EnqueueResult,
    alert_key,
    backoff,
    new_episodes,
    row_key,
)
from cost_pipeline.store.warehouse import Warehouse


def enqueue(warehouse: Warehouse, alerts: pd.DataFrame, *, now: datetime) -> EnqueueResult:
    """Insert new alert facts as `pending`; return the row keys inserted, skipped and superseded.

    `alerts` has tenant_id, period, kind, ref, day, channel, text, blocks and, once routed
    (`lib.outbox.route_alerts`), transport (absent: Slack): one row per fact and channel. A
    fact already recorded on any channel, or a budget threshold at or below one already recorded
    for the tenant and period, is skipped; a pending lower one is superseded (nobody needs
    "50 %" once "90 %" is known).
    """
    result = EnqueueResult()
    if alerts.empty:
        return result
    df = alerts.copy()
    df["ref"] = df["ref"].map(lambda r: f"{r:g}" if isinstance(r, float) else str(r))
    if "transport" not in df:
        df["transport"] = SLACK
    df["transport"] = df["transport"].fillna(SLACK)
    df["fact_key"] = [
        alert_key(*k)
        for k in zip(df["tenant_id"], df["period"], df["kind"], df["ref"], strict=True)
    ]
    df["alert_key"] = [row_key(f, t) for f, t in zip(df["fact_key"], df["transport"], strict=True)]
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
                    sa.func.coalesce(table.c.fact_key, table.c.alert_key),
                    table.c.tenant_id,
                    table.c.period,
                    table.c.kind,
                    table.c.ref,
                    table.c.status,
                )
                .where(table.c.tenant_id.in_(df["tenant_id"].unique().tolist()))
                .where(table.c.period.in_(df["period"].unique().tolist()))
            ).all(),
            columns=["alert_key", "fact_key", "tenant_id", "period", "kind", "ref", "status"],
        )
        # A fact recorded on any channel is not new: a channel routed later does not replay it.
        known = df["fact_key"].isin(existing["fact_key"])
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


def _due(table: sa.Table, now: datetime, lease: timedelta) -> sa.ColumnElement[bool]:
    """Due: `pending` past its backoff, or `sending` whose claim outlived `lease` (a dead run)."""
    return sa.or_(
        sa.and_(table.c.status == "pending", table.c.next_attempt_at <= now),
        sa.and_(table.c.status == "sending", table.c.updated_at <= now - lease),
    )


def _on(table: sa.Table, transport: str) -> sa.ColumnElement[bool]:
    """Rows of one channel; a row without `transport` predates the others and is Slack's."""
    if transport == SLACK:
        return sa.or_(table.c.transport == SLACK, table.c.transport.is_(None))
    return table.c.transport == transport


def claim(
    warehouse: Warehouse,
    *,
    now: datetime,
    transport: str = SLACK,
    limit: int = 500,
    lease: timedelta = LEASE,
) -> pd.DataFrame:
    """Move due rows of `transport` to `sending` and return them, with `verify` True for the rows
    tried before (their outcome may be unknown: on Slack, look them up before sending again)."""
    table = warehouse.table(ALERT_OUTBOX)
    token = uuid.uuid4().hex
    with warehouse.transaction(LOCK) as conn:
        due = conn.execute(
            sa.select(table.c.alert_key, table.c.first_attempt_at)
            .where(_due(table, now, lease), _on(table, transport))
            .order_by(table.c.created_at)
            .limit(limit)
        ).all()
        if not due:
            return ALERT_OUTBOX.empty_frame().assign(verify=pd.Series(dtype=bool))
        keys = [k for k, _ in due]
        tried = {k for k, first in due if first is not None}
        conn.execute(
            table.update()
            .where(table.c.alert_key.in_(keys))
            .values(status="sending", claim_token=token, updated_at=now)
        )
        conn.execute(
            table.update()
            .where(table.c.alert_key.in_(keys), table.c.first_attempt_at.is_(None))
            .values(first_attempt_at=now)
        )
    claimed = warehouse.read(ALERT_OUTBOX, where={"claim_token": [token]})
    return claimed.assign(verify=claimed["alert_key"].isin(tried))


def record_sent(
    warehouse: Warehouse,
    keys: list[str],
    *,
    now: datetime,
    ts: str | None,
    dry_run: bool,
    transport: str = SLACK,
) -> None:
    """Record `keys` delivered with receipt `ts` — the Slack message's ts, the email's
    Message-ID, the webhook's event id — or as `dry_run`."""
    if not keys:
        return
    table = warehouse.table(ALERT_OUTBOX)
    with warehouse.transaction(LOCK) as conn:
        conn.execute(
            table.update()
            .where(table.c.alert_key.in_(keys))
            .values(
                status="dry_run" if dry_run else "sent",
                sent_at=now,
                slack_ts=ts if transport == SLACK else None,
                receipt=ts,
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


def unseen(warehouse: Warehouse, facts: pd.DataFrame) -> pd.DataFrame:
    """The facts (tenant_id, period, kind, ref) the outbox does not know yet — what a sensor
    should request a run for. A budget threshold at or below a recorded one is not new."""
    if facts.empty:
        return facts
    existing = warehouse.read(
        ALERT_OUTBOX,
        where={"tenant_id": facts["tenant_id"].unique().tolist()},
        columns=["alert_key", "fact_key", "tenant_id", "period", "kind", "ref", "status"],
    )
    keys = [
        alert_key(*k)
        for k in zip(facts["tenant_id"], facts["period"], facts["kind"], facts["ref"], strict=True)
    ]
    # A fact is known once any channel has its row (older Slack rows: their own key).
    known_facts = existing["fact_key"].fillna(existing["alert_key"])
    known = pd.Series(keys, index=facts.index).isin(known_facts)
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
    fresh = facts[~known & ~below]
    # One incident, one message: an anomaly of an episode already alerted is not new.
    return fresh[new_episodes(fresh, existing)]


def due_fingerprint(
    warehouse: Warehouse, *, now: datetime, lease: timedelta = LEASE
) -> tuple[int, str]:
    """How many rows are due to send — `pending` past backoff or `sending` past its lease — and
    a fingerprint that changes whenever that set, its attempts or its claims change (a
    deterministic run key for the drain run)."""
    table = warehouse.table(ALERT_OUTBOX)
    stmt = sa.select(table.c.alert_key, table.c.status, table.c.attempts, table.c.updated_at).where(
        _due(table, now, lease)
    )
    with warehouse.engine.connect() as conn:
        rows = sorted((str(k), str(s), int(a), str(u)) for k, s, a, u in conn.execute(stmt).all())
    return len(rows), hashlib.sha1(repr(rows).encode()).hexdigest()[:16]
