"""The cost warehouse: the one class that holds the engine, the connections and the locks.

One class, two engines. SQLite is the laptop default; PostgreSQL is production. The rules that
make it safe across processes (every Dagster run, sensor and UI launch is its own process):

- Tables are created and migrated by `migrate()` alone — by `cost-pipeline migrate` and at the
  start of every run — never as a side effect of a read or a write.
- One connection per unit of work, and never a second connection while a lock is held: a write
  that needs to read (re-pricing a day) reads through the connection that holds the lock.
- Every write of a partition is one transaction that first takes a lock on (table, partition):
  an advisory transaction lock on Postgres, SQLite's single write lock (WAL mode, so readers
  never wait for it). Re-running a day any number of times — even twice at once — leaves
  exactly one copy.
- Bulk paths: `COPY ... FROM STDIN` written straight from Arrow on Postgres, `COPY ... TO STDOUT`
  parsed by Arrow on the way out; `executemany` on SQLite.
- Big per-event tables (`TableSchema.day_partitioned`) are declaratively partitioned by day on
  Postgres: replacing a day truncates one partition; ingestion copies straight into the
  partitions of days that hold no rows yet and anti-joins against the others, so dedupe never
  scans another day. Day partitions exist from the configured first day to a week ahead;
  a row outside them fails loudly (the ingester quarantines such rows before they get here).
"""

from __future__ import annotations

import io
import json
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cost_pipeline.catalog import TABLES
from cost_pipeline.lib.schemas import ARROW_TYPES, Column, TableSchema, arrow_schema

WRITE_CHUNK_ROWS = 200_000
PARTITION_DAYS_AHEAD = 7
_PG_UTC_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'

_SA_TYPES: dict[str, Any] = {
    "str": sa.Text,
    "json": sa.Text,
    "int": sa.BigInteger,
    "float": lambda: sa.Float(precision=53),
    "money": lambda: sa.Numeric(20, 9, asdecimal=False),
    "bool": sa.Boolean,
    "date": sa.Date,
    "datetime": lambda: sa.DateTime(timezone=True),
}


def _sa_column(c: Column) -> sa.Column:
    return sa.Column(c.name, _SA_TYPES[c.kind](), nullable=c.nullable, comment=c.doc or None)


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs and metadata."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def partition_name(table: str, day: date) -> str:
    return f"{table}_d{day:%Y%m%d}"


@dataclass
class Restatements:
    """Asks `insert_new` to treat a re-sent key with other content as a restatement.

    A row whose unique key is stored already (on the same day) but whose `compare` columns
    differ replaces the stored row; the stored version is written to `into` (the key columns,
    `revised_at`, `old_content` / `new_content` as JSON of the `compare` columns, and
    `old_` / `new_` `cost_usd` and `source_file`). `by_day` receives the count per day.
    """

    into: TableSchema
    compare: tuple[str, ...]
    revised_at: datetime
    by_day: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_day.values())

    def add(self, day: Any, n: int = 1) -> None:
        if n:
            key = str(day)
            self.by_day[key] = self.by_day.get(key, 0) + n


