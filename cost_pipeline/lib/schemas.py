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
from pandas.api.types import infer_dtype

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


def col(
    name: str, kind: Kind, *, nullable: bool = True, min_value: float | None = None, doc: str = ""
) -> Column:
    doc = doc or TOKEN_DOCS.get(name, "")
    return Column(name=name, kind=kind, nullable=nullable, min_value=min_value, doc=doc)


# Column documentation shared by every table that has the column; a table may say more.
TOKEN_DOCS = {
    "input_tokens": "Total input tokens of the call, including cache reads and cache writes.",
    "cache_read_tokens": "Input tokens read from the prompt cache (part of input_tokens).",
    "cache_write_tokens": "Input tokens written to the 5-minute prompt cache (part of input).",
    "cache_write_1h_tokens": "Input tokens written to the 1-hour prompt cache (part of input).",
    "output_tokens": "Output tokens, including reasoning tokens.",
    "reasoning_tokens": "Reasoning tokens (part of output_tokens; priced as output).",
    "web_search_requests": "Server-side web searches the call made.",
    "requests": "Number of model requests.",
    "unpriced_requests": "Requests whose cost is incomplete: no price, or usage the price lacks.",
}
MONEY_DOCS = {
    "cost_input_usd": "USD for uncached input tokens.",
    "cost_cache_read_usd": "USD for cache-read input tokens.",
    "cost_cache_write_usd": "USD for cache-write input tokens (5 minutes and 1 hour).",
    "cost_output_usd": "USD for output tokens.",
    "cost_other_usd": "USD for everything else the price has (web searches, per-request fees), "
    "or the whole cost an app reported (pricing_status app_reported).",
    "cost_usd": "Total USD, rounded half-even to 9 decimals; the components sum to it exactly.",
    "app_log_cost_usd": "The day's cost of the app's own log, priced by this pipeline.",
    "provider_usage_cost_usd": "The provider's usage report, priced with the same engine.",
    "provider_reported_cost_usd": "What the provider's cost endpoint reports (null if none).",
    "billed_cost": "FOCUS BilledCost: what the invoice charges, in `currency`.",
    "effective_cost": "FOCUS EffectiveCost: cost after discounts and amortized commitments.",
    "list_cost": "FOCUS ListCost: the public list price of the usage.",
    "contracted_cost": "FOCUS ContractedCost: the negotiated price of the usage.",
    "cpu_cost": "Allocated CPU cost.",
    "ram_cost": "Allocated memory cost.",
    "gpu_cost": "Allocated GPU cost.",
    "pv_cost": "Allocated persistent-volume cost.",
    "network_cost": "Allocated network cost.",
    "load_balancer_cost": "Allocated load-balancer cost.",
    "shared_cost": "Shared, unmapped or idle cost spread onto this row by the allocation rule.",
    "external_cost": "Out-of-cluster cost Kubecost attributes to the allocation.",
    "total_cost": "Sum of the allocation's components (idle rows may be negative).",
    "direct_cost": "Cost mapped to the tenant directly (by label, tag or account).",
    "spend_to_date_usd": "Spend from the month's first day through the as-of day.",
    "forecast_usd": "Projected month-end spend (usage forecast + known charges + to date).",
    "lower_80_usd": "Lower bound of the 80 % prediction interval of the month end.",
    "upper_80_usd": "Upper bound of the 80 % prediction interval of the month end.",
    "lower_95_usd": "Lower bound of the 95 % prediction interval of the month end.",
    "upper_95_usd": "Upper bound of the 95 % prediction interval of the month end.",
    "naive_run_rate_usd": "Month end at the month-to-date daily run rate, for comparison.",
    "known_remaining_usd": "Credits and fixed or recurring fees still due this month, as known.",
    "budget_usd": "The monthly budget the forecast is compared with (null if none).",
    "actual_usd": "The driver's cost on the day.",
    "expected_usd": "The driver's expected cost on the day from its robust baseline.",
    "impact_usd": "Dollars above (or below, negative) expectation since the anomaly started.",
    "spend_usd": "Spend in the period up to the as-of instant.",
    "llm_cost_usd": "The LLM part of the spend.",
    "other_cost_usd": "Cloud, Kubernetes and unattributed part of the spend.",
    "day_spend_usd": "Spend on the UTC day.",
    "budget_monthly_usd": "Configured monthly budget (null if none).",
    "budget_daily_usd": "Configured daily budget (null if none).",
    "included_usage_usd": "Usage included in the tier's price.",
    "hard_cap_usd": "Spend at which a capped tier is blocked (null if not capped).",
    "limit_usd": "The limit utilization is measured against.",
    "forecast_month_end_usd": "The latest month-end forecast for the period.",
    "forecast_lower_usd": "The lower 80 % bound of that forecast: a forecast breach is alerted "
    "only when even this bound is over the limit.",
    "forecast_upper_usd": "The upper 80 % bound of that forecast.",
    "usage_usd": "The period's billable usage in USD.",
    "unit_price_usd": "Price per overage unit.",
    "tier_price_usd": "The tier's monthly price.",
    "overage_usd": "Overage billed for the period.",
    "revenue_usd": "Tier price plus overage.",
    "gross_margin_usd": "Revenue minus the period's whole cost.",
}
TOKEN_DOCS |= {
    "included_tokens": "Tokens included in the tier's price.",
    "usage_tokens": "Input plus output tokens used in the period.",
}


