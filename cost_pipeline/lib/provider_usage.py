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

from collections.abc import Callable
from typing import Any

import numpy as np
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
    """The column as Python objects, null (of any kind) as None."""
    if name not in df.columns:
        return pd.Series(None, index=df.index, dtype="object")
    values = df[name].to_numpy(dtype=object, copy=True)
    values[pd.isna(values)] = None
    return pd.Series(values, index=df.index, dtype="object")


def _per_distinct(values: pd.Series, convert: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """`convert(values)` for a row-wise `convert`, computed once per distinct value (null
    included): bucket starts, line items and the like repeat on every row of a bucket."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    converted = convert(pd.Series(uniques, dtype=values.dtype)).to_numpy(dtype=object)
    return pd.Series(converted.take(codes), index=values.index, dtype="object")


def _days(starts: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(starts):

        def days(distinct: pd.Series) -> pd.Series:
            return pd.to_datetime(distinct, unit="s", utc=True).dt.date

    else:

        def days(distinct: pd.Series) -> pd.Series:
            return pd.to_datetime(distinct, utc=True, format="ISO8601").dt.date

    return _per_distinct(starts, days)


def _dedup(df: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    present = [k for k in keys if k in df.columns]
    repeated = df.duplicated(subset=present, keep="last")
    return df.loc[~repeated] if repeated.any() else df


def _tenants(key_ids: pd.Series, owner_ids: pd.Series, key_map: dict, owner_map: dict):
    tenant = key_ids.map(key_map).astype("object")
    tenant = tenant.where(tenant.notna(), owner_ids.map(owner_map))
    return tenant.where(tenant.notna(), None)


def canonical_model(models: pd.Series) -> pd.Series:
    """Model names without a dated snapshot suffix (`gpt-4.1-2025-04-14` -> `gpt-4.1`)."""
    values = models.astype("object")
    if pd.api.types.infer_dtype(values, skipna=True) == "string":
        # Names repeat on many rows: strip each distinct name once; nulls stay as they are.
        codes, names = pd.factorize(values)
        stripped = names.str.replace(_DATED_SUFFIX, "", regex=True).to_numpy(dtype=object)
        out = values.to_numpy(dtype=object, copy=True)
        named = codes >= 0
        out[named] = stripped.take(codes[named])
        return pd.Series(out, index=models.index, dtype="object")
    return values.where(
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
    # Each row's endpoint by code, so that "documented for the row's endpoint" is a lookup.
    codes, names = pd.factorize(endpoints, use_na_sentinel=False)
    text = pd.Series("", index=df.index, dtype="object")
    for column in df.columns:
        if column in NON_COUNTERS or column == "endpoint":
            continue
        raw = df[column]
        if raw.dtype == bool or (
            raw.dtype.kind not in "iuf" and raw.map(lambda v: isinstance(v, bool)).any()
        ):
            continue  # a flag, not a quantity (numeric columns hold no booleans)
        values = pd.to_numeric(raw, errors="coerce")
        odd = (values.notna() & values.ne(0)).to_numpy(dtype=bool)
        if not odd.any():
            continue
        documents = np.array(
            [isinstance(n, str) and column in known.get(n, ()) for n in names], dtype=bool
        )
        odd = pd.Series(odd & ~documents.take(codes), index=df.index)
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
    name = _per_distinct(_column(df, "object"), endpoint_from_object)
    name = name.where(name.notna(), _text(df, "usage_endpoint"))
    df = df.assign(endpoint=name.where(name.notna(), "completions").astype(str))
    df = _dedup(df, ("bucket_start_time", "endpoint", *OPENAI_GROUPS))
    endpoint = df["endpoint"]
    tokens = endpoint.isin(["completions", "embeddings", "moderations"])
    completions = endpoint.eq("completions")
    images = endpoint.eq("images")

    def only(mask: pd.Series, read: Callable[[pd.DataFrame, str], pd.Series], name: str):
        """The column `name` read by `read`, on the rows of `mask` only (None elsewhere)."""
        if name not in df.columns and not mask.any():
            return pd.Series(None, index=df.index, dtype="object")  # nothing to read
        return read(df, name).astype("object").where(mask, None)

    project, key = _text(df, "project_id"), _text(df, "api_key_id")
    batch = _column(df, "batch").astype("boolean").fillna(False)
    sessions = (_numbers(df, "num_sessions") + _numbers(df, "sessions")).astype("int64")
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
            "image_size": only(images, _text, "size"),
            "image_source": only(images, _text, "source"),
            "input_audio_tokens": only(completions, _count, "input_audio_tokens"),
            "output_audio_tokens": only(completions, _count, "output_audio_tokens"),
            "images": only(images, _count, "images"),
            "characters": only(endpoint.eq("audio_speeches"), _count, "characters"),
            "audio_seconds": only(endpoint.eq("audio_transcriptions"), _numbers, "seconds"),
            "usage_bytes": only(endpoint.eq("vector_stores"), _count, "usage_bytes"),
            "sessions": sessions.astype("object").where(
                endpoint.eq("code_interpreter_sessions"), None
            ),
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
    # Classified once per distinct line item (each repeats for every project).
    codes, distinct = pd.factorize(line_item, use_na_sentinel=False)
    placed = classify_openai_line_items(pd.Series(distinct, dtype="object")).take(codes)
    placed.index = line_item.index
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
    # Classified once per distinct (cost type, token type, description, model).
    fields = [_text(df, "cost_type"), _text(df, "token_type"), description, _text(df, "model")]
    rows = pd.Series(list(zip(*(f.tolist() for f in fields), strict=True)), dtype="object")
    codes = pd.factorize(rows, use_na_sentinel=False)[0]
    first = np.unique(codes, return_index=True)[1]
    placed = classify_anthropic_costs(
        *(pd.Series(f.to_numpy().take(first), dtype="object") for f in fields)
    ).take(codes)
    placed.index = df.index
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
    present = set(zip(provider.tolist(), names.tolist(), strict=True))
    for spec in ENDPOINTS.values():
        if spec.column is not None and spec.column in usage.columns:
            if (spec.provider, spec.name) not in present and pd.api.types.is_numeric_dtype(
                usage[spec.column]
            ):
                continue  # no row of the endpoint (and a numeric column reads without error)
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
    out = grouped[["requests", "quantity", "odd"]].sum()
    out = out.rename(columns={"odd": "unrecognized_rows"}).assign(rows=grouped.size())
    return out.reset_index()[columns]