class Warehouse:
    """Read and write the catalogue's tables through one SQLAlchemy engine."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(
                parents=True, exist_ok=True
            )
        self.engine: Engine = sa.create_engine(url, echo=echo, future=True)
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self.metadata = sa.MetaData()
        self._tables: dict[str, sa.Table] = {}
        # Postgres: the day partitions known to exist, per table (see `_ensure_day_partitions`).
        self._partitions: dict[str, set[date]] = {}

    def __repr__(self) -> str:
        return f"Warehouse({redact_url(self.url)})"

    def dispose(self) -> None:
        self.engine.dispose()

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    # -- catalogue -----------------------------------------------------------------------------

    def table(self, schema: TableSchema | str) -> sa.Table:
        """The SQLAlchemy table of a catalogue entry (no DDL: see `migrate`)."""
        schema = TABLES[schema] if isinstance(schema, str) else schema
        if schema.name not in self._tables:
            table = sa.Table(
                schema.name,
                self.metadata,
                *(_sa_column(c) for c in schema.columns),
                comment=schema.doc or None,
            )
            partitioned = schema.day_partitioned and self.is_postgres
            if schema.unique and not partitioned:
                table.append_constraint(
                    sa.UniqueConstraint(*schema.unique, name=f"uq_{schema.name}")
                )
            if not partitioned:
                for cols in schema.indexes:
                    sa.Index(f"ix_{schema.name}_{'_'.join(cols)}", *(table.c[c] for c in cols))
            if partitioned:
                table.dialect_options["postgresql"]["partition_by"] = "RANGE (day)"
            self._tables[schema.name] = table
        return self._tables[schema.name]

    def migrate(
        self,
        *,
        first_day: date | None = None,
        last_day: date | None = None,
        schemas: Iterable[TableSchema] | None = None,
    ) -> list[str]:
        """Create what is missing of the catalogue: tables, added columns, views, partitions.

        Idempotent and safe to run from several processes at once (one DDL lock). On Postgres
        the day-partitioned tables get a partition for every day from `first_day` (default: a
        year ago) to `last_day` (default: a week ahead). Returns what it changed, for logs.
        """
        today = datetime.now(UTC).date()
        first_day = first_day or today - timedelta(days=365)
        last_day = last_day or today + timedelta(days=PARTITION_DAYS_AHEAD)
        wanted = list(schemas) if schemas is not None else list(TABLES.values())
        stored = [s for s in wanted if s.view_of is None]
        views = [s for s in wanted if s.view_of is not None]
        for view in views:
            if TABLES[view.view_of] not in stored:
                stored.append(TABLES[view.view_of])
        changes: list[str] = []
        with self.engine.begin() as conn:
            self._lock(conn, "ddl")
            inspector = sa.inspect(conn)
            existing = set(inspector.get_table_names())
            for schema in stored:
                table = self.table(schema)
                if schema.name not in existing:
                    table.create(conn)
                    changes.append(f"created table {schema.name}")
                    continue
                have = {c["name"] for c in inspector.get_columns(schema.name)}
                for c in schema.columns:
                    if c.name not in have:
                        column = _sa_column(c)
                        column_type = column.type.compile(dialect=self.engine.dialect)
                        conn.exec_driver_sql(
                            f'ALTER TABLE {schema.name} ADD COLUMN "{c.name}" {column_type}'
                        )
                        changes.append(f"added column {schema.name}.{c.name}")
            present_views = set(inspector.get_view_names())
            for view in views:
                cols = ", ".join(f'"{c}"' for c in view.column_names)
                if view.name in present_views:
                    # A view made before its table gained columns is re-made with them.
                    have = [c["name"] for c in inspector.get_columns(view.name)]
                    if have == view.column_names:
                        continue
                    conn.exec_driver_sql(f"DROP VIEW {view.name}")
                conn.exec_driver_sql(
                    f"CREATE VIEW {view.name} AS SELECT {cols} FROM {view.view_of}"
                )
                verb = "re-created" if view.name in present_views else "created"
                changes.append(f"{verb} view {view.name}")
            if self.is_postgres:
                for schema in stored:
                    if schema.day_partitioned:
                        changes += self._create_day_partitions(conn, schema, first_day, last_day)
        return changes

    def _ensure_day_partitions(
        self, conn: Connection, schema: TableSchema, days: Iterable[date]
    ) -> None:
        """Postgres: create, inside `conn`'s transaction, the day partitions of `days` that do
        not exist yet — a backfill of a day older than the year `migrate` made, or a load past
        its week ahead — instead of failing on a missing partition. Checked once per table
        and day by this warehouse object."""
        if not (self.is_postgres and schema.day_partitioned):
            return
        known = self._partitions.setdefault(schema.name, set())
        wanted = {d for d in days if d is not None} - known
        if not wanted:
            return
        have = self._partition_names(conn, schema)
        if any(partition_name(schema.name, d) not in have for d in wanted):
            self._lock(conn, "ddl")  # as `migrate`: one process creates a partition
            for day in sorted(wanted):
                self._create_day_partitions(conn, schema, day, day)
        known |= wanted

    def _partition_names(self, conn: Connection, schema: TableSchema) -> set[str]:
        return set(
            conn.exec_driver_sql(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %(t)s",
                {"t": schema.name},
            ).scalars()
        )

    def _create_day_partitions(
        self, conn: Connection, schema: TableSchema, first_day: date, last_day: date
    ) -> list[str]:
        have = self._partition_names(conn, schema)
        created = []
        day = first_day
        while day <= last_day:
            name = partition_name(schema.name, day)
            if name not in have:
                conn.exec_driver_sql(
                    f"CREATE TABLE {name} PARTITION OF {schema.name} "
                    f"FOR VALUES FROM ('{day}') TO ('{day + timedelta(days=1)}')"
                )
                created.append(name)
            day += timedelta(days=1)
        return [f"created {len(created)} day partition(s) of {schema.name}"] if created else []

    # -- writes --------------------------------------------------------------------------------

    def replace_partition(
        self, schema: TableSchema, partition: date | Sequence[date], df: pd.DataFrame
    ) -> int:
        """Replace the rows of one day (or several) with `df`, atomically. Returns rows written."""
        days = [partition] if isinstance(partition, date) else list(partition)
        if schema.partition_column is None:
            raise ValueError(f"{schema.name} is not partitioned")
        frame = schema.conform(df)
        outside = ~frame[schema.partition_column].isin(days)
        if outside.any():
            raise ValueError(
                f"{schema.name}: {int(outside.sum())} row(s) fall outside partition(s) "
                f"{', '.join(str(d) for d in days)}, e.g. {frame.loc[outside].iloc[0].to_dict()}"
            )
        _check_unique(schema, frame)
        if schema.day_partitioned and self.is_postgres:
            with self.engine.begin() as conn:
                self._ensure_day_partitions(conn, schema, days)
                for day in sorted(days):
                    self._lock(conn, f"{schema.name}:day={day}")
                    conn.exec_driver_sql(f"TRUNCATE {partition_name(schema.name, day)}")
                self._bulk_insert(conn, schema, frame)
            return len(frame)
        return self.replace_where(schema, {schema.partition_column: days}, frame, conformed=True)

    def replace_where(
        self,
        schema: TableSchema,
        where: dict[str, Sequence[Any]],
        df: pd.DataFrame,
        *,
        conformed: bool = False,
    ) -> int:
        """Delete the rows matching `where` (column -> values) and insert `df`, atomically."""
        table = self.table(schema)
        frame = df if conformed else schema.conform(df)
        lock_key = f"{schema.name}:" + ";".join(
            f"{k}={sorted(map(str, v))}" for k, v in sorted(where.items())
        )
        with self.engine.begin() as conn:
            self._lock(conn, lock_key)
            condition = sa.and_(*(table.c[k].in_(list(v)) for k, v in where.items()))
            conn.execute(table.delete().where(condition))
            self._bulk_insert(conn, schema, frame)
        return len(frame)

    def rewrite_day(
        self,
        schema: TableSchema,
        day: date,
        transform: Callable[[pd.DataFrame], pd.DataFrame],
        *,
        chunk_rows: int = 500_000,
        then: Callable[[Connection], object] | None = None,
    ) -> int:
        """Replace a day's rows by `transform` of themselves, in one transaction on one connection.

        `then(conn)` runs last in the same transaction (e.g. what is derived from the day's rows).

        The day is locked before it is read (Postgres: its partition, so an ingestion that is
        adding rows to it finishes first; SQLite: the write lock), read into a spool, emptied
        and refilled chunk by chunk: memory stays bounded and no row that lands meanwhile is
        lost.
        """
        table = self.table(schema)
        column = schema.partition_column or "day"
        written = 0
        with self.engine.begin() as conn:
            self._lock(conn, f"{schema.name}:day={day}")
            if schema.day_partitioned and self.is_postgres:
                part = partition_name(schema.name, day)
                conn.exec_driver_sql(f"LOCK TABLE {part} IN ACCESS EXCLUSIVE MODE")
                chunks = self._copy_out_arrow(
                    conn, table, schema, [table.c[column] == day], chunk_rows
                )
                # The whole day is in the spool once the first chunk comes out of it.
                first = next(chunks, None)
                conn.exec_driver_sql(f"TRUNCATE {part}")
                for arrow in [first, *chunks] if first is not None else []:
                    out = schema.conform(transform(schema.conform(arrow.to_pandas())))
                    self._bulk_insert(conn, schema, out)
                    written += len(out)
                if then is not None:
                    then(conn)
                return written
            frame = schema.conform(
                pd.read_sql(sa.select(table).where(table.c[column] == day), conn)
            )
            conn.execute(table.delete().where(table.c[column] == day))
            for start in range(0, len(frame), chunk_rows):
                out = schema.conform(transform(frame.iloc[start : start + chunk_rows]))
                self._bulk_insert(conn, schema, out)
                written += len(out)
            if then is not None:
                then(conn)
        return written

    def replace_table(self, schema: TableSchema, df: pd.DataFrame) -> int:
        """Replace a whole (reference) table atomically."""
        table = self.table(schema)
        frame = schema.conform(df)
        with self.engine.begin() as conn:
            self._lock(conn, f"{schema.name}:*")
            conn.execute(table.delete())
            self._bulk_insert(conn, schema, frame)
        return len(frame)

    def insert_new(
        self,
        conn: Connection,
        schema: TableSchema,
        chunks: Iterable[pa.Table | pd.DataFrame | tuple[pa.Table, list[str]]],
        *,
        restate: Restatements | None = None,
    ) -> dict[str, int]:
        """Insert rows whose unique key is not stored yet; return new rows per day.

        For the incremental ingesters, inside their transaction (`transaction(lock_key=...)`).
        Postgres: a chunk's rows of days that held no rows when the transaction first met them
        are copied straight into their partitions (chunks must not repeat a key among
        themselves: the readers drop in-file duplicates); the others go through a staging
        table and an anti-join on (day, key), keeping the first of a repeated key. SQLite:
        INSERT OR IGNORE on the unique index, new rows counted per day. A chunk given as
        `(rows, ids)` first removes the versions of `ids` that earlier chunks loaded (a file
        that corrects its own records: the last version wins).

        With `restate`, a row whose key is stored already with other `restate.compare` values
        is a restatement, not a duplicate: the stored version moves to `restate.into`, the new
        one replaces it, and the count lands in `restate.by_day` (not in the returned new rows).
        Only rows that would otherwise be dropped are compared — on Postgres the staged rows
        (days that held rows), never the direct copies; on SQLite each chunk through a temp
        staging table — and only against the same day: a correction that moves an event to
        another day is out of scope (it loads as a new row there; the old day keeps its
        version), since dedupe never scans other days.
        """
        if not schema.unique:
            raise ValueError(f"{schema.name} has no unique key")
        part = schema.partition_column or "day"
        stage = f"stage_{schema.name}"
        if self.is_postgres:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
            conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} (LIKE {schema.name})")
        elif restate is not None:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{stage}")
            conn.exec_driver_sql(
                f"CREATE TEMP TABLE {stage} AS SELECT * FROM {schema.name} WHERE 0"
            )
        restated_here: dict[str, int] = {}
        direct_days: set[date] = set()
        checked: set[date] = set()
        direct_new: dict[str, int] = {}
        touched: set[date] = set()
        for item in chunks:
            chunk, replaces = item if isinstance(item, tuple) else (item, [])
            arrow = _as_arrow(schema, chunk)
            if replaces and touched:
                # A later record of the same file corrects one loaded from an earlier chunk:
                # the earlier version goes (it was written in this transaction, on a day
                # this transaction touched), the correction is loaded below.
                for day in self._delete_keys(conn, schema, stage, sorted(touched), replaces):
                    key = str(day)
                    if direct_new.get(key):
                        direct_new[key] -= 1
            if arrow.num_rows == 0:
                continue
            touched |= set(pc.unique(arrow[part]).to_pylist())
            if not self.is_postgres:
                # SQLite: straight into the table; its unique index ignores known keys, and
                # the per-day row counts before and after say how many were new.
                days = sorted(set(pc.unique(arrow[part]).to_pylist()))
                before = self._day_counts(conn, schema, days)
                # Restatements are compared within a day: only rows of days holding rows can
                # restate one (a file's late records of yesterday, say), the rest are new.
                held = [day for day in days if before.get(day, 0)]
                if restate is not None and held:
                    mask = pc.is_in(arrow[part], value_set=pa.array(held, arrow[part].type))
                    self._sqlite_restate(conn, schema, stage, arrow.filter(mask), restate)
                _sqlite_insert(conn, schema.name, schema, arrow, or_ignore=True)
                after = self._day_counts(conn, schema, days)
                for day in days:
                    if after.get(day, 0) > before.get(day, 0):
                        key = str(day)
                        direct_new[key] = direct_new.get(key, 0) + after[day] - before.get(day, 0)
                continue
            if not schema.day_partitioned:
                _copy_arrow(conn, stage, schema, arrow)
                continue
            days = set(pc.unique(arrow[part]).to_pylist())
            self._ensure_day_partitions(conn, schema, days)
            unseen = sorted(days - checked)
            if unseen:
                filled = set(
                    conn.exec_driver_sql(
                        f"SELECT d FROM unnest(%(days)s::date[]) AS d WHERE EXISTS "
                        f"(SELECT 1 FROM {schema.name} t WHERE t.{part} = d)",
                        {"days": unseen},
                    ).scalars()
                )
                direct_days |= set(unseen) - filled
                checked |= set(unseen)
            is_direct = pc.is_in(arrow[part], value_set=pa.array(sorted(direct_days), pa.date32()))
            direct = arrow.filter(is_direct)
            staged = arrow.filter(pc.invert(is_direct))
            if direct.num_rows:
                _copy_arrow(conn, schema.name, schema, direct)
                counts = pc.value_counts(direct[part]).to_pylist()
                for item in counts:
                    key = str(item["values"])
                    direct_new[key] = direct_new.get(key, 0) + int(item["counts"])
            if staged.num_rows:
                _copy_arrow(conn, stage, schema, staged)
        key = schema.unique
        cols = ", ".join(f'"{c}"' for c in schema.column_names)
        if self.is_postgres:
            join = " AND ".join(f"t.{k} = s.{k}" for k in key)
            distinct = ", ".join(key)
            if restate is not None:
                restated_here = self._pg_restate(conn, schema, stage, restate)
            new_by_day = conn.exec_driver_sql(
                f"WITH inserted AS (INSERT INTO {schema.name} ({cols}) "
                f"SELECT DISTINCT ON ({distinct}) {cols} FROM {stage} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {schema.name} t WHERE {join}) "
                f"ORDER BY {distinct}, s.ctid RETURNING {part}) "
                f"SELECT {part}, COUNT(*) FROM inserted GROUP BY {part}"
            ).all()
            conn.exec_driver_sql(f"DROP TABLE {stage}")
        else:
            new_by_day = []
            if restate is not None:
                conn.exec_driver_sql(f"DROP TABLE temp.{stage}")
        out = dict(direct_new)
        for day, n in new_by_day:
            # Restated keys were deleted and loaded again: replaced rows, not new ones.
            n = int(n) - restated_here.get(str(day), 0)
            if n:
                out[str(day)] = out.get(str(day), 0) + n
        return out

    def _pg_restate(
        self, conn: Connection, schema: TableSchema, stage: str, restate: Restatements
    ) -> dict[str, int]:
        """Postgres: delete the stored rows that a staged row (the first of its key) restates,
        archive both versions in `restate.into`; return the restatements per day."""
        part = schema.partition_column or "day"
        key = ", ".join(f'"{k}"' for k in schema.unique)
        join = " AND ".join(f't."{k}" = s."{k}"' for k in schema.unique)
        old = ", ".join(f't."{c}"' for c in restate.compare)
        new = ", ".join(f's."{c}"' for c in restate.compare)
        days_filter = ""
        params: dict[str, Any] = {}
        if schema.day_partitioned:
            # Named days, so the planner prunes to their partitions: no other day is scanned.
            params["days"] = list(
                conn.exec_driver_sql(f'SELECT DISTINCT "{part}" FROM {stage}').scalars()
            )
            days_filter = f' AND t."{part}" = ANY(%(days)s::date[])'
        rows = conn.exec_driver_sql(
            f"DELETE FROM {schema.name} t USING (SELECT DISTINCT ON ({key}) * FROM {stage} "
            f"ORDER BY {key}, ctid) s WHERE {join}{days_filter} "
            f"AND ROW({old}) IS DISTINCT FROM ROW({new}) RETURNING {_versions_sql(schema)}",
            params,
        ).all()
        return self._archive_versions(conn, schema, restate, rows)

    def _sqlite_restate(
        self,
        conn: Connection,
        schema: TableSchema,
        stage: str,
        arrow: pa.Table,
        restate: Restatements,
    ) -> None:
        """SQLite: stage one chunk, delete the stored rows its rows (the first of each key)
        restate and archive both versions, so that INSERT OR IGNORE then loads the new ones."""
        conn.exec_driver_sql(f"DELETE FROM temp.{stage}")
        _sqlite_insert(conn, f"temp.{stage}", schema, arrow)
        key = ", ".join(f'"{k}"' for k in schema.unique)
        join = " AND ".join(f't."{k}" = s."{k}"' for k in schema.unique)
        differ = " OR ".join(f't."{c}" IS NOT s."{c}"' for c in restate.compare)
        rows = conn.exec_driver_sql(
            f"SELECT {_versions_sql(schema)} FROM temp.{stage} s JOIN {schema.name} t ON {join} "
            f"WHERE s.rowid IN (SELECT MIN(rowid) FROM temp.{stage} GROUP BY {key}) "
            f"AND ({differ})"
        ).all()
        if not rows:
            return
        names = schema.column_names
        where = " AND ".join(f'"{k}" = ?' for k in schema.unique)
        conn.exec_driver_sql(
            f"DELETE FROM {schema.name} WHERE {where}",
            [tuple(row[names.index(k)] for k in schema.unique) for row in rows],
        )
        self._archive_versions(conn, schema, restate, rows)

    def _archive_versions(
        self, conn: Connection, schema: TableSchema, restate: Restatements, rows: Sequence[Any]
    ) -> dict[str, int]:
        """Write the (old, new) version pairs of `_versions_sql` rows to `restate.into`."""
        if not rows:
            return {}
        names = schema.column_names
        both = pd.DataFrame(
            [tuple(r) for r in rows], columns=[*names, *(f"new.{c}" for c in names)]
        )
        old = schema.conform(both.iloc[:, : len(names)])
        new = schema.conform(both.iloc[:, len(names) :].set_axis(names, axis=1))
        frame = pd.DataFrame({k: new[k] for k in schema.unique})
        frame["revised_at"] = restate.revised_at
        compare = list(restate.compare)
        frame["old_content"] = [_json_text(r) for r in old[compare].to_dict("records")]
        frame["new_content"] = [_json_text(r) for r in new[compare].to_dict("records")]
        for column in ("cost_usd", "source_file"):
            if column in names:
                frame[f"old_{column}"] = old[column]
                frame[f"new_{column}"] = new[column]
        self._bulk_insert(conn, restate.into, restate.into.conform(frame))
        counts: dict[str, int] = {}
        for day in new[schema.partition_column or "day"]:
            counts[str(day)] = counts.get(str(day), 0) + 1
        for day, n in counts.items():
            restate.add(day, n)
        return counts

    def _delete_keys(
        self, conn: Connection, schema: TableSchema, stage: str, days: list[date], ids: list[str]
    ) -> list[date]:
        """Delete rows of `ids` on `days` (and from the staging table); return their days."""
        part = schema.partition_column or "day"
        key = schema.unique[-1]
        params = {"days": days, "ids": list(ids)}
        if self.is_postgres:
            conn.exec_driver_sql(
                f"DELETE FROM {stage} WHERE {key} = ANY(%(ids)s)", {"ids": list(ids)}
            )
            sql = (
                f"DELETE FROM {schema.name} WHERE {part} = ANY(%(days)s::date[]) "
                f"AND {key} = ANY(%(ids)s) RETURNING {part}"
            )
            return list(conn.exec_driver_sql(sql, params).scalars())
        table = self.table(schema)
        stmt = (
            table.delete()
            .where(table.c[part].in_(days), table.c[key].in_(list(ids)))
            .returning(table.c[part])
        )
        return [
            d if isinstance(d, date) else date.fromisoformat(str(d))
            for d in conn.execute(stmt).scalars()
        ]

    def _day_counts(self, conn: Connection, schema: TableSchema, days: list[date]) -> dict:
        table = self.table(schema)
        column = table.c[schema.partition_column or "day"]
        stmt = sa.select(column, sa.func.count()).where(column.in_(days)).group_by(column)
        return {
            d if isinstance(d, date) else date.fromisoformat(str(d)): int(n)
            for d, n in conn.execute(stmt)
        }

    def exists(self, conn: Connection, schema: TableSchema, where: dict[str, Any]) -> bool:
        """Whether a row with these column values exists, read inside `conn`'s transaction."""
        table = self.table(schema)
        stmt = sa.select(sa.literal(1)).where(*(table.c[k] == v for k, v in where.items())).limit(1)
        return conn.execute(stmt).first() is not None

    def delete_where(
        self, conn: Connection, schema: TableSchema, where: dict[str, Any]
    ) -> tuple[int, list[date]]:
        """Delete the rows with these column values inside `conn`'s transaction; return how
        many and which partition days they were on."""
        table = self.table(schema)
        condition = sa.and_(*(table.c[k] == v for k, v in where.items()))
        name = schema.partition_column or "day"
        days: list[date] = []
        if name in table.c:
            column = table.c[name]
            days = list(conn.execute(sa.select(column).distinct().where(condition)).scalars())
        deleted = conn.execute(table.delete().where(condition)).rowcount or 0
        return deleted, days

    def append(
        self, schema: TableSchema, df: pd.DataFrame, *, conn: Connection | None = None
    ) -> int:
        """Insert rows; inside `conn`'s transaction when given."""
        frame = schema.conform(df)
        if conn is not None:
            self._bulk_insert(conn, schema, frame)
        else:
            with self.engine.begin() as own:
                self._bulk_insert(own, schema, frame)
        return len(frame)

    def transaction(self, lock_key: str | None = None) -> _Transaction:
        """A write transaction, optionally holding a named lock for its duration."""
        return _Transaction(self, lock_key)

    def connect(self) -> Any:
        """A read connection (a context manager), for the store's named queries."""
        return self.engine.connect()

    def _lock(self, conn: Connection, key: str) -> None:
        if self.is_postgres:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_id(key)})
        elif self.dialect == "sqlite":
            # Take SQLite's write lock now, not at the first write, so two writers queue on
            # busy_timeout instead of one failing when it upgrades a read lock.
            conn.exec_driver_sql("DELETE FROM _write_lock WHERE 0")

    def _bulk_insert(self, conn: Connection, schema: TableSchema, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        for start in range(0, len(frame), WRITE_CHUNK_ROWS):
            chunk = _frame_to_arrow(schema, frame.iloc[start : start + WRITE_CHUNK_ROWS])
            if self.is_postgres:
                if schema.day_partitioned:
                    part = chunk[schema.partition_column or "day"]
                    self._ensure_day_partitions(conn, schema, pc.unique(part).to_pylist())
                _copy_arrow(conn, schema.name, schema, chunk)
            else:
                _sqlite_insert(conn, schema.name, schema, chunk)

    # -- reads ---------------------------------------------------------------------------------

    def read(
        self,
        schema: TableSchema,
        *,
        days: Sequence[date] | None = None,
        where: dict[str, Sequence[Any]] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows of a table, filtered by partition days and/or column values, conformed."""
        frames = list(self.read_chunks(schema, days=days, where=where, columns=columns))
        if not frames:
            return _subset(schema, columns).empty_frame()
        return pd.concat(frames, ignore_index=True)

    def read_chunks(
        self,
        schema: TableSchema,
        *,
        days: Sequence[date] | None = None,
        where: dict[str, Sequence[Any]] | None = None,
        columns: Sequence[str] | None = None,
        chunk_rows: int = 500_000,
    ) -> Iterator[pd.DataFrame]:
        """Stream a table in chunks of at most `chunk_rows`, each conformed to the schema."""
        table = self.table(schema)
        sub = _subset(schema, columns)
        filters = dict(where or {})
        if days is not None:
            filters[schema.partition_column or "day"] = list(days)
        conditions = [table.c[k].in_(list(v)) for k, v in filters.items()]
        if self.is_postgres:
            with self.engine.connect() as conn:
                for part in self._copy_out_arrow(conn, table, sub, conditions, chunk_rows):
                    yield sub.conform(part.to_pandas())
            return
        stmt = sa.select(*(table.c[c] for c in sub.column_names)).where(*conditions)
        with self.engine.connect().execution_options(stream_results=True) as conn:
            for chunk in pd.read_sql(stmt, conn, chunksize=chunk_rows):
                yield sub.conform(chunk)

    def _copy_out_arrow(
        self,
        conn: Connection,
        table: sa.Table,
        sub: TableSchema,
        conditions: list[Any],
        chunk_rows: int,
    ) -> Iterator[pa.Table]:
        """Postgres: `COPY (SELECT ...) TO STDOUT` spooled to a temp file, parsed by Arrow.

        The database's bulk path out, as `COPY FROM` is the way in: no Python object per value.
        Timestamps leave as UTC ISO text, so the session time zone does not matter.
        """
        selected = [
            sa.func.to_char(sa.func.timezone("UTC", table.c[c.name]), _PG_UTC_FORMAT).label(c.name)
            if c.kind == "datetime"
            else table.c[c.name]
            for c in sub.columns
        ]
        stmt = sa.select(*selected).where(*conditions)
        sql = str(stmt.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))
        with tempfile.SpooledTemporaryFile(max_size=256 << 20) as spool:
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", spool)
            finally:
                cursor.close()
            if spool.tell() == 0:
                return
            spool.seek(0)
            reader = pacsv.open_csv(
                spool,
                read_options=pacsv.ReadOptions(column_names=sub.column_names, block_size=64 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types={c.name: ARROW_TYPES[c.kind] for c in sub.columns},
                    true_values=["t"],
                    false_values=["f"],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            pending: pa.Table | None = None
            for batch in reader:
                part = pa.Table.from_batches([batch])
                pending = part if pending is None else pa.concat_tables([pending, part])
                while pending.num_rows >= chunk_rows:
                    yield pending.slice(0, chunk_rows)
                    pending = pending.slice(chunk_rows)
            if pending is not None and pending.num_rows:
                yield pending

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run one of the store's named queries (store/queries.py) and return its rows."""
        with self.engine.connect() as conn:
            return pd.read_sql(sa.text(sql), conn, params=params or {})

    def count(self, schema: TableSchema, *, days: Sequence[date] | None = None) -> int:
        table = self.table(schema)
        stmt = sa.select(sa.func.count()).select_from(table)
        if days is not None:
            stmt = stmt.where(table.c[schema.partition_column or "day"].in_(list(days)))
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())


class _Transaction:
    def __init__(self, warehouse: Warehouse, lock_key: str | None) -> None:
        self.warehouse = warehouse
        self.lock_key = lock_key
        self._ctx = warehouse.engine.begin()

    def __enter__(self) -> Connection:
        conn = self._ctx.__enter__()
        if self.lock_key is not None:
            self.warehouse._lock(conn, self.lock_key)
        return conn

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def _subset(schema: TableSchema, columns: Sequence[str] | None) -> TableSchema:
    if columns is None:
        return schema
    return TableSchema(
        name=schema.name,
        columns=tuple(schema.column(c) for c in columns),
        partition_column=schema.partition_column,
    )


def _check_unique(schema: TableSchema, frame: pd.DataFrame) -> None:
    if schema.unique and frame.duplicated(list(schema.unique)).any():
        dup = frame.loc[frame.duplicated(list(schema.unique)), list(schema.unique)].iloc[0]
        raise ValueError(f"{schema.name}: duplicate key {dup.to_dict()} in the rows to write")


def _versions_sql(schema: TableSchema) -> str:
    """Every column of the stored row `t`, then every column of the staged row `s`."""
    return ", ".join(
        [f't."{c}"' for c in schema.column_names] + [f's."{c}"' for c in schema.column_names]
    )


def _json_text(record: dict[str, Any]) -> str:
    """One row's values as JSON text, alike on every engine: UTC timestamps as ISO 8601 `Z`."""

    def plain(value: Any) -> Any:
        if value is None or value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, float) and value != value:
            return None
        if isinstance(value, pd.Timestamp | datetime):
            stamp = pd.Timestamp(value)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
            return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if isinstance(value, date):
            return value.isoformat()
        if hasattr(value, "item"):  # numpy scalars
            return value.item()
        return value

    return json.dumps({k: plain(v) for k, v in record.items()}, sort_keys=False)


