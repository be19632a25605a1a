"""The billing ledger's storage: read it, upsert rows under the ledger lock, close periods.

What the rows mean and how a run moves them is told in `lib.billing_ledger`.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cost_pipeline.catalog import BILLING_LEDGER, BILLING_PERIOD_CLOSE
from cost_pipeline.lib.billing_ledger import LOCK_KEY
from cost_pipeline.store.warehouse import Warehouse

OPTIONAL_STAMPS = ("event_timestamp", "first_attempt_at", "released_at")


def read_ledger(warehouse: Warehouse, conn: Connection | None = None) -> pd.DataFrame:
    table = warehouse.table(BILLING_LEDGER)
    if conn is None:
        return warehouse.read(BILLING_LEDGER)
    return BILLING_LEDGER.conform(pd.read_sql(sa.select(table), conn))


def upsert_rows(warehouse: Warehouse, conn: Connection, rows: pd.DataFrame) -> None:
    if rows.empty:
        return
    table = warehouse.table(BILLING_LEDGER)
    conn.execute(table.delete().where(table.c.identifier.in_(list(rows["identifier"]))))
    # Work around `warehouse._records` passing NaT through when a datetime column mixes nulls
    # and values: insert each pattern of null / set optional timestamps separately.
    stamped = pd.DataFrame(
        {c: pd.to_datetime(rows[c], utc=True).notna().to_numpy() for c in OPTIONAL_STAMPS}
    )
    for _, index in stamped.groupby(list(OPTIONAL_STAMPS)).groups.items():
        warehouse.append(BILLING_LEDGER, rows.iloc[list(index)], conn=conn)


def record_row(warehouse: Warehouse, row: pd.Series, **changes: object) -> pd.Series:
    updated = row.copy()
    for k, v in changes.items():
        updated[k] = v
    with warehouse.transaction(LOCK_KEY) as conn:
        upsert_rows(warehouse, conn, updated.to_frame().T)
    return updated


def closed_keys(warehouse: Warehouse) -> set[tuple[str, str]]:
    closed = warehouse.read(BILLING_PERIOD_CLOSE, columns=["tenant_id", "period"])
    return set(zip(closed["tenant_id"], closed["period"], strict=True))


def close_period(warehouse: Warehouse, reconciliation: pd.DataFrame, *, now: datetime) -> int:
    """Mark a reconciled period closed for its tenants (replacing any earlier close rows)."""
    rows = reconciliation[["period", "tenant_id", "computed_cents", "reported_cents"]]
    rows = rows.assign(closed_at=now)
    periods = sorted(set(rows["period"]))
    return warehouse.replace_where(BILLING_PERIOD_CLOSE, {"period": periods}, rows)
