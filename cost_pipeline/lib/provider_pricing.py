"""Provider usage buckets priced by the app log's own engine (`provider_usage_priced`).

Token endpoints are priced at unit rates measured by the engine itself (exact within a tier);
buckets billed in other units (images, characters, seconds, bytes, sessions) or of endpoints the
pipeline does not know get no cost and a status that says so (`incomplete_usage`).

Everything is column arithmetic: the distinct pricing keys are found by factorizing the key
columns, the engine prices one block of synthetic probes per component for all of them at once,
and each bucket takes its key's rates by position.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
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
_COST_PARTS = (
    "cost_input_usd",
    "cost_cache_read_usd",
    "cost_cache_write_usd",
    "cost_output_usd",
    "cost_other_usd",
)


def _costs_of(priced: pd.DataFrame, column: str) -> np.ndarray:
    """A cost column of the engine's answer as float64, null as 0."""
    values = pd.to_numeric(priced[column]).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(values), 0.0, values)


def _unit_rates(keys: pd.DataFrame, engine: Pricer) -> pd.DataFrame:
    """USD per token of each component (and per web search) for each distinct pricing key,
    measured by pricing one synthetic request per component with the engine itself.

    The probes of all keys are one frame of `len(_PROBES) + 1` blocks of `len(keys)` rows (one
    block per component, then the web-search probe), priced in one pass.
    """
    n = len(keys)
    blocks = len(_PROBES) + 1
    size = np.where(keys["long_context"].to_numpy(dtype=bool), _LONG_PROBE_TOKENS, _PROBE_TOKENS)
    size = size.astype(np.int64)
    zeros = np.zeros(n, dtype=np.int64)
    searches = np.full(n, _WEB_SEARCH_PROBE, dtype=np.int64)
    rows = np.tile(np.arange(n), blocks)
    frame: dict[str, object] = {
        c: keys[c].array.take(rows) for c in _RATE_KEYS if c != "long_context"
    }
    # Every token probe carries `size` input tokens so that it lands in the intended tier; the
    # web-search probe carries none.
    frame["input_tokens"] = np.concatenate([*([size] * len(_PROBES)), zeros])
    for column in TOKEN_COLUMNS[1:]:
        parts = [size if column in extra else zeros for extra, _ in _PROBES.values()]
        parts.append(searches if column == "web_search_requests" else zeros)
        frame[column] = np.concatenate(parts)
    priced = engine.price(pd.DataFrame(frame))
    rates: dict[str, np.ndarray] = {}
    for b, (component, (_, cost_column)) in enumerate(_PROBES.items()):
        rates[f"rate_{component}"] = _costs_of(priced, cost_column)[b * n : (b + 1) * n] / size
    other = _costs_of(priced, "cost_other_usd")
    # `cost_other_usd` of a probe without searches is the per-request fee, if the model has one.
    fee, searched = other[:n], other[(blocks - 1) * n :]
    rates["rate_web_search"] = (searched - fee) / _WEB_SEARCH_PROBE
    rates["rate_request"] = fee
    rates["price_version"] = np.asarray(priced["price_version"], dtype=object)[:n]
    rates["pricing_status"] = np.asarray(priced["pricing_status"], dtype=object)[:n]
    return keys.assign(**rates)


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
    priced = is_ledger_priced(frame["provider"], endpoints).to_numpy()
    if priced.all():  # the usual day: conformed once
        return PROVIDER_USAGE_PRICED.conform(_price_tokens(frame, engine))
    parts = []
    if priced.any():
        parts.append(PROVIDER_USAGE_PRICED.conform(_price_tokens(frame.loc[priced], engine)))
    units = frame.loc[~priced].copy()
    for column in (*_COST_PARTS, "cost_usd"):
        units[column] = 0.0
    units["price_version"] = None
    units["pricing_status"] = INCOMPLETE_USAGE
    parts.append(PROVIDER_USAGE_PRICED.conform(units))
    return PROVIDER_USAGE_PRICED.conform(pd.concat(parts, ignore_index=True))


def _key_codes(keys: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the index of its distinct key (null matching null), and the first row of each
    distinct key."""
    code = np.zeros(len(keys), dtype=np.int64)
    for column in keys.columns:
        codes, uniques = pd.factorize(keys[column], use_na_sentinel=False)
        # Dense again after each column, so the combined code never outgrows the row count.
        code = pd.factorize(code * len(uniques) + codes)[0]
    _, first = np.unique(code, return_index=True)
    return code, first


def _price_tokens(usage: pd.DataFrame, engine: Pricer) -> pd.DataFrame:
    """Token buckets priced by the engine at unit rates (the `PROVIDER_USAGE_PRICED` columns and
    others; not conformed).

    A bucket sums many requests, so pricing it as one request would put every busy bucket in
    a long-context tier (which applies per request). Instead the engine prices one synthetic
    request per component and distinct (provider, model, day, tier, batch, context window) and
    the bucket's tokens are multiplied by those unit rates: exact, because prices are linear
    within a tier. Anthropic reports each bucket's context window (`200k-1M` = long-context
    rates); OpenAI buckets are priced at the standard tier. Each bucket is priced at its day's
    midnight UTC, when that day's prices apply.
    """
    frame = usage.reset_index(drop=True)
    window = frame["context_window"].astype("object").fillna("")
    keys = pd.DataFrame(
        {
            "provider": frame["provider"],
            "model": frame["model"],
            "occurred_at": pd.to_datetime(frame["day"]).dt.tz_localize("UTC"),
            "service_tier": frame["service_tier"],
            "batch": frame["batch"].astype("boolean").fillna(False).astype(bool),
            "long_context": window.astype(str).str.startswith("200k"),
        }
    )
    row_key, first = _key_codes(keys)
    rates = _unit_rates(keys.take(first).reset_index(drop=True), engine)

    def rate(name: str) -> np.ndarray:
        return rates[name].to_numpy().take(row_key)

    tokens = {c: frame[c].astype("int64").to_numpy() for c in TOKEN_COLUMNS}
    requests = frame["requests"].astype("int64").to_numpy()
    uncached = (
        tokens["input_tokens"]
        - tokens["cache_read_tokens"]
        - tokens["cache_write_tokens"]
        - tokens["cache_write_1h_tokens"]
    )
    costs = {
        "cost_input_usd": uncached * rate("rate_input"),
        "cost_cache_read_usd": tokens["cache_read_tokens"] * rate("rate_cache_read"),
        "cost_cache_write_usd": (
            tokens["cache_write_tokens"] * rate("rate_cache_write")
            + tokens["cache_write_1h_tokens"] * rate("rate_cache_write_1h")
        ),
        "cost_output_usd": tokens["output_tokens"] * rate("rate_output"),
        "cost_other_usd": (
            tokens["web_search_requests"] * rate("rate_web_search")
            + requests * rate("rate_request")
        ),
    }
    costs = {name: np.round(values, 9) for name, values in costs.items()}
    total = costs["cost_input_usd"].copy()
    for name in _COST_PARTS[1:]:
        total += costs[name]  # left to right, as a row sum adds them
    columns = {name: frame[name] for name in frame.columns}
    columns |= {
        "batch": keys["batch"],
        **costs,
        "cost_usd": total,
        "price_version": rate("price_version"),
        "pricing_status": rate("pricing_status"),
    }
    return pd.DataFrame(columns, index=frame.index)
