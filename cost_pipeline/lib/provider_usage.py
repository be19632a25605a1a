"""Provider usage and cost reports, normalized to the warehouse's conventions.

Token convention (DESIGN §4): `input_tokens` is the TOTAL input. OpenAI's `input_tokens`
already includes cached input; Anthropic's `uncached_input_tokens` excludes cache writes and
reads, so total input = uncached + cache writes (5m + 1h) + cache reads.

Tenants come from the configuration's mappings: an API key mapping (the more specific) wins over
a project / workspace mapping; unmapped rows keep `tenant_id` null.

A bucket served twice (a repeated page) is counted once: rows are de-duplicated on the bucket
start, the endpoint and the grouping fields, keeping the last copy (a provider restating a
bucket).

OpenAI usage comes from every usage endpoint that bills (`lib.usage_endpoints`): each row says
its `endpoint` and carries its native unit (tokens; images with size and source; characters;
seconds; bytes; sessions). A result of an endpoint the registry does not know, or a non-zero
counter it does not know, is kept with the quantities listed in `unrecognized`, never dropped.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from cost_pipeline.catalog import ANTHROPIC_USAGE, OPENAI_USAGE, PROVIDER_REPORTED_COSTS
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.provider_pricing import Pricer as Pricer  # re-export
from cost_pipeline.lib.provider_pricing import price_provider_usage as price_provider_usage
from cost_pipeline.lib.usage_endpoints import (
    ANTHROPIC_MESSAGES,
    ENDPOINTS,
    NON_COUNTERS,
    OPENAI_KNOWN_BREAKDOWNS,
    classify_anthropic_costs,
    classify_openai_line_items,
    endpoint_from_object,
    endpoint_unit,
)

OPENAI = "openai"
ANTHROPIC = "anthropic"
OPENAI_GROUPS = (
    "model",
    "project_id",
    "api_key_id",
    "batch",
    "user_id",
    "service_tier",
    "size",
    "source",
)
ANTHROPIC_GROUPS = ("model", "workspace_id", "api_key_id", "service_tier", "context_window")
ANTHROPIC_COST_KEYS = (
    "workspace_id",
    "description",
    "model",
    "cost_type",
    "token_type",
    "service_tier",
    "context_window",
)
_DATED_SUFFIX = r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$"


def _flat(results: list[dict[str, Any]]) -> pd.DataFrame:
    # json_normalize flattens nested counters (cache_creation.*, server_tool_use.*, amount.*);
    # unknown extra fields simply become columns nobody selects.
    return pd.json_normalize(results) if results else pd.DataFrame()


def _column(df: pd.DataFrame, name: str, default: Any = None) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(default, index=df.index, dtype="object")


def _count(df: pd.DataFrame, name: str) -> pd.Series:
    values = pd.to_numeric(_column(df, name, 0), errors="raise").fillna(0)
    return values.astype("int64")


def _text(df: pd.DataFrame, name: str) -> pd.Series:
    values = _column(df, name)
    return values.astype("object").where(values.notna(), None)


def _days(starts: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(starts):
        moments = pd.to_datetime(starts, unit="s", utc=True)
    else:
        moments = pd.to_datetime(starts, utc=True, format="ISO8601")
    return moments.dt.date


def _dedup(df: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    present = [k for k in keys if k in df.columns]
    return df.drop_duplicates(subset=present, keep="last")


def _tenants(key_ids: pd.Series, owner_ids: pd.Series, key_map: dict, owner_map: dict):
    tenant = key_ids.map(key_map).astype("object")
    tenant = tenant.where(tenant.notna(), owner_ids.map(owner_map))
    return tenant.where(tenant.notna(), None)


def canonical_model(models: pd.Series) -> pd.Series:
    """Model names without a dated snapshot suffix (`gpt-4.1-2025-04-14` -> `gpt-4.1`)."""
    return models.astype("object").where(
        models.isna(), models.astype(str).str.replace(_DATED_SUFFIX, "", regex=True)
    )


def _numbers(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(_column(df, name, 0), errors="raise").fillna(0)


def _unrecognized(df: pd.DataFrame, provider: str, endpoints: pd.Series) -> pd.Series:
    """Per row, `field=value; ...` of the non-zero numeric fields its endpoint does not document,
    prefixed by `unknown endpoint <name>` for an endpoint the registry does not know."""
    known = {
        name: {*e.counters, *(OPENAI_KNOWN_BREAKDOWNS if name == "completions" else ())}
        for (p, name), e in ENDPOINTS.items()
        if p == provider
    }
    text = pd.Series("", index=df.index, dtype="object")
    for column in df.columns:
        if column in NON_COUNTERS or column == "endpoint":
            continue
        raw = df[column]
        if raw.map(lambda v: isinstance(v, bool)).any():
            continue  # a flag, not a quantity
        values = pd.to_numeric(raw, errors="coerce")
        documented = endpoints.isin([n for n, fields in known.items() if column in fields])
        odd = values.notna() & values.ne(0) & ~documented
        if odd.any():
            piece = column + "=" + values.astype(str).str.removesuffix(".0")
            text = text.where(~odd, text.where(text.eq(""), text + "; ") + piece)
    unknown = ~endpoints.isin(list(known))
    named = "unknown endpoint " + endpoints.astype(str) + text.where(text.eq(""), ": " + text)
    text = text.where(~unknown, named)
    return text.where(text.ne(""), None)


def normalize_openai_usage(results: list[dict[str, Any]], config: CostConfig) -> pd.DataFrame:
    """`openai_usage` rows from the usage results of any OpenAI usage endpoint, each carrying
    `bucket_start_time` (and `usage_endpoint`, the endpoint it was fetched from).

    The endpoint is the result object's (`organization.usage.<endpoint>.result`), else the one
    it was fetched from, else completions (results stored before endpoints existed).
    """
    df = _flat(results)
    if df.empty:
        return OPENAI_USAGE.empty_frame()
    name = endpoint_from_object(_column(df, "object"))
    name = name.where(name.notna(), _text(df, "usage_endpoint"))
    df = df.assign(endpoint=name.where(name.notna(), "completions").astype(str))
    df = _dedup(df, ("bucket_start_time", "endpoint", *OPENAI_GROUPS))
    endpoint = df["endpoint"]
    tokens = endpoint.isin(["completions", "embeddings", "moderations"])
    completions = endpoint.eq("completions")

    def only(mask: pd.Series, values: pd.Series) -> pd.Series:
        return values.astype("object").where(mask, None)

    project, key = _text(df, "project_id"), _text(df, "api_key_id")
    batch = _column(df, "batch").astype("boolean").fillna(False)
    sessions = _numbers(df, "num_sessions") + _numbers(df, "sessions")
    out = pd.DataFrame(
        {
            "day": _days(df["bucket_start_time"]),
            "provider": OPENAI,
            "project_or_workspace_id": project,
            "api_key_id": key,
            "model": _text(df, "model"),
            "service_tier": _text(df, "service_tier"),
            "context_window": None,
            "batch": batch,
            # OpenAI's input_tokens already include the cached ones: no addition here.
            "input_tokens": _count(df, "input_tokens").where(tokens, 0),
            "cache_read_tokens": _count(df, "input_cached_tokens").where(completions, 0),
            "cache_write_tokens": 0,
            "cache_write_1h_tokens": 0,
            "output_tokens": _count(df, "output_tokens").where(completions, 0),
            "reasoning_tokens": 0,
            "web_search_requests": 0,
            "requests": _count(df, "num_model_requests"),
            "tenant_id": _tenants(
                key,
                project,
                config.mapping("openai_api_key_ids"),
                config.mapping("openai_project_ids"),
            ),
            "endpoint": endpoint,
            "image_size": only(endpoint.eq("images"), _text(df, "size")),
            "image_source": only(endpoint.eq("images"), _text(df, "source")),
            "input_audio_tokens": only(completions, _count(df, "input_audio_tokens")),
            "output_audio_tokens": only(completions, _count(df, "output_audio_tokens")),
            "images": only(endpoint.eq("images"), _count(df, "images")),
            "characters": only(endpoint.eq("audio_speeches"), _count(df, "characters")),
            "audio_seconds": only(endpoint.eq("audio_transcriptions"), _numbers(df, "seconds")),
            "usage_bytes": only(endpoint.eq("vector_stores"), _count(df, "usage_bytes")),
            "sessions": only(endpoint.eq("code_interpreter_sessions"), sessions.astype("int64")),
            "unrecognized": _unrecognized(df, OPENAI, endpoint),
        }
    )
    return OPENAI_USAGE.conform(out)


def normalize_anthropic_usage(results: list[dict[str, Any]], config: CostConfig) -> pd.DataFrame:
    """`anthropic_usage` rows from messages usage results carrying `bucket_starting_at`."""
    df = _flat(results)
    if df.empty:
        return ANTHROPIC_USAGE.empty_frame()
    df = _dedup(df, ("bucket_starting_at", *ANTHROPIC_GROUPS))
    workspace, key = _text(df, "workspace_id"), _text(df, "api_key_id")
    tier = _text(df, "service_tier")
    uncached = _count(df, "uncached_input_tokens")
    write_5m = _count(df, "cache_creation.ephemeral_5m_input_tokens")
    write_1h = _count(df, "cache_creation.ephemeral_1h_input_tokens")
    reads = _count(df, "cache_read_input_tokens")
    out = pd.DataFrame(
        {
            "day": _days(df["bucket_starting_at"]),
            "provider": ANTHROPIC,
            "project_or_workspace_id": workspace,
            "api_key_id": key,
            "model": _text(df, "model"),
            "service_tier": tier,
            "context_window": _text(df, "context_window"),
            "batch": tier.eq("batch").fillna(False).astype(bool),
            # Anthropic's uncached count excludes cache traffic: total = all four parts.
            "input_tokens": uncached + write_5m + write_1h + reads,
            "cache_read_tokens": reads,
            "cache_write_tokens": write_5m,
            "cache_write_1h_tokens": write_1h,
            "output_tokens": _count(df, "output_tokens"),
            "reasoning_tokens": 0,
            "web_search_requests": _count(df, "server_tool_use.web_search_requests"),
            # The usage report carries no request count; the column stays 0 rather than a guess.
            "requests": _count(df, "num_model_requests"),
            "tenant_id": _tenants(
                key,
                workspace,
                config.mapping("anthropic_api_key_ids"),
                config.mapping("anthropic_workspace_ids"),
            ),
            "endpoint": ANTHROPIC_MESSAGES.name,
            "unrecognized": _unrecognized(
                df, ANTHROPIC, pd.Series(ANTHROPIC_MESSAGES.name, index=df.index)
            ),
        }
    )
    return ANTHROPIC_USAGE.conform(out)


def _check_currency(currency: pd.Series, expected: str, provider: str) -> None:
    bad = currency.notna() & currency.astype(str).str.upper().ne(expected)
    if bad.any():
        raise ValueError(
            f"{provider} cost report: {int(bad.sum())} result(s) in currency "
            f"{currency[bad].iloc[0]!r}, expected {expected}"
        )


def normalize_openai_costs(results: list[dict[str, Any]], config: CostConfig) -> pd.DataFrame:
    """`provider_reported_costs` rows from OpenAI cost results (`amount.value` in USD)."""
    df = _flat(results)
    if df.empty:
        return PROVIDER_REPORTED_COSTS.empty_frame()
    df = _dedup(df, ("bucket_start_time", "project_id", "line_item"))
    _check_currency(_column(df, "amount.currency"), "USD", "OpenAI")
    line_item = _text(df, "line_item")
    project = _text(df, "project_id")
    # Line items read "<model>, <kind>" (e.g. "gpt-4o-mini, input") or name a tool or storage.
    placed = classify_openai_line_items(line_item)
    out = pd.DataFrame(
        {
            "day": _days(df["bucket_start_time"]),
            "provider": OPENAI,
            "project_or_workspace_id": project,
            "line_item": line_item,
            "model": placed["model"],
            "amount_usd": pd.to_numeric(_column(df, "amount.value", 0)).fillna(0.0),
            "tenant_id": _tenants(project, project, {}, config.mapping("openai_project_ids")),
            "endpoint": placed["endpoint"],
            "cost_component": placed["cost_component"],
        }
    )
    return PROVIDER_REPORTED_COSTS.conform(out)


def normalize_anthropic_costs(results: list[dict[str, Any]], config: CostConfig) -> pd.DataFrame:
    """`provider_reported_costs` rows from Anthropic cost results (`amount`: cents as a string)."""
    df = _flat(results)
    if df.empty:
        return PROVIDER_REPORTED_COSTS.empty_frame()
    df = _dedup(df, ("bucket_starting_at", *ANTHROPIC_COST_KEYS))
    _check_currency(_column(df, "currency"), "USD", "Anthropic")
    workspace = _text(df, "workspace_id")
    description = _text(df, "description")
    fallback = (
        _text(df, "model").fillna("").astype(str)
        + ", "
        + _text(df, "token_type").fillna(_text(df, "cost_type")).fillna("").astype(str)
    )
    cents = pd.to_numeric(_column(df, "amount", "0").astype(str), errors="raise")
    placed = classify_anthropic_costs(
        _text(df, "cost_type"), _text(df, "token_type"), description, _text(df, "model")
    )
    out = pd.DataFrame(
        {
            "day": _days(df["bucket_starting_at"]),
            "provider": ANTHROPIC,
            "project_or_workspace_id": workspace,
            "line_item": description.where(description.notna(), fallback),
            "model": _text(df, "model"),
            "amount_usd": cents / 100.0,
            "tenant_id": _tenants(
                workspace, workspace, {}, config.mapping("anthropic_workspace_ids")
            ),
            "endpoint": placed["endpoint"],
            "cost_component": placed["cost_component"],
        }
    )
    return PROVIDER_REPORTED_COSTS.conform(out)


def usage_by_endpoint(usage: pd.DataFrame) -> pd.DataFrame:
    """Per endpoint: its unit, rows, requests, quantity in that unit (tokens: input + output)
    and rows with unrecognized quantities; for run metadata."""
    columns = ["endpoint", "unit", "rows", "requests", "quantity", "unrecognized_rows"]
    if usage.empty:
        return pd.DataFrame(columns=columns)
    provider = usage["provider"].astype(str)
    names = _text(usage, "endpoint").fillna("(none)")
    units = [endpoint_unit(p, n) for p, n in zip(provider, names, strict=True)]
    quantity = _numbers(usage, "input_tokens") + _numbers(usage, "output_tokens")
    for spec in ENDPOINTS.values():
        if spec.column is not None and spec.column in usage.columns:
            hit = names.eq(spec.name) & provider.eq(spec.provider)
            quantity = quantity.where(~hit, _numbers(usage, spec.column))
    frame = pd.DataFrame(
        {
            "endpoint": names,
            "unit": pd.Series(units, index=usage.index, dtype="object").fillna("?"),
            "requests": _numbers(usage, "requests"),
            "quantity": quantity,
            "odd": _text(usage, "unrecognized").notna(),
        }
    )
    grouped = frame.groupby(["endpoint", "unit"], sort=True)
    out = grouped.agg(
        rows=("requests", "size"),
        requests=("requests", "sum"),
        quantity=("quantity", "sum"),
        unrecognized_rows=("odd", "sum"),
    )
    return out.reset_index()[columns]