def tokens(name: str, *, doc: str = "") -> Column:
    return Column(
        name=name, kind="int", nullable=False, min_value=0, doc=doc or TOKEN_DOCS.get(name, "")
    )


def money(name: str, *, nullable: bool = False, signed: bool = False, doc: str = "") -> Column:
    return Column(
        name=name,
        kind="money",
        nullable=nullable,
        min_value=None if signed else 0,
        doc=doc or MONEY_DOCS.get(name, ""),
    )


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    partition_column: str | None = "day"
    unique: tuple[str, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = field(default_factory=tuple)
    doc: str = ""
    # The table whose rows this one is a column subset of: stored there once, read as a view.
    view_of: str | None = None
    # Postgres: declaratively partitioned by day, so replacing a day is a truncate of one
    # partition and a lookup never scans other days.
    day_partitioned: bool = False

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

        Called on every chunk read from and written to the warehouse, so a column already in
        its stored form costs one vectorized check, not a conversion (see `_coerce`). The
        result is a new frame (it shares no memory with `df`) with a fresh `RangeIndex`.
        """
        index = pd.RangeIndex(len(df))
        columns: dict[str, ArrayLike | pd.Series] = {}
        unchanged = True
        for c in self.columns:
            if c.name in df.columns:
                series = df[c.name]
            elif c.nullable:
                series = pd.Series(None, index=df.index, dtype="object")
            else:
                raise SchemaError(f"{self.name}: missing required column {c.name!r}")
            source = _array(series)
            values = _coerce(series, source, c, self.name)
            unchanged = unchanged and values is source
            # An object array goes in as a Series of that dtype: pandas would infer datetimes
            # in a bare one (a column of NaT, of datetime objects), a Series it leaves alone.
            if values.dtype == object:
                values = pd.Series(values, index=index, dtype=object, copy=False)
            columns[c.name] = values
        if unchanged and _is_plain(df, self.column_names):
            # `df` is in stored form already: its copy is the frame built below, made faster.
            return df.copy()
        # One frame from all columns at once (inserting them one by one is quadratic in pandas).
        # Arrays on a fresh index, not `df`'s Series: nothing to align, and the copy pandas
        # makes when it consolidates the columns is the only one (no `reset_index` copy).
        return pd.DataFrame(columns, index=index)


ArrayLike = np.ndarray | pd.api.extensions.ExtensionArray

# Integers a float64 holds exactly (so no conversion below decides a rounding case).
_EXACT_FLOAT_INT = 2.0**53


def _array(series: pd.Series) -> ArrayLike:
    """The array behind `series`, without a copy: the ndarray, or the extension array."""
    if isinstance(series.dtype, pd.api.extensions.ExtensionDtype):
        return series.array
    return series.to_numpy(copy=False)


def _is_plain(df: pd.DataFrame, names: list[str]) -> bool:
    """Whether `df` is a plain frame of exactly the columns `names` on a default index."""
    index, columns = df.index, df.columns
    return (
        type(df) is pd.DataFrame
        and isinstance(index, pd.RangeIndex)
        and index.start == 0
        and index.step == 1
        and index.name is None
        and type(columns) is pd.Index
        and columns.dtype == object
        and columns.name is None
        and list(columns) == names
        and not df.attrs
        and df.flags.allows_duplicate_labels
    )


def _coerce(series: pd.Series, values: ArrayLike, c: Column, table: str) -> ArrayLike:
    """`series` (whose array is `values`) in the stored form of column `c`, checked against its
    nullability and bound; `values` itself when it is in that form already."""
    try:
        fast = _stored(values, c)
        if fast is not None:
            result, nulls = fast
        else:
            result, nulls = _convert(series, c), None
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{table}.{c.name}: cannot read values as {c.kind}: {exc}") from exc
    if not c.nullable:
        if nulls is None:
            nulls = _null_count(result)
        if nulls:
            raise SchemaError(f"{table}.{c.name}: {nulls} null value(s) not allowed")
    if c.min_value is not None and len(result):
        _check_bound(result, c, table)
    return result


def _convert(series: pd.Series, c: Column) -> ArrayLike:
    """The general path: `series` converted to the stored form of `c.kind`."""
    if c.kind == "int":
        values = pd.to_numeric(series, errors="raise")
        if values.dtype == np.float64:
            fast = _float_to_int(values.to_numpy())
            if fast is not None:
                return fast[0]
        return _array(values.astype("Int64") if values.isna().any() else values.astype("int64"))
    if c.kind in ("float", "money"):
        result = pd.to_numeric(series, errors="raise").astype("float64")
        return _array(result.round(MONEY_DECIMALS) if c.kind == "money" else result)
    if c.kind == "bool":
        return _array(series.astype("boolean"))
    if c.kind == "date":
        return _array(pd.to_datetime(series, errors="raise").dt.date.astype("object"))
    if c.kind == "datetime":
        return _array(pd.to_datetime(series, errors="raise", utc=True))
    return _array(series.astype("object").where(series.notna(), None))


def _stored(values: ArrayLike, c: Column) -> tuple[ArrayLike, int | None] | None:
    """`values` in the stored form of `c.kind` by a fast path, or None when there is none.

    Returns the stored values and their number of nulls if the fast path knows it (else None).
    Each fast path gives exactly what `_convert` gives for the same values (tested in
    `cost_pipeline_tests/lib/test_schemas_conform.py`); values it is not sure of go there.
    """
    if not isinstance(values, np.ndarray):
        return _stored_extension(values, c)
    kind, dtype = c.kind, values.dtype
    if dtype.kind == "O":
        if kind in ("str", "json"):
            return _stored_text(values)
        if kind == "date":
            # `date` objects (a datetime is one too) and `NaT`, the one null `infer_dtype` lets
            # in here, and the one such value that is not equal to itself.
            if infer_dtype(values, skipna=False) != "date":
                return None
            return values, None if c.nullable else int((values != values).sum())
        if kind in ("int", "float", "money"):
            floats = _object_floats(values)
            if floats is None:
                return None
            if kind == "int":
                return _float_to_int(floats)
            return (floats.round(MONEY_DECIMALS) if kind == "money" else floats), None
        return None
    if kind == "int" and dtype == np.int64:
        return values, 0
    if kind == "int" and dtype == np.float64:
        return _float_to_int(values)
    if kind == "float" and dtype == np.float64:
        return values, None
    if kind == "money" and dtype == np.float64:
        rounded = values.round(MONEY_DECIMALS)
        # Rounded already (equal values are equal bits here, the sign of a zero too)?
        return (values if np.array_equal(rounded, values, equal_nan=True) else rounded), None
    if kind == "money" and dtype == np.int64:
        return values.astype(np.float64).round(MONEY_DECIMALS), None
    if kind == "datetime" and dtype.kind == "M":
        return _utc(values), None
    return None


def _stored_extension(
    values: pd.api.extensions.ExtensionArray, c: Column
) -> tuple[ArrayLike, int | None] | None:
    """`_stored` for an extension array (Int64, boolean, tz-aware datetimes)."""
    dtype = values.dtype
    if c.kind == "int" and dtype == "Int64":
        nulls = values.isna()
        if nulls.any():
            return values, int(nulls.sum())
        return values.to_numpy(dtype=np.int64), 0
    if c.kind == "bool" and dtype == "boolean":
        return values, None
    if c.kind == "datetime" and isinstance(dtype, pd.DatetimeTZDtype):
        return (values if str(dtype.tz) == "UTC" else _utc(values)), None
    return None


def _stored_text(values: np.ndarray) -> tuple[np.ndarray, int]:
    """An object array of a `str` or `json` column with its nulls as None, and their count."""
    # Only `str` values (one C-level pass): nothing is null, nothing to replace.
    if infer_dtype(values, skipna=False) == "string":
        return values, 0
    nulls = pd.isna(values)
    count = int(nulls.sum())
    # Unless every null is None already (a null compares unequal to None unless it is None).
    if count and values[nulls].tolist().count(None) != count:
        values = values.copy()
        values[nulls] = None
    return values, count


def _utc(values: ArrayLike) -> ArrayLike:
    """Datetime64 values, naive (taken as UTC) or zoned, as UTC; as `_convert` does it, but
    without the cache of `to_datetime`, which looks up the unique values: it pays off for text
    to parse, not for values that only get or change a time zone."""
    return _array(pd.to_datetime(pd.Series(values), errors="raise", utc=True, cache=False))


def _object_floats(values: np.ndarray) -> np.ndarray | None:
    """The float64 array `pd.to_numeric` makes of an object array of nulls (None, NaN, NA) and
    whole numbers with at least one null; None for anything else (left to `pd.to_numeric`).

    This is what a nullable INTEGER or REAL column of a SQLite read holds: pandas leaves a
    column of numbers and None as objects."""
    if not len(values):
        return None
    inferred = infer_dtype(values, skipna=True)
    if inferred == "empty":
        return np.full(len(values), np.nan)
    if inferred != "integer":
        return None
    nulls = pd.isna(values)
    if not nulls.any():
        return None  # pd.to_numeric keeps integers without a null as int64
    floats = np.full(len(values), np.nan)
    try:
        floats[~nulls] = values[~nulls].astype(np.float64)
    except OverflowError:
        return None
    if not np.all(np.abs(floats[~nulls]) < _EXACT_FLOAT_INT):
        return None
    return floats


def _float_to_int(values: np.ndarray) -> tuple[ArrayLike, int] | None:
    """float64 values with NaN as Int64, as pandas converts them, and their null count.

    None (use the general path) when no value is NaN or a value is not a whole number that
    float64 holds exactly, so that no error or rounding case is decided here.
    """
    nulls = np.isnan(values)
    count = int(nulls.sum())
    if not count:
        return None
    present = values[~nulls]
    if not (np.all(np.abs(present) < _EXACT_FLOAT_INT) and np.all(np.trunc(present) == present)):
        return None
    data = values.copy()
    data[nulls] = 1  # what pandas holds under the mask of an IntegerArray
    return pd.arrays.IntegerArray(data.astype(np.int64), nulls), count


def _null_count(values: ArrayLike) -> int:
    """How many of `values` are null (NaN, None, NA, NaT)."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iub":
            return 0
        if values.dtype.kind == "f":
            return int(np.isnan(values).sum())
    return int(pd.isna(values).sum())


def _check_bound(values: ArrayLike, c: Column, table: str) -> None:
    """Raise `SchemaError` with the first value under `c.min_value` (nulls are not checked)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        below = values < c.min_value  # NaN compares False
    elif isinstance(values, pd.arrays.IntegerArray | pd.arrays.FloatingArray):
        below = (values < c.min_value).to_numpy(dtype=bool, na_value=False)
    else:
        present = pd.Series(values).dropna()
        below = present < c.min_value
        if bool(np.asarray(below).any()):
            example = present[below].iloc[0]
            raise SchemaError(f"{table}.{c.name}: value {example!r} is below {c.min_value}")
        return
    if below.any():
        example = values[below][0]
        raise SchemaError(f"{table}.{c.name}: value {example!r} is below {c.min_value}")


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
