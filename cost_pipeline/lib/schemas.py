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

INTERACTION_KEYS = (
    col("event_id", "str", nullable=False),
    col("occurred_at", "datetime", nullable=False),
    col("day", "date", nullable=False),
    col("tenant_id", "str", nullable=False),
    col("user_id", "str"),
    col("agent_id", "str"),
    col("workflow_id", "str"),
    col("parent_event_id", "str"),
    col("provider", "str", nullable=False),
    col("model", "str", nullable=False),
    col("service_tier", "str"),
    col("batch", "bool"),
)

LLM_INTERACTIONS = TableSchema(
    name="llm_interactions",
    columns=(
        *INTERACTION_KEYS,
        *(tokens(t) for t in TOKEN_COLUMNS),
        col("latency_ms", "int", min_value=0),
        col("status", "str"),
        col("source_file", "str"),
    ),
    unique=("event_id",),
    indexes=(("day",), ("tenant_id", "day")),
    doc="One row per LLM call from the app's interaction log.",
)

QUARANTINE = TableSchema(
    name="quarantine",
    columns=(
        col("source", "str", nullable=False),
        col("day", "date"),
        col("raw", "str", nullable=False),
        col("reason", "str", nullable=False),
        col("detected_at", "datetime", nullable=False),
    ),
    partition_column=None,
    indexes=(("source",),),
    doc="Every rejected input record, whole, with the reason.",
)

INGESTED_FILES = TableSchema(
    name="ingested_files",
    columns=(
        col("source", "str", nullable=False),
        col("path", "str", nullable=False),
        col("sha256", "str", nullable=False),
        col("size_bytes", "int", nullable=False, min_value=0),
        col("rows_loaded", "int", nullable=False, min_value=0),
        col("rows_duplicate", "int", nullable=False, min_value=0),
        col("rows_quarantined", "int", nullable=False, min_value=0),
        col("ingested_at", "datetime", nullable=False),
    ),
    partition_column=None,
    unique=("source", "sha256"),
    doc="Files ingested by the incremental file ingesters; same content is never read twice.",
)

MODEL_PRICES = TableSchema(
    name="model_prices",
    columns=(
        col("provider", "str", nullable=False),
        col("model_pattern", "str", nullable=False),
        col("effective_from", "datetime"),
        col("effective_to", "datetime"),
        col("service_tier", "str"),
        col("batch", "bool"),
        col("input_mtok", "float", min_value=0),
        col("cache_read_mtok", "float", min_value=0),
        col("cache_write_mtok", "float", min_value=0),
        col("cache_write_1h_mtok", "float", min_value=0),
        col("output_mtok", "float", min_value=0),
        col("web_search_ktok", "float", min_value=0),
        col("long_context_threshold", "int", min_value=0),
        col("long_input_mtok", "float", min_value=0),
        col("long_cache_read_mtok", "float", min_value=0),
        col("long_cache_write_mtok", "float", min_value=0),
        col("long_cache_write_1h_mtok", "float", min_value=0),
        col("long_output_mtok", "float", min_value=0),
        col("source", "str", nullable=False),
        col("price_version", "str", nullable=False),
    ),
    partition_column=None,
    doc="Effective-dated rate card: genai-prices snapshot plus negotiated overrides.",
)

PRICED_INTERACTIONS = TableSchema(
    name="priced_interactions",
    columns=(
        *INTERACTION_KEYS,
        *(tokens(t) for t in TOKEN_COLUMNS),
        money("cost_input_usd"),
        money("cost_cache_read_usd"),
        money("cost_cache_write_usd"),
        money("cost_output_usd"),
        money("cost_other_usd"),
        money("cost_usd"),
        col("price_version", "str"),
        col("pricing_status", "str", nullable=False),
    ),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Interactions priced with the effective rate card; unknown models flagged, never $0.",
)

PROVIDER_USAGE_COLUMNS = (
    col("day", "date", nullable=False),
    col("provider", "str", nullable=False),
    col("project_or_workspace_id", "str"),
    col("api_key_id", "str"),
    col("model", "str"),
    col("service_tier", "str"),
    col("context_window", "str"),
    col("batch", "bool"),
    *(tokens(t) for t in TOKEN_COLUMNS),
    tokens("requests"),
    col("tenant_id", "str"),
)

OPENAI_USAGE = TableSchema(
    name="openai_usage",
    columns=PROVIDER_USAGE_COLUMNS,
    doc="OpenAI usage buckets normalized to the token convention.",
)
ANTHROPIC_USAGE = TableSchema(
    name="anthropic_usage",
    columns=PROVIDER_USAGE_COLUMNS,
    doc="Anthropic usage buckets normalized to the token convention.",
)

