"""Re-pricing actual calls under cheaper options: the evidence behind cost recommendations.

Every saving is computed by the pricing engine itself (`lib.pricing`), on the same calls at the
same instants and at the configuration in force: an option's "current" dollars are the calls
priced as they are (what the ledger charged, unless prices or overrides changed since), its
"projected" dollars the same calls priced under the option. Four options (`KINDS`):

- `model_substitution`: an agent's calls of a model re-priced as calls of the cheaper model the
  configuration allows (`recommendations.substitutions`), with the same tokens, tier and batch
  flag. Calls whose input plus output does not fit the cheaper model's context window (the
  genai-prices catalog's) are excluded and counted (`unfit_calls`).
- `prompt_caching`: calls with large inputs (`caching.min_input_tokens`) re-priced as if the
  assumed hit rate of their input were read from the cache and the assumed write share written
  to it, at the catalog's cache prices.
- `batch_or_flex`: standard-tier calls of the agents or workflows the configuration marks
  deferrable, re-priced as batch (no latency tolerance, or at least 24 h) or flex. Where the
  catalog lists no such price, the engine's tier fallback prices it (`fallback_calls`).
- `long_context`: calls just above a long-context price threshold (within
  `long_context_margin_pct` of it), re-priced with their input trimmed to the threshold
  (uncached input first, then cached parts).

Calls the ledger could not price (`UNPRICED_STATUSES`) are never taken as $0: they are left out
of both figures and counted (`unpriced_calls`). Calls the option cannot take are left out and
counted too (`unfit_calls`): over the cheaper model's window, without a price under the option,
or whose ledger cost is not a token price (a rate card's units, an app-reported cost), which a
re-pricing of tokens cannot reproduce.

`day_evidence` reduces a chunk of calls to additive sums per (day, tenant, agent, provider,
model, kind, option), so a day is read and re-priced once, in bounded chunks, whatever the
window; `lib.recommendations` turns a window of them into recommendations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from fnmatch import fnmatchcase
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cost_pipeline.lib import rate_card as rc
from cost_pipeline.lib.config import Recommendations
from cost_pipeline.lib.pricing import KEY_COLUMNS, TOKEN_INPUTS, UNPRICED_STATUSES, PricingEngine
from cost_pipeline.lib.usage_shapes import context_window

SUBSTITUTION = "model_substitution"
CACHING = "prompt_caching"
DEFERRAL = "batch_or_flex"
LONG_CONTEXT = "long_context"
KINDS = (SUBSTITUTION, CACHING, DEFERRAL, LONG_CONTEXT)

BATCH_TOLERANCE_SECONDS = 86_400  # batch APIs promise results within 24 h
# Tiers that are the standard (list) price: a call on them may be deferred to batch or flex.
STANDARD_TIERS = ("", "default", "auto", "standard")
DEFERRED_TIERS = ("flex", "batch")
# Current costs the engine computed from tokens alone: only those can be compared with a
# re-pricing of the tokens (a rate card's units or an app-reported cost cannot).
TOKEN_PRICED = ("priced", "override", "tier_fallback")
NOW_USD, NOW_PRICED, TOKEN_PRICE = "_now_usd", "_now_priced", "_token_price"

# Columns of `priced_interactions` the evidence is computed from.
CALL_COLUMNS = (
    "occurred_at",
    "day",
    "tenant_id",
    "agent_id",
    "workflow_id",
    "provider",
    "model",
    "service_tier",
    "batch",
    *TOKEN_INPUTS,
    "cost_usd",
    "pricing_status",
)
GROUP = ["tenant_id", "agent_id", "provider", "model"]
KEY = [*GROUP, "kind", "option"]
SUMS = [
    "calls",
    "other_calls",
    "unpriced_calls",
    "unfit_calls",
    "fallback_calls",
    "input_tokens",
    "cache_read_tokens",
    "current_usd",
    "projected_usd",
]
EVIDENCE_COLUMNS = ["day", *KEY, *SUMS]
USAGE_COLUMNS = ["day", *GROUP, "calls", "unpriced_calls"]


# --- evidence: one chunk of one day's calls -------------------------------------------------


def day_evidence(
    calls: pd.DataFrame, settings: Recommendations, engine: PricingEngine
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evidence, usage) of a chunk of calls (`CALL_COLUMNS`), both additive across chunks.

    `evidence`: per (day, `KEY`) the option's calls, today's calls already on the option
    (`other_calls`), excluded calls, tokens and the current and projected dollars.
    `usage`: calls and unpriced calls per (day, tenant, agent, provider, model), to see where
    usage moved.
    """
    if calls.empty:
        return combine([], EVIDENCE_COLUMNS), combine([], USAGE_COLUMNS)
    calls = calls.reset_index(drop=True)
    # Each call priced once as it is, by the same engine and configuration as its options.
    now = engine.price(_pricing_frame(calls))
    calls[NOW_USD] = now["cost_usd"].to_numpy()
    calls[NOW_PRICED] = ~now["pricing_status"].astype(object).isin(UNPRICED_STATUSES).to_numpy()
    calls[TOKEN_PRICE] = calls["pricing_status"].astype(object).isin(TOKEN_PRICED).to_numpy()
    parts = [
        _substitutions(calls, settings, engine),
        _caching(calls, settings, engine),
        _deferral(calls, settings, engine),
        _long_context(calls, settings, engine),
    ]
    evidence = combine([p for p in parts if len(p)], EVIDENCE_COLUMNS)
    usage = (
        calls[["day", *GROUP]]
        .assign(calls=1, unpriced_calls=_is_unpriced(calls["pricing_status"]).astype(int))
        .groupby(["day", *GROUP], dropna=False, sort=False)[["calls", "unpriced_calls"]]
        .sum()
        .reset_index()
    )
    return evidence, usage[USAGE_COLUMNS]


