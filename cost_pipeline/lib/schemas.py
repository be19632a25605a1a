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
        """
        columns: dict[str, pd.Series] = {}
        for c in self.columns:
            if c.name in df.columns:
                series = df[c.name]
            elif c.nullable:
                series = pd.Series(None, index=df.index, dtype="object")
            else:
                raise SchemaError(f"{self.name}: missing required column {c.name!r}")
            columns[c.name] = _coerce(series, c, self.name)
        # One frame from all columns at once (inserting them one by one is quadratic in pandas).
        return pd.DataFrame(columns, index=df.index).reset_index(drop=True)


def _already(series: pd.Series, kind: str) -> bool:
    """Whether `series` already has the stored form of `kind` (conform leaves it as it is)."""
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


def _coerce(series: pd.Series, c: Column, table: str) -> pd.Series:
    try:
        if _already(series, c.kind):
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
