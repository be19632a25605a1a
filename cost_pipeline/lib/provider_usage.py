"""Provider usage and cost reports, normalized to the warehouse's conventions.

Token convention (DESIGN §4): `input_tokens` is the TOTAL input. OpenAI's `input_tokens`
already includes cached input; Anthropic's `uncached_input_tokens` excludes cache writes and
reads, so total input = uncached + cache writes (5m + 1h) + cache reads.

Tenants come from the configuration's mappings: an API key mapping (the more specific) wins over
a project / workspace mapping; unmapped rows keep `tenant_id` null.

A bucket served twice (a repeated page) is counted once: rows are de-duplicated on the bucket
start and the grouping fields, keeping the last copy (a provider restating a bucket).
"""

from __future__ import annotations

from typing import Any, Protocol

import pandas as pd

from cost_pipeline.catalog import (
    ANTHROPIC_USAGE,
    OPENAI_USAGE,
    PROVIDER_REPORTED_COSTS,
    PROVIDER_USAGE_PRICED,
)
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.schemas import TOKEN_COLUMNS

OPENAI = "openai"
ANTHROPIC = "anthropic"
OPENAI_GROUPS = ("model", "project_id", "api_key_id", "batch", "user_id", "service_tier")
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


class Pricer(Protocol):
    def price(self, df: pd.DataFrame) -> pd.DataFrame: ...


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


def normalize_openai_usage(results: list[dict[str, Any]], config: CostConfig) -> pd.DataFrame:
    """`openai_usage` rows from completions usage results carrying `bucket_start_time`."""
    df = _flat(results)
    if df.empty:
        return OPENAI_USAGE.empty_frame()
    df = _dedup(df, ("bucket_start_time", *OPENAI_GROUPS))
    project, key = _text(df, "project_id"), _text(df, "api_key_id")
    batch = _column(df, "batch").astype("boolean").fillna(False)
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
            "input_tokens": _count(df, "input_tokens"),
            "cache_read_tokens": _count(df, "input_cached_tokens"),
            "cache_write_tokens": 0,
            "cache_write_1h_tokens": 0,
            "output_tokens": _count(df, "output_tokens"),
            "reasoning_tokens": 0,
            "web_search_requests": 0,
            "requests": _count(df, "num_model_requests"),
            "tenant_id": _tenants(
                key,
                project,
                config.mapping("openai_api_key_ids"),
                config.mapping("openai_project_ids"),
            ),
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
    # Line items read "<model>, <kind>" (e.g. "gpt-4o-mini, input").
    model = line_item.astype("object").where(
        line_item.isna(), line_item.astype(str).str.split(", ", n=1).str[0]
    )
    out = pd.DataFrame(
        {
            "day": _days(df["bucket_start_time"]),
            "provider": OPENAI,
            "project_or_workspace_id": project,
            "line_item": line_item,
            "model": model,
            "amount_usd": pd.to_numeric(_column(df, "amount.value", 0)).fillna(0.0),
            "tenant_id": _tenants(project, project, {}, config.mapping("openai_project_ids")),
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
        }
    )
    return PROVIDER_REPORTED_COSTS.conform(out)


# Synthetic probe sizes: far below any long-context threshold (128k+) for the standard tier,
# above the 200k threshold for buckets the provider reports in its long-context window.
_PROBE_TOKENS = 100_000
_LONG_PROBE_TOKENS = 500_000
_WEB_SEARCH_PROBE = 1_000
_RATE_KEYS = ["provider", "model", "occurred_at", "service_tier", "batch", "long_context"]
_PROBES = {
    # component: (the probe's token columns, the cost column whose rate it measures)
    "input": ({}, "cost_input_usd"),
    "cache_read": ({"cache_read_tokens": 1}, "cost_cache_read_usd"),
    "cache_write": ({"cache_write_tokens": 1}, "cost_cache_write_usd"),
    "cache_write_1h": ({"cache_write_1h_tokens": 1}, "cost_cache_write_usd"),
    "output": ({"output_tokens": 1}, "cost_output_usd"),
}