def combine(frames: Iterable[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Additive frames (evidence or usage) summed per key: the key is every non-sum column."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in columns})
    keys = [c for c in columns if c not in SUMS]
    total = pd.concat(frames, ignore_index=True).groupby(keys, dropna=False, sort=False).sum()
    return total.reset_index()[columns]


def _dtype(column: str) -> str:
    if column.endswith("_usd"):
        return "float64"
    return "int64" if column in SUMS else "object"


def _is_unpriced(status: pd.Series) -> np.ndarray:
    return status.astype(object).isin(UNPRICED_STATUSES).to_numpy()


def _pricing_frame(calls: pd.DataFrame) -> pd.DataFrame:
    return calls[["occurred_at", *KEY_COLUMNS, *TOKEN_INPUTS]].copy()


def _evidence(
    calls: pd.DataFrame,
    kind: str,
    option: np.ndarray | str,
    *,
    counted: np.ndarray,
    current: np.ndarray,
    projected: np.ndarray,
    unpriced: np.ndarray | None = None,
    unfit: np.ndarray | None = None,
    fallback: np.ndarray | None = None,
    other: np.ndarray | None = None,
) -> pd.DataFrame:
    """One evidence row per call of `calls` (summed later): what it adds to its option."""
    n = len(calls)
    zero = np.zeros(n, dtype=bool)

    def flag(values: np.ndarray | None) -> np.ndarray:
        return (zero if values is None else values).astype(np.int64)

    return pd.DataFrame(
        {
            "day": calls["day"].to_numpy(),
            **{c: calls[c].to_numpy() for c in GROUP},
            "kind": kind,
            "option": option,
            "calls": flag(counted),
            "other_calls": flag(other),
            "unpriced_calls": flag(unpriced),
            "unfit_calls": flag(unfit),
            "fallback_calls": flag(fallback & counted if fallback is not None else None),
            "input_tokens": np.where(counted, calls["input_tokens"].to_numpy(np.int64), 0),
            "cache_read_tokens": np.where(
                counted, calls["cache_read_tokens"].to_numpy(np.int64), 0
            ),
            "current_usd": np.where(counted, current, 0.0),
            "projected_usd": np.where(counted, projected, 0.0),
        }
    )


def _compare(
    engine: PricingEngine, subject: pd.DataFrame, frame: pd.DataFrame, eligible: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(current, projected, counted, tier_fallback) per call of `subject`: the call priced as it
    is (`day_evidence` did it) and as `frame` (the same call under the option), both by `engine`
    at the configuration in force. Counted: `eligible`, its ledger cost a token price (not a rate
    card's units or an app-reported cost, which tokens cannot reproduce), and priced both ways."""
    n = len(subject)
    current, projected = np.zeros(n), np.zeros(n)
    counted, fallback = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    eligible = eligible & subject[TOKEN_PRICE].to_numpy(dtype=bool)
    if not eligible.any():
        return current, projected, counted, fallback
    then = engine.price(frame[eligible].reset_index(drop=True))
    then_status = then["pricing_status"].astype(object)
    current[eligible] = subject.loc[eligible, NOW_USD].to_numpy()
    projected[eligible] = then["cost_usd"].to_numpy()
    counted[eligible] = (
        subject.loc[eligible, NOW_PRICED].to_numpy(dtype=bool)
        & ~then_status.isin(UNPRICED_STATUSES).to_numpy()
    )
    fallback[eligible] = (then_status == "tier_fallback").to_numpy()
    return current, projected, counted, fallback


@cache
def catalog_id(provider: str, model: str) -> str:
    """The catalog id genai-prices matches a raw model string to (else the string, lowered)."""
    found = rc.find_model(provider.lower(), model)
    return found[1].id if found is not None else model.lower()


def _alternative(provider: object, model: object, settings: Recommendations) -> str | None:
    if not isinstance(provider, str) or not isinstance(model, str):
        return None
    p = provider.lower()
    own = catalog_id(p, model)
    for rule in settings.substitutions:
        glob = rule.model.lower()
        if rule.provider.lower() == p and (
            fnmatchcase(model.lower(), glob) or fnmatchcase(own, glob)
        ):
            return None if catalog_id(p, rule.alternative) == own else rule.alternative
    return None


def _per_model(calls: pd.DataFrame, fn: Callable[[str, str], object]) -> np.ndarray:
    """`fn(provider, model)` for each call, evaluated once per distinct pair (vectorized: the
    pair's code from each column's codes, no tuple per call)."""
    p_codes, providers = pd.factorize(calls["provider"], use_na_sentinel=False)
    m_codes, models = pd.factorize(calls["model"], use_na_sentinel=False)
    n = max(len(models), 1)
    codes, pairs = pd.factorize(p_codes.astype(np.int64) * n + m_codes)
    values = np.empty(len(pairs), dtype=object)
    values[:] = [fn(providers[i], models[j]) for i, j in zip(*np.divmod(pairs, n), strict=True)]
    return values[codes]


def _substitutions(
    calls: pd.DataFrame, settings: Recommendations, engine: PricingEngine
) -> pd.DataFrame:
    if not settings.substitutions or calls.empty:
        return pd.DataFrame()
    alternative = _per_model(calls, lambda p, m: _alternative(p, m, settings))
    has = pd.notna(alternative)
    if not has.any():
        return pd.DataFrame()
    subject = calls[has].reset_index(drop=True)
    target = alternative[has]
    unpriced = _is_unpriced(subject["pricing_status"])
    window = _per_model(
        subject,
        lambda p, m: (
            context_window(p.lower(), str(_alternative(p, m, settings))) or np.iinfo(np.int64).max
        ),
    ).astype(np.int64)
    used = subject["input_tokens"].to_numpy(np.int64) + subject["output_tokens"].to_numpy(np.int64)
    fits = used <= window
    frame = _pricing_frame(subject).assign(model=target)
    current, projected, counted, _ = _compare(engine, subject, frame, ~unpriced & fits)
    return _evidence(
        subject,
        SUBSTITUTION,
        target,
        counted=counted,
        current=current,
        projected=projected,
        unpriced=unpriced,
        unfit=~unpriced & ~counted,
    )


def _caching(calls: pd.DataFrame, settings: Recommendations, engine: PricingEngine) -> pd.DataFrame:
    caching = settings.caching
    large = calls["input_tokens"].to_numpy(np.int64) >= caching.min_input_tokens
    if not large.any():
        return pd.DataFrame()
    subject = calls[large].reset_index(drop=True)
    unpriced = _is_unpriced(subject["pricing_status"])
    total = subject["input_tokens"].to_numpy(np.int64)
    read = subject["cache_read_tokens"].to_numpy(np.int64)
    write = subject["cache_write_tokens"].to_numpy(np.int64)
    write_1h = subject["cache_write_1h_tokens"].to_numpy(np.int64)
    room = np.maximum(total - write_1h, 0)
    new_read = np.minimum(np.maximum(read, np.floor(total * caching.assumed_hit_rate)), room)
    new_write = np.maximum(write, np.floor(total * caching.assumed_write_share))
    new_write = np.minimum(new_write, room - new_read)
    frame = _pricing_frame(subject).assign(
        cache_read_tokens=new_read.astype(np.int64), cache_write_tokens=new_write.astype(np.int64)
    )
    current, projected, counted, _ = _compare(engine, subject, frame, ~unpriced)
    return _evidence(
        subject,
        CACHING,
        caching_option(settings),
        counted=counted,
        current=current,
        projected=projected,
        unpriced=unpriced,
        unfit=~unpriced & ~counted,
    )


def caching_option(settings: Recommendations) -> str:
    return f"cache {settings.caching.assumed_hit_rate:.0%} of input"


def _glob_regex(glob: str) -> str:
    """An anchored RE2 pattern of an fnmatch glob (`*`, `?`, `[...]`, `[!...]`)."""
    out, i = [], 0
    while i < len(glob):
        c = glob[i]
        end = glob.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif end > 0:
            inside = glob[i + 1 : end]
            out.append("[^" + inside[1:] + "]" if inside.startswith("!") else f"[{inside}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "^(?s:" + "".join(out) + ")$"


def _glob_match(values: pd.Series, glob: str) -> np.ndarray:
    """Case-insensitive glob match of a text column, in Arrow (nulls never match)."""
    text = pa.array(values.astype(object), type=pa.string(), from_pandas=True)
    found = pc.match_substring_regex(text, _glob_regex(glob), ignore_case=True)
    return found.fill_null(False).to_numpy(zero_copy_only=False)


def deferral_option(tolerance: float | None, settings: Recommendations) -> str | None:
    """What a deferrable entry's latency tolerance allows: batch, flex or nothing."""
    if tolerance is None or tolerance >= BATCH_TOLERANCE_SECONDS:
        return "batch"
    return "flex" if tolerance >= settings.flex_min_tolerance_seconds else None


def _deferral(
    calls: pd.DataFrame, settings: Recommendations, engine: PricingEngine
) -> pd.DataFrame:
    if not settings.deferrable or calls.empty:
        return pd.DataFrame()
    option = np.full(len(calls), None, dtype=object)
    for entry in settings.deferrable:  # the first entry matching a call decides
        match = np.ones(len(calls), dtype=bool)
        if entry.agent:
            match &= _glob_match(calls["agent_id"], entry.agent)
        if entry.workflow:
            match &= _glob_match(calls["workflow_id"], entry.workflow)
        allowed = deferral_option(entry.latency_tolerance_seconds, settings)
        fresh = match & pd.isna(option)
        option[fresh] = allowed if allowed is not None else ""
    chosen = pd.notna(option) & (option != "")
    if not chosen.any():
        return pd.DataFrame()
    subject = calls[chosen].reset_index(drop=True)
    target = option[chosen]
    tier = subject["service_tier"].astype(object).fillna("").astype(str).str.strip().str.lower()
    batch = subject["batch"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    standard = ~batch & tier.isin(STANDARD_TIERS).to_numpy()
    deferred = batch | tier.isin(DEFERRED_TIERS).to_numpy()
    unpriced = _is_unpriced(subject["pricing_status"]) & standard
    is_batch = target == "batch"
    frame = _pricing_frame(subject).assign(
        batch=is_batch, service_tier=np.where(is_batch, None, "flex")
    )
    current, projected, counted, fallback = _compare(engine, subject, frame, standard & ~unpriced)
    return _evidence(
        subject,
        DEFERRAL,
        target,
        counted=counted,
        current=current,
        projected=projected,
        unpriced=unpriced,
        unfit=standard & ~unpriced & ~counted,
        fallback=fallback,
        other=deferred,
    )


@cache
def tier_thresholds(provider: str, model: str, day: date) -> tuple[int, ...]:
    """Input-token thresholds of a model's long-context price tiers on `day` (list price)."""
    found = rc.find_model(provider.lower(), model)
    if found is None:
        return ()
    prices = rc.catalog_prices(*found, datetime.combine(day, time(12), UTC), None)
    return rc.component_rates(prices).thresholds if prices is not None else ()


def _long_context(
    calls: pd.DataFrame, settings: Recommendations, engine: PricingEngine
) -> pd.DataFrame:
    if calls.empty:
        return pd.DataFrame()
    margin = settings.long_context_margin_pct / 100
    total = calls["input_tokens"].to_numpy(np.int64)
    threshold = np.zeros(len(calls), dtype=np.int64)
    above = np.zeros(len(calls), dtype=bool)
    below = np.zeros(len(calls), dtype=bool)
    for (provider, model, day), rows in calls.groupby(
        ["provider", "model", "day"], sort=False
    ).indices.items():
        for t in tier_thresholds(str(provider), str(model), day):
            n = total[rows]
            hit = (n > t) & (n <= t * (1 + margin))
            near = (n > t * (1 - margin)) & (n <= t)
            threshold[rows[hit | near]] = t
            above[rows[hit]] = True
            below[rows[near]] = True
    relevant = above | below
    if not relevant.any():
        return pd.DataFrame()
    subject = calls[relevant].reset_index(drop=True)
    above, below, limit = above[relevant], below[relevant], threshold[relevant]
    unpriced = _is_unpriced(subject["pricing_status"]) & above
    frame = _pricing_frame(subject)
    excess = np.maximum(frame["input_tokens"].to_numpy(np.int64) - limit, 0) * above
    parts = ["cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens"]
    uncached = frame["input_tokens"].to_numpy(np.int64) - sum(
        frame[c].to_numpy(np.int64) for c in parts
    )
    left = excess - np.minimum(excess, np.maximum(uncached, 0))
    for column in parts:  # what uncached input cannot absorb comes out of the cached parts
        values = frame[column].to_numpy(np.int64)
        cut = np.minimum(left, values)
        frame[column] = values - cut
        left = left - cut
    frame["input_tokens"] = frame["input_tokens"].to_numpy(np.int64) - excess
    current, projected, counted, _ = _compare(engine, subject, frame, above & ~unpriced)
    option = pd.Series(limit).map(lambda t: f"input ≤ {t:,} tokens").to_numpy(dtype=object)
    return _evidence(
        subject,
        LONG_CONTEXT,
        option,
        counted=counted,
        current=current,
        projected=projected,
        unpriced=unpriced,
        unfit=above & ~unpriced & ~counted,
        other=below,
    )
