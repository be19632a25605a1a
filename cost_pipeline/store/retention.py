"""Retention: dropping whole days of a table past its limit, only once they are summarized.

A day of `priced_interactions` counts as summarized when `daily_cost_summary`'s LLM rows of
that day hold exactly its calls and cost (so a day that took late calls after its summary was
built is kept until it is rebuilt); a day of any other table when the summary has the day. The
drop and its `retention_log` row are one transaction. On Postgres a day-partitioned table's
partition is emptied (TRUNCATE), kept so that nothing can fail on a missing partition.
"""

from __future__ import annotations

import json
from datetime import date, datetime

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import DAILY_COST_SUMMARY, RETENTION_LOG
from cost_pipeline.lib.schemas import TableSchema
from cost_pipeline.store import queries
from cost_pipeline.store.warehouse import Warehouse, partition_name


def days_before(warehouse: Warehouse, schema: TableSchema, before: date) -> pd.DataFrame:
    """The days of `schema` before `before` that still hold rows, with their row counts."""
    table = warehouse.table(schema)
    day = table.c["day"]
    stmt = sa.select(day.label("day"), sa.func.count().label("rows")).where(day < before)
    with warehouse.connect() as conn:
        rows = conn.execute(stmt.group_by(day).order_by(day)).all()
    return pd.DataFrame(
        [(pd.Timestamp(r.day).date(), int(r.rows)) for r in rows], columns=["day", "rows"]
    )


def summarized(warehouse: Warehouse, table: str, day: date) -> tuple[bool, dict]:
    """Whether `day` of `table` is summarized, and the figures that say so."""
    if table == "priced_interactions":
        totals = queries.priced_and_summary_totals(warehouse, day)
        ok = totals["priced_calls"] == totals["summary_requests"] and (
            abs(totals["priced_cost_usd"] - totals["summary_llm_cost_usd"]) <= 1e-6
        )
        return ok, totals
    rows = warehouse.count(DAILY_COST_SUMMARY, days=[day])
    return rows > 0, {"summary_rows": rows}


def drop_day(
    warehouse: Warehouse,
    schema: TableSchema,
    day: date,
    *,
    retention_days: int,
    evidence: dict,
    now: datetime,
) -> int:
    """Drop `day` of `schema` and record it in `retention_log`, in one transaction."""
    table = warehouse.table(schema)
    column = "day"
    log = warehouse.table(RETENTION_LOG)
    with warehouse.transaction(lock_key=f"{schema.name}:day={day}") as conn:
        if schema.day_partitioned and warehouse.is_postgres:
            dropped = conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c[column] == day)
            ).scalar_one()
            conn.exec_driver_sql(f"TRUNCATE {partition_name(schema.name, day)}")
        else:
            dropped = conn.execute(table.delete().where(table.c[column] == day)).rowcount or 0
        conn.execute(log.delete().where(log.c.table_name == schema.name, log.c.day == day))
        warehouse.append(
            RETENTION_LOG,
            pd.DataFrame(
                [
                    {
                        "table_name": schema.name,
                        "day": day,
                        "rows_dropped": int(dropped),
                        "dropped_at": now,
                        "retention_days": retention_days,
                        "evidence": json.dumps(evidence, sort_keys=True, default=str),
                    }
                ]
            ),
            conn=conn,
        )
    return int(dropped)