def _lock_id(key: str) -> int:
    # pg advisory locks take a signed 64-bit key; crc32 is stable across processes.
    return zlib.crc32(key.encode())


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # The busy timeout first: switching a fresh file to WAL takes a lock that other
    # processes opening it at the same moment must wait for, not fail on.
    cur.execute("PRAGMA busy_timeout=60000")
    # SQLite answers "locked" at once, without waiting, to a connection that switches a file
    # to WAL or creates a table while another does the same: those two are retried.
    for statement in (
        "PRAGMA journal_mode=WAL",
        "CREATE TABLE IF NOT EXISTS _write_lock (id INTEGER PRIMARY KEY)",
    ):
        for attempt in range(100):
            try:
                cur.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 99:
                    raise
                time.sleep(0.05)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_insert(
    conn: Connection, name: str, schema: TableSchema, table: pa.Table, *, or_ignore: bool = False
) -> None:
    """`executemany` of an Arrow table's rows, each value already in the form SQLAlchemy's
    SQLite types store (ISO text for dates and UTC timestamps, 0/1 for booleans), so that a
    value reads back the same whichever path wrote it."""
    columns = []
    for c in schema.columns:
        values = table[c.name]
        if c.kind == "datetime":
            values = pc.strftime(values, format="%Y-%m-%d %H:%M:%S", locale="C")
        elif c.kind == "date":
            values = pc.cast(values, pa.string())
        elif c.kind == "bool":
            values = pc.cast(values, pa.int8())
        columns.append(values.to_pylist())
    marks = ", ".join("?" for _ in schema.columns)
    cols = ", ".join(f'"{c}"' for c in schema.column_names)
    conn.exec_driver_sql(
        f"INSERT {'OR IGNORE ' if or_ignore else ''}INTO {name} ({cols}) VALUES ({marks})",
        list(zip(*columns, strict=True)),
    )


def _frame_to_arrow(schema: TableSchema, frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=arrow_schema(schema), preserve_index=False)


def _as_arrow(schema: TableSchema, chunk: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(chunk, pa.Table):
        return chunk.select(schema.column_names).cast(arrow_schema(schema))
    return _frame_to_arrow(schema, schema.conform(chunk))


def _copy_arrow(conn: Connection, name: str, schema: TableSchema, table: pa.Table) -> None:
    """`COPY name FROM STDIN` of an Arrow table, as CSV written by Arrow's C++ writer.

    Arrow quotes every text value (and nothing else): in COPY's CSV format only an unquoted
    empty field is NULL, so any text — an empty string, a literal `\\N`, tabs or newlines —
    round-trips exactly, and no value is escaped in Python.
    """
    buf = io.BytesIO()
    pacsv.write_csv(
        table.select(schema.column_names),
        buf,
        write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"),
    )
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in schema.column_names)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {name} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)
    finally:
        cursor.close()