def _unit_rates(keys: pd.DataFrame, engine: Pricer) -> pd.DataFrame:
    """USD per token of each component (and per web search) for each distinct pricing key,
    measured by pricing one synthetic request per component with the engine itself."""
    probes = []
    size = keys["long_context"].map({True: _LONG_PROBE_TOKENS, False: _PROBE_TOKENS})
    for component, (extra, _) in _PROBES.items():
        # Every probe carries `size` input tokens so that it lands in the intended tier.
        probe = keys.assign(probe=component, input_tokens=size)
        for column in TOKEN_COLUMNS:
            if column != "input_tokens":
                probe[column] = size if column in extra else 0
        probes.append(probe)
    searches = keys.assign(probe="web_search", input_tokens=0)
    for column in TOKEN_COLUMNS[1:]:
        searches[column] = _WEB_SEARCH_PROBE if column == "web_search_requests" else 0
    frame = pd.concat([*probes, searches], ignore_index=True)
    priced = engine.price(frame.drop(columns=["long_context", "probe"]))
    priced["probe"] = frame["probe"].to_numpy()
    priced["long_context"] = frame["long_context"].to_numpy()
    rates = keys.copy()
    for component, (_, cost_column) in _PROBES.items():
        rows = priced.loc[priced["probe"] == component]
        per_token = pd.to_numeric(rows[cost_column]).fillna(0.0).to_numpy() / size.to_numpy()
        rates[f"rate_{component}"] = per_token
    first = priced.loc[priced["probe"] == "input"]
    # `cost_other_usd` of a probe without searches is the per-request fee, if the model has one.
    fee = pd.to_numeric(first["cost_other_usd"]).fillna(0.0).to_numpy()
    rows = priced.loc[priced["probe"] == "web_search"]
    searched = pd.to_numeric(rows["cost_other_usd"]).fillna(0.0).to_numpy()
    rates["rate_web_search"] = (searched - fee) / _WEB_SEARCH_PROBE
    rates["rate_request"] = fee
    rates["price_version"] = first["price_version"].to_numpy()
    rates["pricing_status"] = first["pricing_status"].to_numpy()
    return rates


def price_provider_usage(usage: pd.DataFrame, engine: Pricer) -> pd.DataFrame:
    """`provider_usage_priced` rows: provider buckets priced by the same engine as the app log.

    A bucket sums many requests, so pricing it as one request would put every busy bucket in
    a long-context tier (which applies per request). Instead the engine prices one synthetic
    request per component and distinct (provider, model, day, tier, batch, context window) and
    the bucket's tokens are multiplied by those unit rates: exact, because prices are linear
    within a tier. Anthropic reports each bucket's context window (`200k-1M` = long-context
    rates); OpenAI buckets are priced at the standard tier. Each bucket is priced at its day's
    midnight UTC, when that day's prices apply.
    """
    if usage.empty:
        return PROVIDER_USAGE_PRICED.empty_frame()
    frame = usage.reset_index(drop=True).copy()
    frame["occurred_at"] = pd.to_datetime(frame["day"]).dt.tz_localize("UTC")
    frame["batch"] = frame["batch"].astype("boolean").fillna(False).astype(bool)
    window = frame["context_window"].astype("object").fillna("")
    frame["long_context"] = window.astype(str).str.startswith("200k")
    keys = frame[_RATE_KEYS].drop_duplicates().reset_index(drop=True)
    rates = _unit_rates(keys, engine)
    # merge on object keys with nulls: pandas matches None to None in merge keys
    both = frame.merge(rates, on=_RATE_KEYS, how="left", validate="many_to_one")
    tokens = {c: both[c].astype("int64") for c in TOKEN_COLUMNS}
    uncached = (
        tokens["input_tokens"]
        - tokens["cache_read_tokens"]
        - tokens["cache_write_tokens"]
        - tokens["cache_write_1h_tokens"]
    )
    both["cost_input_usd"] = uncached * both["rate_input"]
    both["cost_cache_read_usd"] = tokens["cache_read_tokens"] * both["rate_cache_read"]
    both["cost_cache_write_usd"] = (
        tokens["cache_write_tokens"] * both["rate_cache_write"]
        + tokens["cache_write_1h_tokens"] * both["rate_cache_write_1h"]
    )
    both["cost_output_usd"] = tokens["output_tokens"] * both["rate_output"]
    both["cost_other_usd"] = (
        tokens["web_search_requests"] * both["rate_web_search"]
        + both["requests"].astype("int64") * both["rate_request"]
    )
    parts = [
        "cost_input_usd",
        "cost_cache_read_usd",
        "cost_cache_write_usd",
        "cost_output_usd",
        "cost_other_usd",
    ]
    both[parts] = both[parts].round(9)
    both["cost_usd"] = both[parts].sum(axis=1)
    return PROVIDER_USAGE_PRICED.conform(both)
