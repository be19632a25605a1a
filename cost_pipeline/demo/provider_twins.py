"""What the demo company's providers would report: usage and cost buckets for the offline twins.

The usage is the demo app log of each day (`DemoCompany.events_for_day`), aggregated into the
providers' 1d buckets with their grouping fields, plus two injected truths the log misses, so
the reconciliation has something real to find:

- unlogged usage: a batch service that calls the providers without the logging middleware
  (about `UNLOGGED_SHARE` of the day's calls, on its own API key, in the tenants' projects);
- a mislabelled model: the log says `RELABEL[0]`, the provider served `RELABEL[1]` for about
  `RELABEL_SHARE` of those calls.

Reported costs price that usage with the pipeline's own engine and round it the way each
provider does (OpenAI per line item to the cent; Anthropic as a decimal string of cents), so
they differ from the priced usage only by rounding. Everything is deterministic per day.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd

from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.provider_usage import (
    ANTHROPIC,
    OPENAI,
    normalize_anthropic_usage,
    normalize_openai_usage,
    price_provider_usage,
)

UNLOGGED_SHARE = 0.03
UNLOGGED_OPENAI_KEY = "key_batch_summarizer"
UNLOGGED_ANTHROPIC_KEY = "apikey_batch_summarizer"
RELABEL = ("gpt-4.1-mini", "gpt-4.1")
RELABEL_SHARE = 0.08
LONG_CONTEXT_TOKENS = 200_000
_SUMS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "web_search_requests",
)


def days_between(start: datetime, end: datetime) -> list[date]:
    """UTC days whose midnight falls in [start, end)."""
    lo = start if start.tzinfo else start.replace(tzinfo=UTC)
    hi = end if end.tzinfo else end.replace(tzinfo=UTC)
    day = lo.astimezone(UTC).date()
    if datetime.combine(day, time(), UTC) < lo:
        day += timedelta(days=1)
    out = []
    while datetime.combine(day, time(), UTC) < hi:
        out.append(day)
        day += timedelta(days=1)
    return out


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _owner_ids(config: CostConfig, kind: str, prefix: str) -> dict[str, str]:
    """tenant -> the first source id mapped to it (or `<prefix><tenant>` when none is)."""
    owners: dict[str, str] = {}
    for source_id, tenant in config.mapping(kind).items():
        owners.setdefault(tenant, source_id)
    return {t.id: owners.get(t.id, f"{prefix}{t.id}") for t in config.tenants}


def relabel_pair(models: pd.Series) -> tuple[str, str]:
    """`RELABEL`, or, when the log has no such model, its two most used models."""
    if (models == RELABEL[0]).any():
        return RELABEL
    common = models.value_counts().index.tolist()
    return (common[0], common[1]) if len(common) > 1 else RELABEL


_DAY_CACHE: dict[tuple[str, date], pd.DataFrame] = {}


def _demo_day(config: CostConfig, day: date) -> pd.DataFrame:
    """The demo app log of `day`, generated once per process (three twins read each day)."""
    from cost_pipeline.demo.generator import DemoCompany

    key = (config.model_dump_json(), day)
    if key not in _DAY_CACHE:
        if len(_DAY_CACHE) >= 4:
            _DAY_CACHE.pop(next(iter(_DAY_CACHE)))
        _DAY_CACHE[key] = DemoCompany(config, seed=config.demo.seed).events_for_day(
            day, config.demo.events_per_day
        )
    return _DAY_CACHE[key]


def provider_calls(config: CostConfig, day: date, provider: str) -> pd.DataFrame:
    """The calls `provider` really served on `day`: the logged ones (one model relabelled) plus
    the unlogged batch service's, each with the key it used."""
    events = _demo_day(config, day)
    calls = events.loc[events["provider"] == provider].reset_index(drop=True)
    rng = np.random.default_rng([config.demo.seed, day.toordinal(), len(provider)])
    calls["model"] = calls["model"].astype(str)
    if provider == OPENAI:
        logged_as, served_as = relabel_pair(calls["model"])
        relabel = (calls["model"] == logged_as) & (rng.random(len(calls)) < RELABEL_SHARE)
        calls.loc[relabel, "model"] = served_as
    key_prefix = "key_" if provider == OPENAI else "apikey_"
    calls["api_key_id"] = key_prefix + calls["tenant_id"].astype(str) + "_app"
    unlogged = calls.loc[rng.random(len(calls)) < UNLOGGED_SHARE].copy()
    unlogged["api_key_id"] = UNLOGGED_OPENAI_KEY if provider == OPENAI else UNLOGGED_ANTHROPIC_KEY
    return pd.concat([calls, unlogged], ignore_index=True)


