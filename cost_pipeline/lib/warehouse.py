"""The cost warehouse: tables made from `lib.schemas`, atomic partition replacement, bulk writes.

One class, two engines. SQLite is the laptop default; PostgreSQL is production. Every write of a
partition happens in one transaction that first takes a lock on (table, partition), deletes the
partition's rows and then bulk-loads the new ones, so re-running a day any number of times — even
twice at once — leaves exactly one copy. Postgres loads use `COPY ... FROM STDIN`; SQLite uses
`executemany` on plain tuples.
"""

from __future__ import annotations

import io
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cost_pipeline.catalog import TABLES
from cost_pipeline.lib.schemas import Column, TableSchema

WRITE_CHUNK_ROWS = 200_000
_PG_UTC_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
_ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "json": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "money": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "datetime": pa.timestamp("us", tz="UTC"),
}

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
    return sa.Column(c.name, _SA_TYPES[c.kind](), nullable=c.nullable)


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs and metadata."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class Warehouse:
    """Read and write warehouse tables through one SQLAlchemy engine."""

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
        self._created: set[str] = set()

    def __repr__(self) -> str:
        return f"Warehouse({redact_url(self.url)})"

    def dispose(self) -> None:
        self.engine.dispose()

    # -- tables --------------------------------------------------------------------------------

    def table(self, schema: TableSchema | str) -> sa.Table:
        schema = TABLES[schema] if isinstance(schema, str) else schema
        if schema.name not in self._tables:
            table = sa.Table(schema.name, self.metadata, *(_sa_column(c) for c in schema.columns))
            if schema.unique:
                table.append_constraint(
                    sa.UniqueConstraint(*schema.unique, name=f"uq_{schema.name}")
                )
            for cols in schema.indexes:
                sa.Index(f"ix_{schema.name}_{'_'.join(cols)}", *(table.c[c] for c in cols))
            self._tables[schema.name] = table
        table = self._tables[schema.name]
        if schema.name not in self._created:
            # Under a lock: processes that first touch a fresh warehouse at once (Dagster's
            # multiprocess executor) would otherwise race between the existence check and CREATE,
            # and Postgres fails the loser with "already exists" / pg_type unique violations.
            with self.engine.begin() as conn:
                self._lock(conn, f"ddl:{schema.name}")
                table.create(conn, checkfirst=True)
            self._created.add(schema.name)
        return table

    def ensure_tables(self, schemas: Iterable[TableSchema] | None = None) -> None:
        for schema in schemas if schemas is not None else list(TABLES.values()):
            self.table(schema)

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
        where = {schema.partition_column: days}
        return self.replace_where(schema, where, frame, conformed=True)

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

    def replace_partition_chunks(
        self, schema: TableSchema, partition: date, chunks: Iterable[pd.DataFrame]
    ) -> int:
        """Like `replace_partition`, for a day too large for one frame: one transaction."""
        table = self.table(schema)
        column = schema.partition_column or "day"
        written = 0
        with self.engine.begin() as conn:
            self._lock(conn, f"{schema.name}:{column}={[str(partition)]}")
            conn.execute(table.delete().where(table.c[column] == partition))
            for chunk in chunks:
                frame = schema.conform(chunk)
                if not frame[column].eq(partition).all():
                    raise ValueError(f"{schema.name}: chunk has rows outside {partition}")
                self._bulk_insert(conn, schema, frame)
                written += len(frame)
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
        frames: Iterable[pd.DataFrame],
        *,
        conformed: bool = False,
    ) -> dict[str, int]:
        """Insert rows whose unique key is not yet stored; return new rows per partition day.

        Rows are bulk-loaded into a temporary staging table first, then moved with the
        database's insert-or-ignore, so memory stays bounded and a re-delivered row adds nothing.
        `conformed=True` skips re-checking frames that were conformed to `schema` already.
        """
        if not schema.unique:
            raise ValueError(f"{schema.name} has no unique key")
        table = self.table(schema)
        stage = f"stage_{schema.name}"
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} (LIKE {table.name})")
        else:
            conn.exec_driver_sql(f"CREATE TEMP TABLE {stage} AS SELECT * FROM {table.name} WHERE 0")
        stage_schema = TableSchema(name=stage, columns=schema.columns, partition_column=None)
        stage_table = sa.Table(stage, sa.MetaData(), *(_sa_column(c) for c in schema.columns))
        for frame in frames:
            if not frame.empty:
                frame = frame if conformed else schema.conform(frame)
                self._insert_frame(conn, stage_schema, stage_table, frame)
        key = schema.unique
        part = schema.partition_column or "day"
        keys = ", ".join(key)
        cols = ", ".join(schema.column_names)
        if self.dialect == "postgresql":
            # One statement inserts and counts: the new rows come back from RETURNING and are
            # grouped by day inside the database. DISTINCT ON keeps the first row of each key
            # in the ORDER BY; the stage is a fresh temp table filled only by COPY, so its
            # physical order (ctid) is the load order: first occurrence wins, as on SQLite.
            new_by_day = conn.exec_driver_sql(
                f"WITH inserted AS (INSERT INTO {table.name} ({cols}) "
                f"SELECT DISTINCT ON ({keys}) {cols} FROM {stage} ORDER BY {keys}, ctid "
                f"ON CONFLICT ({keys}) DO NOTHING RETURNING {part}) "
                f"SELECT {part}, COUNT(*) FROM inserted GROUP BY {part}"
            ).all()
        else:
            # Distinct keys per day, portably (a `||` of the keys would let ('a', 'bc') and
            # ('ab', 'c') collide), before INSERT OR IGNORE keeps the first of each key.
            join = " AND ".join(f"t.{k} = s.{k}" for k in key)
            distinct_cols = ", ".join(dict.fromkeys([f"s.{part}", *(f"s.{k}" for k in key)]))
            new_by_day = conn.exec_driver_sql(
                f"SELECT {part}, COUNT(*) FROM (SELECT DISTINCT {distinct_cols} FROM {stage} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table.name} t WHERE {join})) AS n "
                f"GROUP BY {part}"
            ).all()
            conn.exec_driver_sql(
                f"INSERT OR IGNORE INTO {table.name} ({cols}) SELECT {cols} FROM {stage}"
            )
        conn.exec_driver_sql(f"DROP TABLE {stage}")
        return {str(day): int(n) for day, n in new_by_day}

    def append(
        self, schema: TableSchema, df: pd.DataFrame, *, conn: Connection | None = None
    ) -> int:
        """Insert rows; inside `conn`'s transaction when given."""
        self.table(schema)
        frame = schema.conform(df)
        if conn is not None:
            self._bulk_insert(conn, schema, frame)
        else:
            with self.engine.begin() as own:
                self._bulk_insert(own, schema, frame)
        return len(frame)

    def transaction(self, lock_key: str | None = None):
        """A write transaction, optionally holding a named lock for its duration."""
        return _Transaction(self, lock_key)

    def _lock(self, conn: Connection, key: str) -> None:
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_id(key)})
        elif self.dialect == "sqlite":
            # Take SQLite's write lock now, not at the first write, so two writers queue on
            # busy_timeout instead of one failing when it upgrades a read lock.
            conn.exec_driver_sql("DELETE FROM _write_lock WHERE 0")

    def _bulk_insert(self, conn: Connection, schema: TableSchema, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        self._insert_frame(conn, schema, self.table(schema), frame)

    def _insert_frame(
        self, conn: Connection, schema: TableSchema, table: sa.Table, frame: pd.DataFrame
    ) -> None:
        for start in range(0, len(frame), WRITE_CHUNK_ROWS):
            chunk = frame.iloc[start : start + WRITE_CHUNK_ROWS]
            if self.dialect == "postgresql":
                _copy_postgres(conn, schema, chunk)
            else:
                conn.execute(table.insert(), _records(schema, chunk))

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
        if self.dialect == "postgresql":
            yield from self._copy_out_chunks(table, sub, conditions, chunk_rows)
            return
        stmt = sa.select(*(table.c[c] for c in sub.column_names)).where(*conditions)
        with self.engine.connect().execution_options(stream_results=True) as conn:
            for chunk in pd.read_sql(stmt, conn, chunksize=chunk_rows):
                yield sub.conform(chunk)

    def _copy_out_chunks(
        self, table: sa.Table, sub: TableSchema, conditions: list[Any], chunk_rows: int
    ) -> Iterator[pd.DataFrame]:
        """Postgres: `COPY (SELECT ...) TO STDOUT` spooled to a temp file, parsed by pyarrow.

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
            with self.engine.connect() as conn:
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
                read_options=pacsv.ReadOptions(column_names=sub.column_names),
                convert_options=pacsv.ConvertOptions(
                    column_types={c.name: _ARROW_TYPES[c.kind] for c in sub.columns},
                    true_values=["t"],
                    false_values=["f"],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            pending: pa.Table | None = None
            for batch in reader:
                table_part = pa.Table.from_batches([batch])
                pending = table_part if pending is None else pa.concat_tables([pending, table_part])
                while pending.num_rows >= chunk_rows:
                    yield sub.conform(pending.slice(0, chunk_rows).to_pandas())
                    pending = pending.slice(chunk_rows)
            if pending is not None and pending.num_rows:
                yield sub.conform(pending.to_pandas())

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
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


def _lock_id(key: str) -> int:
    # pg advisory locks take a signed 64-bit key; crc32 is stable across processes.
    return zlib.crc32(key.encode())


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("CREATE TABLE IF NOT EXISTS _write_lock (id INTEGER PRIMARY KEY)")
    cur.close()


def _records(schema: TableSchema, frame: pd.DataFrame) -> list[dict[str, Any]]:
    obj = frame.astype(object).where(frame.notna(), None)
    for c in schema.columns:
        if c.kind == "datetime":
            values = [None if pd.isna(v) else v.to_pydatetime() for v in obj[c.name]]
            # An object Series, or pandas would turn the None back into NaT.
            obj[c.name] = pd.Series(values, index=obj.index, dtype=object)
    return obj.to_dict("records")


def _copy_postgres(conn: Connection, schema: TableSchema, frame: pd.DataFrame) -> None:
    # CSV written by pyarrow's C++ writer with every non-null value quoted: in COPY's CSV
    # format only an unquoted empty field is NULL, so any text — including a literal `\N`, tabs
    # or newlines — round-trips exactly, and no value has to be escaped in Python.
    table = pa.Table.from_pandas(frame, preserve_index=False)
    buf = io.BytesIO()
    pacsv.write_csv(
        table,
        buf,
        write_options=pacsv.WriteOptions(include_header=False, quoting_style="all_valid"),
    )
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in schema.column_names)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {schema.name} ({cols}) FROM STDIN WITH (FORMAT csv)", buf)
    finally:
        cursor.close()