PROVIDER_USAGE_PRICED = TableSchema(
    name="provider_usage_priced",
    columns=(
        *PROVIDER_USAGE_COLUMNS,
        money("cost_input_usd"),
        money("cost_cache_read_usd"),
        money("cost_cache_write_usd"),
        money("cost_output_usd"),
        money("cost_other_usd"),
        money("cost_usd"),
        col("price_version", "str"),
        col("pricing_status", "str", nullable=False),
    ),
    doc="Provider usage buckets priced with the same engine as interactions.",
)

PROVIDER_REPORTED_COSTS = TableSchema(
    name="provider_reported_costs",
    columns=(
        col("day", "date", nullable=False),
        col("provider", "str", nullable=False),
        col("project_or_workspace_id", "str"),
        col("line_item", "str"),
        col("model", "str"),
        money("amount_usd", signed=True),
        col("tenant_id", "str"),
    ),
    doc="What the providers' cost endpoints report, in USD.",
)

LLM_COST_RECONCILIATION = TableSchema(
    name="llm_cost_reconciliation",
    columns=(
        col("day", "date", nullable=False),
        col("provider", "str", nullable=False),
        col("model", "str"),
        money("app_log_cost_usd"),
        money("provider_usage_cost_usd"),
        money("provider_reported_cost_usd", nullable=True, signed=True),
        col("coverage_pct", "float"),
        col("drift_pct", "float"),
        col("reported_drift_pct", "float"),
        col("tenant_id", "str"),
    ),
    doc="Per day and provider: app-log vs provider-usage vs provider-reported cost.",
)

CLOUD_COSTS = TableSchema(
    name="cloud_costs",
    columns=(
        col("charge_period_start", "datetime", nullable=False),
        col("day", "date", nullable=False),
        col("billing_period_start", "date"),
        col("provider", "str", nullable=False),
        col("service_name", "str"),
        col("service_category", "str"),
        col("sub_account_id", "str"),
        col("resource_id", "str"),
        col("region", "str"),
        col("tags", "json"),
        money("billed_cost", signed=True),
        money("effective_cost", signed=True),
        money("list_cost", signed=True),
        col("currency", "str"),
        col("charge_category", "str"),
        col("invoice_id", "str"),
        col("billing_account_id", "str"),
        col("extensions", "json"),
        col("source_file", "str"),
        col("tenant_id", "str"),
    ),
    indexes=(("day",),),
    doc="FinOps FOCUS rows, normalized.",
)

K8S_ALLOCATIONS = TableSchema(
    name="k8s_allocations",
    columns=(
        col("day", "date", nullable=False),
        col("cluster", "str"),
        col("namespace", "str"),
        col("controller", "str"),
        col("allocation_name", "str", nullable=False),
        col("labels", "json"),
        money("cpu_cost", signed=True),
        money("ram_cost", signed=True),
        money("gpu_cost", signed=True),
        money("pv_cost", signed=True),
        money("network_cost", signed=True),
        money("load_balancer_cost", signed=True),
        money("shared_cost", signed=True),
        money("external_cost", signed=True),
        money("total_cost", signed=True),
        col("tenant_id", "str"),
    ),
    doc="Kubecost / OpenCost allocations per day; idle and unmapped kept as their own rows.",
)

INFRA_COST_ALLOCATION = TableSchema(
    name="infra_cost_allocation",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("source", "str", nullable=False),
        col("provider", "str"),
        col("category", "str"),
        money("direct_cost", signed=True),
        money("shared_cost", signed=True),
        money("cost_usd", signed=True),
    ),
    doc="Cloud and Kubernetes cost per tenant and day, shared and idle cost spread by rule.",
)

DAILY_COST_SUMMARY = TableSchema(
    name="daily_cost_summary",
    columns=(
        col("day", "date", nullable=False),
        col("tenant_id", "str", nullable=False),
        col("cost_category", "str", nullable=False),
        col("provider", "str"),
        col("model_or_service", "str"),
        col("agent_id", "str"),
        tokens("requests"),
        tokens("input_tokens"),
        tokens("output_tokens"),
        money("cost_usd", signed=True),
        tokens("unpriced_requests"),
    ),
    indexes=(("day",), ("tenant_id", "day")),
    doc="Per day, tenant, category, provider, model or service and agent: requests, tokens, cost.",
)

TABLES: dict[str, TableSchema] = {
    t.name: t
    for t in (
        LLM_INTERACTIONS,
        QUARANTINE,
        INGESTED_FILES,
        MODEL_PRICES,
        PRICED_INTERACTIONS,
        OPENAI_USAGE,
        ANTHROPIC_USAGE,
        PROVIDER_USAGE_PRICED,
        PROVIDER_REPORTED_COSTS,
        LLM_COST_RECONCILIATION,
        CLOUD_COSTS,
        K8S_ALLOCATIONS,
        INFRA_COST_ALLOCATION,
        DAILY_COST_SUMMARY,
    )
}


def register(schema: TableSchema) -> TableSchema:
    """Add a table contract defined elsewhere (forecasts, budgets, billing) to `TABLES`."""
    TABLES[schema.name] = schema
    return schema
