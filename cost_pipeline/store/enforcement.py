"""Storage of the enforcement decision: live spend counters, overrides, suspensions, the audit.

`refresh_counters` runs inside the ingestion's transaction: for every UTC day the load touched it
recomputes that day's `spend_counters` rows from the stored calls (so duplicates, restatements
and re-pricing are counted exactly as the ledger counts them), grouped in the database by
15-minute bucket so each bucket falls wholly in one local month of any real time zone.

`tenant_state` is the cold read of `decide`: a handful of indexed queries for one tenant.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cost_pipeline.catalog import (
    CONFIG_SNAPSHOTS,
    COUNTER_REFRESHES,
    ENFORCEMENT_ACTIONS,
    ENFORCEMENT_AUDIT,
    SPEND_COUNTERS,
)
from cost_pipeline.lib.enforcement import SCOPES, Action, TenantSpend
from cost_pipeline.lib.periods import local_period_keys
from cost_pipeline.lib.pricing import UNPRICED_STATUSES
from cost_pipeline.store.warehouse import Warehouse

BUCKET_SECONDS = 900  # every real UTC offset is a multiple of 15 minutes
_UNPRICED = "(" + ", ".join(f"'{s}'" for s in UNPRICED_STATUSES) + ")"


def _bucket_sql(warehouse: Warehouse) -> str:
    if warehouse.is_postgres:
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM occurred_at) / {BUCKET_SECONDS}) AS BIGINT)"
    return f"CAST(strftime('%s', occurred_at) AS INTEGER) / {BUCKET_SECONDS}"


def refresh_counters(
    warehouse: Warehouse,
    conn: Connection,
    days: Sequence[date],
    zones: Mapping[str, str],
    *,
    source: str | None,
    refreshed_at: datetime | None = None,
    scopes: Sequence[str] = ("tenant", "agent", "model", "provider"),
) -> int:
    """Recompute `spend_counters` of `days` from `priced_interactions`, inside `conn`'s
    transaction, and mark `source` refreshed at `refreshed_at` (an ingestion says the counters
    are current; a re-pricing of one day passes no source). Returns the rows written.

    `zones` maps tenant id to its time zone (a tenant not configured counts in UTC); `scopes`
    are those to count (`lib.enforcement.counted_scopes`)."""
    table = warehouse.table(SPEND_COUNTERS)
    written = 0
    if days:
        keys = ", ".join(SCOPES[s] for s in SCOPES if s in scopes and SCOPES[s])
        # A UTC day is in one local month in every zone (offsets within +-14 h) unless it is
        # a month's first or last day: only those are split into 15-minute buckets.
        edges = [d for d in days if d.day == 1 or (d + timedelta(days=1)).day == 1]
        inner = [d for d in days if d not in edges]
        parts = [
            _day_groups(conn, keys, edges, _bucket_sql(warehouse)),
            _day_groups(conn, keys, inner, None),
        ]
        groups = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
        rows = counter_rows(groups, zones)
        conn.execute(table.delete().where(table.c.day.in_(list(days))))
        written = warehouse.append(SPEND_COUNTERS, rows, conn=conn)
    if source is None:
        return written
    refreshes = warehouse.table(COUNTER_REFRESHES)
    conn.execute(refreshes.delete().where(refreshes.c.source == source))
    warehouse.append(
        COUNTER_REFRESHES,
        pd.DataFrame([{"source": source, "refreshed_at": refreshed_at}]),
        conn=conn,
    )
    return written


def _day_groups(
    conn: Connection, keys: str, days: Sequence[date], bucket_sql: str | None
) -> pd.DataFrame:
    """Calls of `days` grouped by day, tenant, the scope columns `keys` and the 15-minute
    bucket `b` (`bucket_sql`), or without `bucket_sql` by day only, `b` then the bucket of the
    day's noon (UTC), which is in the day's one local month everywhere."""
    if not days:
        return pd.DataFrame()
    bucket = bucket_sql or "0"
    groups = pd.read_sql(
        sa.text(
            f"SELECT day, tenant_id, {keys}, {bucket} AS b, COUNT(*) AS calls, "
            f"SUM(CASE WHEN pricing_status IN {_UNPRICED} THEN 0 ELSE cost_usd END) AS cost, "
            f"SUM(CASE WHEN pricing_status IN {_UNPRICED} THEN 1 ELSE 0 END) AS unpriced "
            "FROM priced_interactions WHERE day IN :days "
            f"GROUP BY day, tenant_id, {keys}{', b' if bucket_sql else ''}"
        ).bindparams(sa.bindparam("days", expanding=True)),
        conn,
        params={"days": list(days)},
    )
    if bucket_sql is None and len(groups):
        day = pd.to_datetime(groups["day"].astype(str))
        noon = (day - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1) + 12 * 3600
        groups["b"] = noon // BUCKET_SECONDS
    return groups


def counter_rows(groups: pd.DataFrame, zones: Mapping[str, str]) -> pd.DataFrame:
    """`spend_counters` rows from calls grouped by day, tenant, agent, model, provider, end user
    and 15-minute bucket: one row per day, tenant, local month and scope."""
    columns = SPEND_COUNTERS.column_names
    if groups.empty:
        return pd.DataFrame(columns=columns)
    g = groups.copy()
    g["tz"] = g["tenant_id"].map(zones).fillna("UTC")
    g["cost"] = pd.to_numeric(g["cost"]).fillna(0.0)
    # The local month of each (zone, bucket), computed once per pair, not per row.
    pairs = g[["tz", "b"]].drop_duplicates().reset_index(drop=True)
    start = pd.to_datetime(pairs["b"].astype("int64") * BUCKET_SECONDS, unit="s", utc=True)
    pairs["period"] = local_period_keys(start, pairs["tz"])
    g = g.merge(pairs, on=["tz", "b"], how="left")
    frames = []
    for scope, column in SCOPES.items():
        if column and column not in g.columns:
            continue  # a scope not counted
        keys = ["day", "tenant_id", "period"] + ([column] if column else [])
        part = g.groupby(keys, as_index=False, dropna=False).agg(
            cost_usd=("cost", "sum"), calls=("calls", "sum"), unpriced_calls=("unpriced", "sum")
        )
        value = part[column].fillna("").astype(str) if column else ""
        part = part.assign(scope=scope, scope_value=value)
        frames.append(part if not column else part[part["scope_value"] != ""])
    return pd.concat(frames, ignore_index=True)[columns]


def tenant_state(
    warehouse: Warehouse, tenant_id: str, period: str, source: str, today: date | None = None
) -> TenantSpend:
    """Everything `decide` needs about one tenant's spend in local month `period`; a warehouse
    that cannot answer (down, not migrated) gives an unknown state that names the error."""
    try:
        return _tenant_state(warehouse, tenant_id, period, source, today)
    except sa.exc.SQLAlchemyError as exc:
        reason = str(exc.orig if getattr(exc, "orig", None) else exc).splitlines()[0]
        return TenantSpend(tenant_id=tenant_id, period=period, error=reason)


def _tenant_state(
    warehouse: Warehouse, tenant_id: str, period: str, source: str, today: date | None
) -> TenantSpend:
    with warehouse.connect() as conn:
        day_usd = conn.execute(
            sa.text(
                "SELECT SUM(cost_usd) FROM spend_counters WHERE tenant_id = :t AND day = :d "
                "AND scope = 'tenant'"
            ),
            {"t": tenant_id, "d": today or datetime.now(UTC).date()},
        ).scalar()
        spend = conn.execute(
            sa.text(
                "SELECT scope, scope_value, SUM(cost_usd) AS cost, SUM(calls) AS calls, "
                "SUM(unpriced_calls) AS unpriced FROM spend_counters "
                "WHERE tenant_id = :t AND period = :p GROUP BY scope, scope_value"
            ),
            {"t": tenant_id, "p": period},
        ).all()
        other = conn.execute(
            sa.text(
                "SELECT other_cost_usd, day FROM budget_status WHERE tenant_id = :t "
                "AND period = :p ORDER BY day DESC LIMIT 1"
            ),
            {"t": tenant_id, "p": period},
        ).first()
        refreshed = conn.execute(
            sa.text("SELECT refreshed_at FROM counter_refreshes WHERE source = :s"),
            {"s": source},
        ).scalar()
        actions = conn.execute(
            sa.text(
                "SELECT action_id, kind, scope, scope_value, reason, actor, created_at, "
                "expires_at FROM enforcement_actions WHERE tenant_id = :t AND revoked_at IS NULL"
            ),
            {"t": tenant_id},
        ).all()
    return TenantSpend(
        tenant_id=tenant_id,
        period=period,
        llm_usd={(r.scope, r.scope_value): float(r.cost or 0) for r in spend},
        unpriced_calls={(r.scope, r.scope_value): int(r.unpriced or 0) for r in spend},
        other_usd=float(other.other_cost_usd or 0) if other is not None else 0.0,
        day_usd=float(day_usd or 0),
        refreshed_at=_aware(refreshed),
        actions=tuple(
            Action(
                action_id=a.action_id,
                kind=a.kind,
                scope=a.scope,
                scope_value=a.scope_value,
                reason=a.reason,
                actor=a.actor,
                created_at=_aware(a.created_at),
                expires_at=_aware(a.expires_at),
            )
            for a in actions
        ),
    )


def _aware(value: object) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    stamp = pd.Timestamp(value)
    return (
        stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    ).to_pydatetime()


def record_action(
    warehouse: Warehouse,
    *,
    kind: str,
    tenant_id: str,
    scope: str,
    scope_value: str,
    reason: str,
    actor: str,
    expires_at: datetime | None,
    now: datetime,
) -> str:
    """Store an override or a suspension and its audit row together; return its id."""
    action_id = uuid.uuid4().hex[:12]
    row = {
        "action_id": action_id,
        "kind": kind,
        "tenant_id": tenant_id,
        "scope": scope,
        "scope_value": scope_value,
        "reason": reason,
        "actor": actor,
        "created_at": now,
        "expires_at": expires_at,
        "revoked_at": None,
        "revoked_by": None,
    }
    with warehouse.transaction(lock_key="enforcement_actions") as conn:
        warehouse.append(ENFORCEMENT_ACTIONS, pd.DataFrame([row]), conn=conn)
        _audit(
            warehouse,
            conn,
            now=now,
            actor=actor,
            action="override" if kind == "override" else "suspend",
            tenant_id=tenant_id,
            subject=_subject(scope, scope_value),
            old=None,
            new={
                "action_id": action_id,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
            reason=reason,
        )
    return action_id


def revoke_action(
    warehouse: Warehouse, action_id: str, *, actor: str, reason: str, now: datetime
) -> bool:
    """Revoke an override or suspension (audited); False if there was nothing to revoke."""
    table = warehouse.table(ENFORCEMENT_ACTIONS)
    with warehouse.transaction(lock_key="enforcement_actions") as conn:
        found = conn.execute(
            sa.select(table).where(table.c.action_id == action_id, table.c.revoked_at.is_(None))
        ).first()
        if found is None:
            return False
        conn.execute(
            table.update()
            .where(table.c.action_id == action_id)
            .values(revoked_at=now, revoked_by=actor)
        )
        _audit(
            warehouse,
            conn,
            now=now,
            actor=actor,
            action="revoke",
            tenant_id=found.tenant_id,
            subject=_subject(found.scope, found.scope_value),
            old={"action_id": action_id, "kind": found.kind},
            new=None,
            reason=reason,
        )
    return True


def _audit(
    warehouse: Warehouse,
    conn: Connection,
    *,
    now: datetime,
    actor: str,
    action: str,
    tenant_id: str | None,
    subject: str,
    old: object,
    new: object,
    reason: str | None,
) -> None:
    warehouse.append(
        ENFORCEMENT_AUDIT,
        pd.DataFrame(
            [
                {
                    "at": now,
                    "actor": actor,
                    "action": action,
                    "tenant_id": tenant_id,
                    "subject": subject,
                    "old_value": None if old is None else json.dumps(old, sort_keys=True),
                    "new_value": None if new is None else json.dumps(new, sort_keys=True),
                    "reason": reason,
                }
            ]
        ),
        conn=conn,
    )


def _subject(scope: str, value: str) -> str:
    return "tenant" if scope == "tenant" else f"{scope}:{value}"


def audit_rows(warehouse: Warehouse, *, since: datetime | None = None) -> pd.DataFrame:
    """The audit, newest first."""
    frame = warehouse.read(ENFORCEMENT_AUDIT)
    if since is not None:
        frame = frame[pd.to_datetime(frame["at"], utc=True) >= pd.Timestamp(since)]
    return frame.sort_values("at", ascending=False, ignore_index=True)


def counters_against_calls(warehouse: Warehouse, day: date) -> pd.DataFrame:
    """Per tenant, the day's priced cost and calls in `spend_counters` (tenant scope) next to
    the same sums over `priced_interactions`: they must be equal."""
    counters = warehouse.query(
        "SELECT tenant_id, SUM(cost_usd) AS counted_usd, SUM(calls) AS counted_calls "
        "FROM spend_counters WHERE day = :d AND scope = 'tenant' GROUP BY tenant_id",
        {"d": day},
    )
    calls = warehouse.query(
        "SELECT tenant_id, "
        f"SUM(CASE WHEN pricing_status IN {_UNPRICED} THEN 0 ELSE cost_usd END) AS cost_usd, "
        "COUNT(*) AS calls FROM priced_interactions WHERE day = :d GROUP BY tenant_id",
        {"d": day},
    )
    both = calls.merge(counters, on="tenant_id", how="outer")
    for column in ("cost_usd", "calls", "counted_usd", "counted_calls"):
        both[column] = pd.to_numeric(both[column]).astype("float64").fillna(0.0)
    return both.sort_values("tenant_id", ignore_index=True)


def last_config_settings(warehouse: Warehouse) -> dict[str, str] | None:
    """The settings of the newest configuration snapshot (None before the first)."""
    with warehouse.connect() as conn:
        value = conn.execute(
            sa.text("SELECT settings FROM config_snapshots ORDER BY taken_at DESC LIMIT 1")
        ).scalar()
    if value is None:
        return None
    return json.loads(value) if isinstance(value, str) else dict(value)


def record_config(
    warehouse: Warehouse,
    settings: dict[str, str],
    changed: pd.DataFrame,
    *,
    path: str,
    sha256: str,
    now: datetime,
) -> None:
    """Store a new snapshot of the settings and audit each change, in one transaction."""
    with warehouse.transaction(lock_key="config_snapshots") as conn:
        warehouse.append(
            CONFIG_SNAPSHOTS,
            pd.DataFrame(
                [
                    {
                        "taken_at": now,
                        "sha256": sha256,
                        "path": path,
                        "settings": json.dumps(settings, sort_keys=True),
                    }
                ]
            ),
            conn=conn,
        )
        if not changed.empty:
            rows = changed.assign(
                at=now, actor=f"config file {path}", action="config_change", reason=None
            )
            warehouse.append(ENFORCEMENT_AUDIT, rows, conn=conn)


def lacks_user_scope(warehouse: Warehouse, day: date) -> bool:
    """Whether `day` has calls with an end user but no user-scope counters (counted before a
    user limit was configured)."""
    users = warehouse.query(
        "SELECT COUNT(*) AS n FROM priced_interactions WHERE day = :d AND user_id IS NOT NULL "
        "AND user_id <> ''",
        {"d": day},
    )
    counted = warehouse.query(
        "SELECT COUNT(*) AS n FROM spend_counters WHERE day = :d AND scope = 'user'", {"d": day}
    )
    return int(users["n"].iloc[0]) > 0 and int(counted["n"].iloc[0]) == 0
