"""Provider usage buckets priced by the app log's own engine (`provider_usage_priced`).

Token endpoints are priced at unit rates measured by the engine itself (exact within a tier);
buckets billed in other units (images, characters, seconds, bytes, sessions) or of endpoints the
pipeline does not know get no cost and a status that says so (`incomplete_usage`).
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from cost_pipeline.catalog import PROVIDER_USAGE_PRICED
from cost_pipeline.lib.pricing import INCOMPLETE_USAGE
from cost_pipeline.lib.schemas import TOKEN_COLUMNS
from cost_pipeline.lib.usage_endpoints import is_ledger_priced


class Pricer(Protocol):
    def price(self, df: pd.DataFrame) -> pd.DataFrame: ...


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

    Token endpoints (completions, embeddings, moderations, messages) are priced by the engine
    (`_price_tokens`). The engine has no price per image, character, second, byte or session:
    buckets of those endpoints (and of endpoints the pipeline does not know) get no cost and
    `pricing_status = incomplete_usage`, never a silent $0; the line-item reconciliation
    compares them with the provider-reported cost instead.
    """
    if usage.empty:
        return PROVIDER_USAGE_PRICED.empty_frame()
    frame = usage.reset_index(drop=True)
    endpoints = frame["endpoint"] if "endpoint" in frame else pd.Series(None, index=frame.index)
    priced = is_ledger_priced(frame["provider"], endpoints)
    parts = []
    if priced.any():
        parts.append(_price_tokens(frame.loc[priced], engine))
    if (~priced).any():
        units = frame.loc[~priced].copy()
        for column in (*_COST_PARTS, "cost_usd"):
            units[column] = 0.0
        units["price_version"] = None
        units["pricing_status"] = INCOMPLETE_USAGE
        parts.append(PROVIDER_USAGE_PRICED.conform(units))
    return PROVIDER_USAGE_PRICED.conform(pd.concat(parts, ignore_index=True))


_COST_PARTS = (
    "cost_input_usd",
    "cost_cache_read_usd",
    "cost_cache_write_usd",
    "cost_output_usd",
    "cost_other_usd",
)


def _price_tokens(usage: pd.DataFrame, engine: Pricer) -> pd.DataFrame:
    """Token buckets priced by the engine at unit rates.

    A bucket sums many requests, so pricing it as one request would put every busy bucket in
    a long-context tier (which applies per request). Instead the engine prices one synthetic
    request per component and distinct (provider, model, day, tier, batch, context window) and
    the bucket's tokens are multiplied by those unit rates: exact, because prices are linear
    within a tier. Anthropic reports each bucket's context window (`200k-1M` = long-context
    rates); OpenAI buckets are priced at the standard tier. Each bucket is priced at its day's
    midnight UTC, when that day's prices apply.
    """
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
    parts = list(_COST_PARTS)
    both[parts] = both[parts].round(9)
    both["cost_usd"] = both[parts].sum(axis=1)
    return PROVIDER_USAGE_PRICED.conform(both)
