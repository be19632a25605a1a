"""Table contracts of the cost warehouse, as code.

Each `TableSchema` declares a table's columns, their kinds and bounds. The same object is used
to create the table (see `lib.warehouse`) and to validate and coerce a DataFrame before it is
written (`TableSchema.conform`), so the contract cannot drift from the storage.

Money columns hold USD rounded half-even to 9 decimals (nano-USD); they are NUMERIC(20, 9) on
Postgres. Token and request counts are non-negative integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

Kind = Literal["str", "int", "float", "money", "bool", "date", "datetime", "json"]

MONEY_DECIMALS = 9


class SchemaError(ValueError):
    """A DataFrame does not satisfy a table contract."""


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = True
    min_value: float | None = None
    doc: str = ""


def col(name: str, kind: Kind, *, nullable: bool = True, min_value: float | None = None) -> Column:
    return Column(name=name, kind=kind, nullable=nullable, min_value=min_value)


def tokens(name: str) -> Column:
    return Column(name=name, kind="int", nullable=False, min_value=0)


def money(name: str, *, nullable: bool = False, signed: bool = False) -> Column:
    return Column(name=name, kind="money", nullable=nullable, min_value=None if signed else 0)


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    partition_column: str | None = "day"
    unique: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = field(default_factory=tuple)
    doc: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def empty_frame(self) -> pd.DataFrame:
        return self.conform(pd.DataFrame(columns=self.column_names))

    def conform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Return `df` with exactly this table's columns, coerced to their kinds and checked.

        Missing nullable columns are added as nulls; a missing non-nullable column, a null in a
        non-nullable column or a value under a column's bound raises `SchemaError` naming the
        table, the column and an example.
        """
        out = pd.DataFrame(index=df.index)
        for c in self.columns:
            if c.name in df.columns:
                series = df[c.name]
            elif c.nullable:
                series = pd.Series(None, index=df.index, dtype="object")
            else:
                raise SchemaError(f"{self.name}: missing required column {c.name!r}")
            out[c.name] = _coerce(series, c, self.name)
        return out.reset_index(drop=True)


def _coerce(series: pd.Series, c: Column, table: str) -> pd.Series:
    try:
        if c.kind == "int":
            values = pd.to_numeric(series, errors="raise")
            result = values.astype("Int64") if values.isna().any() else values.astype("int64")
        elif c.kind in ("float", "money"):
            result = pd.to_numeric(series, errors="raise").astype("float64")
            if c.kind == "money":
                result = result.round(MONEY_DECIMALS)
        elif c.kind == "bool":
            result = series.astype("boolean")
        elif c.kind == "date":
            result = pd.to_datetime(series, errors="raise").dt.date
            result = result.astype("object")
        elif c.kind == "datetime":
            result = pd.to_datetime(series, errors="raise", utc=True)
        else:
            result = series.astype("object").where(series.notna(), None)
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{table}.{c.name}: cannot read values as {c.kind}: {exc}") from exc
    if not c.nullable and result.isna().any():
        raise SchemaError(f"{table}.{c.name}: {int(result.isna().sum())} null value(s) not allowed")
    if c.min_value is not None and len(result):
        below = result.dropna() < c.min_value
        if bool(np.asarray(below).any()):
            example = result.dropna()[below].iloc[0]
            raise SchemaError(f"{table}.{c.name}: value {example!r} is below {c.min_value}")
    return result


TOKEN_COLUMNS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "web_search_requests",
)


ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "json": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "money": pa.float64(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "datetime": pa.timestamp("us", tz="UTC"),
}


def arrow_schema(schema: TableSchema) -> pa.Schema:
    """The Arrow form of a table contract: the columns in order, with their kinds' types."""
    return pa.schema(
        [pa.field(c.name, ARROW_TYPES[c.kind], nullable=c.nullable) for c in schema.columns]
    )
