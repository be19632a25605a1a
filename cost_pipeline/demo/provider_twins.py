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
they differ from the priced usage only by rounding. Everything is deterministic per day, so each
day is derived once per process: one pass over the day's app log builds both providers' usage
results, and each provider's cost results are priced once from them (`_day_results`); every
request gets its own copy.
"""

from __future__ import annotations

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
    keys = (key_prefix + calls["tenant_id"].astype(str) + "_app").to_numpy(dtype=object)
    unlogged = np.flatnonzero(rng.random(len(calls)) < UNLOGGED_SHARE)
    # The unlogged calls are copies of logged ones on the batch service's key, appended.
    served = calls.take(np.concatenate([np.arange(len(calls)), unlogged])).reset_index(drop=True)
    batch_key = UNLOGGED_OPENAI_KEY if provider == OPENAI else UNLOGGED_ANTHROPIC_KEY
    served["api_key_id"] = np.concatenate([keys, np.full(len(unlogged), batch_key, dtype=object)])
    return served


def _aggregate(calls: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    present = [c for c in _SUMS if c in calls.columns]
    grouped = calls.groupby(keys, dropna=False, sort=True)
    out = grouped[present].sum()
    out["requests"] = grouped.size()
    return out.reset_index()


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as dicts of Python values, null as None."""
    columns = []
    for name in df.columns:
        values = df[name].tolist()
        missing = df[name].isna().to_numpy()
        if missing.any():
            values = [None if m else v for v, m in zip(values, missing.tolist(), strict=True)]
        columns.append(values)
    names = list(df.columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


_RESULTS_CACHE: dict[tuple[str, str, date], list[dict[str, Any]]] = {}
_CACHE_SIZE = 1024


def _copied(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A deep copy of results (dicts of scalars and nested dicts or lists), without the
    bookkeeping of `copy.deepcopy`."""

    def fresh(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fresh(v) if isinstance(v, dict | list) else v for k, v in value.items()}
        return [fresh(v) if isinstance(v, dict | list) else v for v in value]

    return [fresh(r) for r in results]


def _day_results(kind: str, config: CostConfig, day: date) -> list[dict[str, Any]]:
    """The day's results of `kind` (a `_BUILDERS` key), built once per process and shared: a
    backfill asks each day's buckets of four assets (usage and costs of two providers), each
    over the whole range in turn. Callers must not modify them (`_cached` copies)."""
    key = (kind, config.model_dump_json(), day)
    if key not in _RESULTS_CACHE:
        for built_kind, results in _BUILDERS[kind](config, day).items():
            if len(_RESULTS_CACHE) >= _CACHE_SIZE:
                _RESULTS_CACHE.pop(next(iter(_RESULTS_CACHE)))
            _RESULTS_CACHE[(built_kind, key[1], day)] = results
    return _RESULTS_CACHE[key]


def _cached(kind: str, config: CostConfig, day: date) -> list[dict[str, Any]]:
    """A copy of the day's results of `kind`, for a caller that may modify it."""
    return _copied(_day_results(kind, config, day))


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
            "results": _cached("openai_usage", config, d),
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
            "results": _cached("anthropic_usage", config, d),
        }
        for d in days_between(start, end)
    ]


def _usage_results(config: CostConfig, day: date) -> dict[str, list[dict[str, Any]]]:
    """Both providers' usage results of `day`, from one generation of the day's app log."""
    return {
        "openai_usage": _openai_results(config, day),
        "anthropic_usage": _anthropic_results(config, day),
    }


def _priced(config: CostConfig, frame: pd.DataFrame) -> pd.DataFrame:
    from cost_pipeline.lib.pricing import PricingEngine

    return price_provider_usage(frame, PricingEngine.for_config(config))


def _line_items(
    priced: pd.DataFrame, owner: str, kinds: dict[str, str]
) -> list[tuple[Any, Any, str, float]]:
    """(owner, model, kind, amount) per (owner, model, kind) with a positive priced amount of
    that kind: kind by kind, each in (owner, model) order."""
    columns = list(dict.fromkeys(kinds.values()))
    sums = priced.groupby([owner, "model"], dropna=False)[columns].sum()
    owners = sums.index.get_level_values(0).tolist()
    models = sums.index.get_level_values(1).tolist()
    items = []
    for kind, column in kinds.items():
        amounts = sums[column].tolist()
        items.extend(
            (o, m, kind, a) for o, m, a in zip(owners, models, amounts, strict=True) if a > 0
        )
    return items


def _openai_costs(config: CostConfig, day: date) -> dict[str, list[dict[str, Any]]]:
    """OpenAI's cost results of `day`: the priced usage per project and line item, rounded to
    the cent."""
    start = int(_midnight(day).timestamp())
    usage = _day_results("openai_usage", config, day)
    results = [{**r, "bucket_start_time": start} for r in usage]
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
            "amount": {"value": round(float(amount), 2), "currency": "usd"},
            "line_item": f"{model}, {kind}",
            "project_id": project,
        }
        for project, model, kind, amount in items
    ]
    return {"openai_costs": costs}


def _anthropic_costs(config: CostConfig, day: date) -> dict[str, list[dict[str, Any]]]:
    """Anthropic's cost results of `day`: priced usage per workspace, model and token type, in
    cents."""
    start = _midnight(day).strftime("%Y-%m-%dT%H:%M:%SZ")
    usage = _day_results("anthropic_usage", config, day)
    results = [{**r, "bucket_starting_at": start} for r in usage]
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
            "amount": f"{float(amount) * 100:.2f}",
            "workspace_id": workspace,
            "description": f"{model}, {kind}",
            "model": model,
            "cost_type": "web_search" if kind == "web_search" else "tokens",
            "token_type": None if kind == "web_search" else kind,
            "service_tier": None,
            "context_window": None,
        }
        for workspace, model, kind, amount in items
    ]
    return {"anthropic_costs": costs}


_BUILDERS: dict[str, Callable[[CostConfig, date], dict[str, list[dict[str, Any]]]]] = {
    "openai_usage": _usage_results,
    "anthropic_usage": _usage_results,
    "openai_costs": _openai_costs,
    "anthropic_costs": _anthropic_costs,
}


def openai_cost_buckets(
    config: CostConfig, *, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """OpenAI cost buckets: the priced usage per project and line item, rounded to the cent."""
    return [
        {
            "object": "bucket",
            "start_time": int(_midnight(d).timestamp()),
            "end_time": int(_midnight(d + timedelta(days=1)).timestamp()),
            "results": _cached("openai_costs", config, d),
        }
        for d in days_between(start, end)
    ]


def anthropic_cost_buckets(
    config: CostConfig, *, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Anthropic cost buckets: priced usage per workspace, model and token type, in cents."""
    return [
        {
            "starting_at": _midnight(d).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": _midnight(d + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "results": _cached("anthropic_costs", config, d),
        }
        for d in days_between(start, end)
    ]