def _aggregate(calls: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    present = [c for c in _SUMS if c in calls.columns]
    grouped = calls.groupby(keys, dropna=False, sort=True)
    out = grouped[present].sum()
    out["requests"] = grouped.size()
    return out.reset_index()


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.astype(object).where(df.notna(), None).to_dict("records")


_RESULTS_CACHE: dict[tuple[str, str, date], list[dict[str, Any]]] = {}


def _cached(
    build: Callable[[CostConfig, date], list[dict[str, Any]]], config: CostConfig, day: date
) -> list[dict[str, Any]]:
    """`build(config, day)` once per process: a backfill asks each day's buckets of four
    assets (usage and costs of two providers), each over the whole range in turn."""
    key = (build.__name__, config.model_dump_json(), day)
    if key not in _RESULTS_CACHE:
        if len(_RESULTS_CACHE) >= 1024:
            _RESULTS_CACHE.pop(next(iter(_RESULTS_CACHE)))
        _RESULTS_CACHE[key] = build(config, day)
    return copy.deepcopy(_RESULTS_CACHE[key])


def _openai_results(config: CostConfig, day: date) -> list[dict[str, Any]]:
    calls = provider_calls(config, day, OPENAI)
    if calls.empty:
        return []
    calls["project_id"] = calls["tenant_id"].map(_owner_ids(config, "openai_project_ids", "proj_"))
    calls["batch"] = calls["batch"].astype("boolean").fillna(False).astype(bool)
    # Newer spec revisions return `service_tier` on results; the twin keeps tiers apart so a
    # flex or priority call is priced like its logged twin.
    calls["service_tier"] = calls.get("service_tier", pd.Series(None, index=calls.index))
    calls["service_tier"] = calls["service_tier"].astype("object")
    agg = _aggregate(calls, ["model", "project_id", "api_key_id", "batch", "service_tier"])
    results = pd.DataFrame(
        {
            "object": "organization.usage.completions.result",
            "input_tokens": agg["input_tokens"].astype(int),
            "output_tokens": agg["output_tokens"].astype(int),
            "input_cached_tokens": agg["cache_read_tokens"].astype(int),
            "input_audio_tokens": 0,
            "output_audio_tokens": 0,
            "num_model_requests": agg["requests"].astype(int),
            "project_id": agg["project_id"],
            "user_id": None,
            "api_key_id": agg["api_key_id"],
            "model": agg["model"],
            "batch": agg["batch"],
            "service_tier": agg["service_tier"],
        }
    )
    return _records(results)


def _anthropic_results(config: CostConfig, day: date) -> list[dict[str, Any]]:
    calls = provider_calls(config, day, ANTHROPIC)
    if calls.empty:
        return []
    workspaces = _owner_ids(config, "anthropic_workspace_ids", "wrkspc_")
    calls["workspace_id"] = calls["tenant_id"].map(workspaces)
    tier = calls["service_tier"].astype("object") if "service_tier" in calls else None
    tier = pd.Series("standard", index=calls.index) if tier is None else tier.fillna("standard")
    batch = calls["batch"].astype("boolean").fillna(False).astype(bool)
    calls["service_tier"] = tier.where(~batch, "batch")
    calls["context_window"] = np.where(
        calls["input_tokens"] > LONG_CONTEXT_TOKENS, "200k-1M", "0-200k"
    )
    agg = _aggregate(
        calls, ["model", "workspace_id", "api_key_id", "service_tier", "context_window"]
    )
    writes = agg["cache_write_tokens"] + agg["cache_write_1h_tokens"]
    results = pd.DataFrame(
        {
            "model": agg["model"],
            "workspace_id": agg["workspace_id"],
            "api_key_id": agg["api_key_id"],
            "service_tier": agg["service_tier"],
            "context_window": agg["context_window"],
            "uncached_input_tokens": (
                agg["input_tokens"] - agg["cache_read_tokens"] - writes
            ).astype(int),
            "cache_read_input_tokens": agg["cache_read_tokens"].astype(int),
            "output_tokens": agg["output_tokens"].astype(int),
        }
    )
    out = _records(results)
    for record, row in zip(out, agg.itertuples(index=False), strict=True):
        # Nested objects as the API nests them (a few hundred buckets a day at most).
        record["cache_creation"] = {
            "ephemeral_5m_input_tokens": int(row.cache_write_tokens),
            "ephemeral_1h_input_tokens": int(row.cache_write_1h_tokens),
        }
        record["server_tool_use"] = {"web_search_requests": int(row.web_search_requests)}
    return out


def openai_usage_buckets(
    config: CostConfig, *, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """OpenAI completions usage buckets (1d, grouped by model, project, key, batch)."""
    return [
        {
            "object": "bucket",
            "start_time": int(_midnight(d).timestamp()),
            "end_time": int(_midnight(d + timedelta(days=1)).timestamp()),
            "results": _cached(_openai_results, config, d),
        }
        for d in days_between(start, end)
    ]


def anthropic_usage_buckets(
    config: CostConfig, *, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Anthropic messages usage buckets (1d, grouped by model, workspace, key, tier, window)."""
    return [
        {
            "starting_at": _midnight(d).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": _midnight(d + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "results": _cached(_anthropic_results, config, d),
        }
        for d in days_between(start, end)
    ]


def _priced(config: CostConfig, frame: pd.DataFrame) -> pd.DataFrame:
    from cost_pipeline.lib.pricing import PricingEngine

    return price_provider_usage(frame, PricingEngine.for_config(config))


def _line_items(priced: pd.DataFrame, owner: str, kinds: dict[str, str]) -> pd.DataFrame:
    """One row per (owner, model, kind) with the priced amount of that kind."""
    parts = [
        priced.groupby([owner, "model"], dropna=False)[column]
        .sum()
        .rename("amount")
        .reset_index()
        .assign(kind=kind)
        for kind, column in kinds.items()
    ]
    items = pd.concat(parts, ignore_index=True)
    return items.loc[items["amount"] > 0].reset_index(drop=True)


def openai_cost_buckets(
    config: CostConfig, *, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """OpenAI cost buckets: the priced usage per project and line item, rounded to the cent."""
    buckets = []
    for bucket in openai_usage_buckets(config, start=start, end=end):
        results = [{**r, "bucket_start_time": bucket["start_time"]} for r in bucket["results"]]
        priced = _priced(config, normalize_openai_usage(results, config))
        items = _line_items(
            priced.rename(columns={"project_or_workspace_id": "project_id"}),
            "project_id",
            {
                "input": "cost_input_usd",
                "cached input": "cost_cache_read_usd",
                "cache write": "cost_cache_write_usd",
                "output": "cost_output_usd",
                "other": "cost_other_usd",
            },
        )
        costs = [
            {
                "object": "organization.costs.result",
                "amount": {"value": round(float(row.amount), 2), "currency": "usd"},
                "line_item": f"{row.model}, {row.kind}",
                "project_id": row.project_id,
            }
            for row in items.itertuples(index=False)
        ]
        buckets.append({**bucket, "results": costs})
    return buckets


def anthropic_cost_buckets(
    config: CostConfig, *, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Anthropic cost buckets: priced usage per workspace, model and token type, in cents."""
    buckets = []
    for bucket in anthropic_usage_buckets(config, start=start, end=end):
        results = [{**r, "bucket_starting_at": bucket["starting_at"]} for r in bucket["results"]]
        priced = _priced(config, normalize_anthropic_usage(results, config))
        items = _line_items(
            priced.rename(columns={"project_or_workspace_id": "workspace_id"}),
            "workspace_id",
            {
                "uncached_input_tokens": "cost_input_usd",
                "cache_read_input_tokens": "cost_cache_read_usd",
                "cache_creation": "cost_cache_write_usd",
                "output_tokens": "cost_output_usd",
                "web_search": "cost_other_usd",
            },
        )
        costs = [
            {
                "currency": "USD",
                "amount": f"{float(row.amount) * 100:.2f}",
                "workspace_id": row.workspace_id,
                "description": f"{row.model}, {row.kind}",
                "model": row.model,
                "cost_type": "web_search" if row.kind == "web_search" else "tokens",
                "token_type": None if row.kind == "web_search" else row.kind,
                "service_tier": None,
                "context_window": None,
            }
            for row in items.itertuples(index=False)
        ]
        buckets.append({**bucket, "results": costs})
    return buckets
