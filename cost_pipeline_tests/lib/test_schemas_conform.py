"""Protects `TableSchema.conform`'s fast paths: for any frame they give what the general
conversion gives — the same values, dtypes and element types, or the same error."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cost_pipeline.lib.schemas import MONEY_DECIMALS, Column, SchemaError, TableSchema, col

# pandas warns when it casts a float too large (or non-finite) for an integer column; conform
# then raises SchemaError, which is what the tests check.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")


# The conversion as it was before the fast paths: the reference they must agree with.
def reference_conform(schema: TableSchema, df: pd.DataFrame) -> pd.DataFrame:
    columns: dict[str, pd.Series] = {}
    for c in schema.columns:
        if c.name in df.columns:
            series = df[c.name]
        elif c.nullable:
            series = pd.Series(None, index=df.index, dtype="object")
        else:
            raise SchemaError(f"{schema.name}: missing required column {c.name!r}")
        columns[c.name] = _reference_coerce(series, c, schema.name)
    return pd.DataFrame(columns, index=df.index).reset_index(drop=True)


def _reference_already(series: pd.Series, kind: str) -> bool:
    dtype = series.dtype
    if kind == "int":
        return dtype == np.int64
    if kind == "float":
        return dtype == np.float64
    if kind == "datetime":
        return isinstance(dtype, pd.DatetimeTZDtype) and str(dtype.tz) == "UTC"
    if kind == "date":
        return (
            pd.api.types.is_object_dtype(dtype)
            and pd.api.types.infer_dtype(series, skipna=False) == "date"
        )
    if kind in ("str", "json"):
        return pd.api.types.is_object_dtype(dtype) and not series.isna().any()
    return False


def _reference_coerce(series: pd.Series, c: Column, table: str) -> pd.Series:
    try:
        if _reference_already(series, c.kind):
            result = series
        elif c.kind == "int":
            values = pd.to_numeric(series, errors="raise")
            result = values.astype("Int64") if values.isna().any() else values.astype("int64")
        elif c.kind in ("float", "money"):
            result = pd.to_numeric(series, errors="raise").astype("float64")
        elif c.kind == "bool":
            result = series.astype("boolean")
        elif c.kind == "date":
            result = pd.to_datetime(series, errors="raise").dt.date
            result = result.astype("object")
        elif c.kind == "datetime":
            result = pd.to_datetime(series, errors="raise", utc=True)
        else:
            result = series.astype("object").where(series.notna(), None)
        if c.kind == "money":
            result = result.round(MONEY_DECIMALS)
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


def outcome(conform: Callable[[pd.DataFrame], pd.DataFrame], df: pd.DataFrame) -> Any:
    """The frame `conform` returns for a copy of `df`, or the error it raises."""
    try:
        return conform(df.copy(deep=True))
    except Exception as exc:  # the same failure, whatever it is
        return (type(exc).__name__, str(exc))


def assert_same(got: Any, want: Any) -> None:
    if not isinstance(want, pd.DataFrame) or not isinstance(got, pd.DataFrame):
        assert got == want
        return
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    for name in want.columns:
        g, w = got[name], want[name]
        if w.dtype == object:
            assert [type(v) for v in g] == [type(v) for v in w], name
        if w.dtype == np.float64:  # bit for bit: the sign of a zero too
            assert np.array_equal(np.signbit(g.to_numpy()), np.signbit(w.to_numpy())), name


# -- frames --------------------------------------------------------------------------------------

NULLS = st.sampled_from([None, np.nan, pd.NA, pd.NaT, Decimal("NaN")])
INT64 = st.integers(-3, 3) | st.sampled_from([2**53 - 1, 2**53 + 1, 2**62, -(2**63)])
WHOLE = INT64 | st.sampled_from([2**64, 10**400])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.floats(-2, 2)
DAYS = st.dates(date(1990, 1, 1), date(2100, 12, 31))
STAMPS = st.datetimes(datetime(1990, 1, 1), datetime(2100, 12, 31))


def _maybe(values: st.SearchStrategy, nulls: st.SearchStrategy = NULLS) -> st.SearchStrategy:
    return st.one_of(values, values, values, nulls)


def _objects(draw: Callable, n: int, values: st.SearchStrategy) -> pd.Series:
    return pd.Series(draw(st.lists(values, min_size=n, max_size=n)), dtype="object")


@st.composite
def series_for(draw: Callable, kind: str, n: int) -> pd.Series:
    """Values a caller might hand `conform` for a column of `kind`: mostly its stored form,
    with or without nulls, and the other forms that occur (a SQLite read, a computed frame,
    text)."""
    pick = draw(st.integers(0, 5))
    if kind in ("str", "json"):
        text = st.text(max_size=4)
        if pick == 0:
            return _objects(draw, n, text)
        if pick == 1:
            return _objects(draw, n, _maybe(text, st.just(None)))
        if pick == 2:
            return _objects(draw, n, _maybe(text | st.integers(-2, 2) | FLOATS))
        if pick == 3:
            return pd.Series(
                draw(st.lists(_maybe(text, st.just(None)), min_size=n, max_size=n)), dtype="string"
            )
        if pick == 4:
            return pd.Series(draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)))
        return _objects(draw, n, st.just(None))
    if kind == "int":
        if pick == 0:
            return pd.Series(draw(st.lists(INT64, min_size=n, max_size=n)), dtype="int64")
        if pick == 1:
            values = draw(
                st.lists(_maybe(st.integers(-3, 2**40), st.just(None)), min_size=n, max_size=n)
            )
            return pd.Series(values, dtype="Int64")
        if pick == 2:
            values = draw(
                st.lists(_maybe(INT64.map(float) | FLOATS, st.just(np.nan)), min_size=n, max_size=n)
            )
            return pd.Series(values, dtype="float64")
        if pick == 3:
            return _objects(draw, n, _maybe(WHOLE | st.integers(-2, 2).map(np.int64)))
        if pick == 4:
            return _objects(draw, n, _maybe(WHOLE | FLOATS | st.booleans() | st.just("7")))
        return _objects(draw, n, st.sampled_from([None, np.nan, pd.NA]))
    if kind in ("float", "money"):
        if pick == 0:
            return pd.Series(draw(st.lists(FLOATS, min_size=n, max_size=n)), dtype="float64")
        if pick == 1:
            return pd.Series(
                draw(st.lists(INT64, min_size=n, max_size=n)),
                dtype="int64",
            )
        if pick == 2:
            return _objects(draw, n, _maybe(WHOLE))
        if pick == 3:
            return _objects(draw, n, _maybe(WHOLE | FLOATS | st.just("1.5")))
        if pick == 4:
            values = draw(st.lists(_maybe(st.floats(-2, 2), st.just(None)), min_size=n, max_size=n))
            return pd.Series(values, dtype="Float64")
        return _objects(draw, n, st.sampled_from([None, np.nan, pd.NA]))
    if kind == "bool":
        if pick == 0:
            return pd.Series(
                draw(st.lists(_maybe(st.booleans(), st.just(None)), min_size=n, max_size=n)),
                dtype="boolean",
            )
        if pick == 1:
            return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
        return _objects(draw, n, _maybe(st.booleans() | st.sampled_from([0, 1, 0.0])))
    if kind == "date":
        if pick == 0:
            return _objects(draw, n, DAYS)
        if pick == 1:
            return _objects(draw, n, _maybe(DAYS, st.sampled_from([pd.NaT, None])))
        if pick == 2:
            return _objects(draw, n, _maybe(DAYS | STAMPS | STAMPS.map(pd.Timestamp)))
        if pick == 3:
            return _objects(draw, n, _maybe(DAYS.map(str), st.just(None)))
        if pick == 4:
            return _objects(draw, n, st.sampled_from([pd.NaT, None]))
        return pd.Series(
            pd.to_datetime(draw(st.lists(_maybe(STAMPS, st.just(None)), min_size=n, max_size=n)))
        )
    assert kind == "datetime"
    stamps = draw(st.lists(_maybe(STAMPS, st.just(None)), min_size=n, max_size=n))
    naive = pd.Series(pd.to_datetime(stamps), dtype="datetime64[ns]")
    unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
    if pick == 0:
        return naive.astype(f"datetime64[{unit}]")
    if pick == 1:
        return naive.dt.tz_localize("UTC").astype(f"datetime64[{unit}, UTC]")
    if pick == 2:
        return naive.dt.tz_localize(UTC)
    if pick == 3:
        return naive.dt.tz_localize("Europe/Paris", ambiguous="NaT", nonexistent="NaT")
    if pick == 4:
        return _objects(
            draw, n, _maybe(STAMPS | STAMPS.map(lambda t: t.isoformat()), st.just(None))
        )
    return _objects(draw, n, st.just(None))


KINDS = ["str", "json", "int", "float", "money", "bool", "date", "datetime"]


@st.composite
def schema_and_frame(draw: Callable) -> tuple[TableSchema, pd.DataFrame]:
    n = draw(st.integers(0, 7))
    # Now and then the values repeated to a longer frame: pandas converts some (datetimes from
    # 50 values with repeats) through a cache of the unique values.
    repeat = draw(st.sampled_from([1, 1, 1, 12]))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=5))
    index = draw(st.sampled_from(["range", "shuffled", "labels"]))
    rows = n * repeat
    labels = {
        "range": pd.RangeIndex(rows),
        "shuffled": pd.Index(draw(st.permutations(list(range(rows)))), dtype="int64"),
        "labels": pd.Index([f"r{i}" for i in range(rows)]),
    }[index]
    columns, data = [], {}
    for i, kind in enumerate(kinds):
        bound = kind in ("int", "float", "money") and draw(st.booleans())
        column = col(f"c{i}", kind, nullable=draw(st.booleans()), min_value=0 if bound else None)
        columns.append(column)
        if draw(st.integers(0, 9)):  # now and then a column is missing
            values = draw(series_for(kind, n))
            data[column.name] = pd.concat([values] * repeat).set_axis(labels)
    frame = pd.DataFrame(data, index=labels)
    return TableSchema(name="t", columns=tuple(columns)), frame


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_and_frame())
def test_conform_is_the_reference_conversion(case: tuple[TableSchema, pd.DataFrame]) -> None:
    schema, frame = case
    want = outcome(lambda df: reference_conform(schema, df), frame)
    got = outcome(schema.conform, frame)
    assert_same(got, want)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema_and_frame())
def test_conform_is_idempotent(case: tuple[TableSchema, pd.DataFrame]) -> None:
    schema, frame = case
    once = outcome(schema.conform, frame)
    if not isinstance(once, pd.DataFrame):
        return  # failures: see test_conform_is_the_reference_conversion
    assert_same(schema.conform(once), once)
    assert_same(schema.conform(once), reference_conform(schema, once))


# -- examples ------------------------------------------------------------------------------------

SCHEMA = TableSchema(
    name="t",
    columns=(
        col("id", "str", nullable=False),
        col("day", "date", nullable=False),
        col("at", "datetime"),
        col("n", "int", nullable=False, min_value=0),
        col("maybe_n", "int", min_value=0),
        col("cost", "money", nullable=False, min_value=0),
        col("share", "float", min_value=0),
        col("flag", "bool"),
        col("note", "str"),
    ),
)


def _frame(rows: int = 3, **changes: Any) -> pd.DataFrame:
    base = {
        "id": [f"e{i}" for i in range(rows)],
        "day": [date(2026, 10, 1)] * rows,
        "at": pd.Series(
            [datetime(2026, 10, 1, 12, tzinfo=UTC)] * rows, dtype="datetime64[ns, UTC]"
        ),
        "n": np.arange(rows, dtype=np.int64),
        "maybe_n": pd.array([1, None, 3][:rows], dtype="Int64"),
        "cost": np.full(rows, 0.1234567891234),
        "share": np.full(rows, 0.5),
        "flag": pd.array([True, None, False][:rows], dtype="boolean"),
        "note": ["a", None, "c"][:rows],
    }
    return pd.DataFrame(base | changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": ["a", None, "c"]}, "t.id: 1 null value(s) not allowed"),
        ({"id": ["a", np.nan, pd.NA]}, "t.id: 2 null value(s) not allowed"),
        ({"day": [date(2026, 10, 1), pd.NaT, date(2026, 10, 2)]}, "t.day: 1 null value(s)"),
        ({"day": [date(2026, 10, 1), None, None]}, "t.day: 2 null value(s)"),
        ({"day": ["2026-10-01", "not a day", "2026-10-03"]}, "t.day: cannot read values as date"),
        ({"n": [1, -2, -3]}, "t.n: value np.int64(-2) is below 0"),
        ({"n": [1.0, np.nan, 2.0]}, "t.n: 1 null value(s) not allowed"),
        ({"n": [1.0, 1.5, 2.0]}, None),
        ({"n": ["1", "x", "2"]}, "t.n: cannot read values as int"),
        ({"maybe_n": pd.array([None, -4, 1], dtype="Int64")}, "value np.int64(-4) is below 0"),
        ({"maybe_n": [None, -4.0, np.nan]}, "t.maybe_n: value np.int64(-4) is below 0"),
        ({"maybe_n": [None, 1.5, np.nan]}, "cannot read values as int"),
        ({"maybe_n": np.array([None, -4, 2], dtype=object)}, "value np.int64(-4) is below 0"),
        ({"cost": [0.1, -0.000_000_000_4, 0.2]}, None),  # rounds to -0.0, not below 0
        ({"cost": [0.1, -0.000_000_001, 0.2]}, "t.cost: value np.float64(-1e-09) is below 0"),
        ({"cost": np.array([None, 1, 2], dtype=object)}, "t.cost: 1 null value(s) not allowed"),
        ({"share": [np.nan, -0.5, 1.0]}, "t.share: value np.float64(-0.5) is below 0"),
        ({"share": ["0.5", "half", "1"]}, "t.share: cannot read values as float"),
        ({"flag": ["yes", "no", None]}, "t.flag: cannot read values as bool"),
        ({"at": ["2026-10-01T00:00:00Z", "never", None]}, "t.at: cannot read values as datetime"),
    ],
)
def test_bad_values_fail_as_before(changes: dict[str, Any], message: str | None) -> None:
    frame = _frame(**changes)
    want = outcome(lambda df: reference_conform(SCHEMA, df), frame)
    assert_same(outcome(SCHEMA.conform, frame), want)
    if message is None:
        assert isinstance(want, pd.DataFrame)
    else:
        assert want[0] == "SchemaError"
        assert message in want[1]


def test_a_missing_required_column_is_named() -> None:
    with pytest.raises(SchemaError, match="t: missing required column 'cost'"):
        SCHEMA.conform(_frame().drop(columns="cost"))


def test_missing_nullable_columns_are_nulls_of_their_kind() -> None:
    frame = _frame().drop(columns=["at", "maybe_n", "share", "flag", "note"])
    assert_same(SCHEMA.conform(frame), reference_conform(SCHEMA, frame))
    assert_same(
        SCHEMA.empty_frame(), reference_conform(SCHEMA, pd.DataFrame(columns=SCHEMA.column_names))
    )


def test_a_frame_in_stored_form_comes_back_equal_in_a_new_frame() -> None:
    frame = SCHEMA.conform(_frame(rows=3).set_index(pd.Index([7, 3, 5])))
    out = SCHEMA.conform(frame)
    assert_same(out, frame)
    assert out.index.equals(pd.RangeIndex(3))
    # No memory shared: changing what conform returned leaves what it was given alone.
    out.loc[0, "id"] = "changed"
    out.loc[0, "n"] = 99
    out.loc[0, "maybe_n"] = 99
    out.loc[0, "at"] = pd.Timestamp("2000-01-01", tz="UTC")
    assert frame.loc[0, "id"] == "e0"
    assert frame.loc[0, "n"] == 0
    assert frame.loc[0, "maybe_n"] == 1
    assert frame.loc[0, "at"] == pd.Timestamp("2026-10-01 12:00", tz="UTC")


def test_money_is_rounded_to_nano_usd() -> None:
    out = SCHEMA.conform(_frame(cost=np.array([1, 2, 3], dtype=np.int64)))
    assert out["cost"].dtype == np.float64
    out = SCHEMA.conform(_frame(cost=[0.1234567891234, 1e-10, 2.0000000005]))
    assert out["cost"].tolist() == [0.123456789, 0.0, 2.0]


def test_sqlite_read_shapes_take_the_stored_dtypes() -> None:
    """What `pd.read_sql` gives for a SQLite read: numbers with None left as objects, naive
    timestamps, dates as `date` objects."""
    rows = 4
    frame = _frame(
        rows=rows,
        at=pd.Series([datetime(2026, 10, 1, 12) + timedelta(hours=i) for i in range(rows)]),
        maybe_n=np.array([None, 2, None, 4], dtype=object),
        share=np.array([None] * rows, dtype=object),
        flag=np.array([True, None, False, True], dtype=object),
        note=["a", None, "c", None],
    )
    out = SCHEMA.conform(frame)
    assert_same(out, reference_conform(SCHEMA, frame))
    assert [str(t) for t in out.dtypes] == [
        "object", "object", "datetime64[ns, UTC]", "int64", "Int64", "float64", "float64",
        "boolean", "object",
    ]  # fmt: skip
