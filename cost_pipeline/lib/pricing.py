"""The vectorized LLM pricing engine: every call priced at the list price in force when it ran.

`PricingEngine.price(df)` resolves each distinct (provider, model, service tier, batch, price
window) ONCE through genai-prices (its own model matching, start-dated changes, time-of-day
prices, tier / batch variants; see `lib.rate_card` for the tier mapping and override rules) into
per-token rates, then prices every row with numpy column arithmetic. Price windows are cut at
every UTC start date and time of day at which any involved price can change, so each group's
price is exactly the one `genai_prices.calc_price` picks at each row's timestamp; the
long-context tier is chosen per row from that row's total input tokens.

Exactness: `cost_usd` equals `calc_price(Usage(input_tokens, cache_read_tokens,
cache_write_tokens=5m + 1h, cache_write_5m_tokens, cache_write_1h_tokens, output_tokens,
web_searches), model, provider_id=provider, genai_request_timestamp=occurred_at,
price_context=price_context(...)).total_price` (times the discount, if any) to 1e-9 USD.
Costs are rounded half-even to nano-USD; the components are adjusted by the rounding residual
(on the largest one) so that they sum exactly to `cost_usd`.

Every row says how it was priced (`pricing_status`):

- `priced`: the catalog's list price for the call's model, tier and instant;
- `override`: a price override or discount from the configuration applied;
- `tier_fallback`: the catalog has no price for the call's service tier / batch on that date;
  the standard price times the tier's configured multiplier (`pricing.tier_fallback_multipliers`)
  is used. genai-prices itself would silently use the standard price;
- `unknown_model`: the catalog cannot price the model;
- `incomplete_usage`: the price charges units the record cannot carry (characters, audio,
  images: `tts-1`, `whisper-1`), so pricing its tokens would make it free;
- `invalid_usage`: cache tokens exceed the total input (genai-prices rejects it).

The last three get zero costs and are counted as unpriced (`UNPRICED_STATUSES`), so they are
flagged rather than silently free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa

from cost_pipeline.lib import rate_card as rc
from cost_pipeline.lib.config import CostConfig, PriceOverride

PRICED = "priced"
UNKNOWN_MODEL = "unknown_model"
INVALID_USAGE = "invalid_usage"
INCOMPLETE_USAGE = "incomplete_usage"
TIER_FALLBACK = "tier_fallback"
OVERRIDE = "override"
# Codes 1-3 have no cost (see `_round_nanos`); 0, 4 and 5 are priced.
_STATUSES = np.array(
    [PRICED, UNKNOWN_MODEL, INVALID_USAGE, INCOMPLETE_USAGE, TIER_FALLBACK, OVERRIDE], dtype=object
)
_NO_COST = 3  # codes 1.._NO_COST are not priced
PRICING_STATUSES = tuple(_STATUSES.tolist())
UNPRICED_STATUSES = (UNKNOWN_MODEL, INVALID_USAGE, INCOMPLETE_USAGE)

COST_COLUMNS = (
    "cost_input_usd",
    "cost_cache_read_usd",
    "cost_cache_write_usd",
    "cost_output_usd",
    "cost_other_usd",
)
KEY_COLUMNS = ("provider", "model", "service_tier", "batch")
TOKEN_INPUTS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "web_search_requests",
)
_NS_PER_DAY = 86_400 * 10**9
_EARLIEST = date(2000, 1, 1)
# Above this many (key x window) combinations the dense lookup table would waste memory.
_DENSE_LIMIT = 1 << 24


@dataclass(frozen=True)
class _Key:
    """What one distinct (provider, model, tier, batch) resolves to, independent of time."""

    provider: str
    model: str
    context: dict[str, str] | None
    found: tuple | None  # (genai Provider, ModelInfo) or None
    overrides: tuple[PriceOverride, ...]  # the overrides whose provider and glob match


_ENGINES: dict[str, PricingEngine] = {}


class PricingEngine:
    """Prices LLM calls (or usage buckets) with genai-prices' catalog plus `overrides`."""

    def __init__(
        self,
        overrides: Sequence[PriceOverride] = (),
        tier_fallback: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.overrides = tuple(overrides)
        self.tier_fallback = {k.lower(): v for k, v in (tier_fallback or {}).items()}
        self.price_version = rc.price_version(self.overrides, self.tier_fallback)
        self._keys: dict[tuple, _Key] = {}

    @classmethod
    def for_config(cls, config: CostConfig) -> PricingEngine:
        """The engine of a configuration: its price overrides and tier fallback multipliers.

        One engine per price version and process: the version hashes everything a price
        depends on, so an engine's resolved models serve every later day of a backfill.
        """
        engine = cls(config.price_overrides, config.pricing.tier_fallback_multipliers)
        return _ENGINES.setdefault(engine.price_version, engine)

    def rate_card(self, providers: Sequence[str] = rc.DEFAULT_PROVIDERS) -> pd.DataFrame:
        return rc.build_rate_card(self.overrides, providers=providers)

    # --- resolution (once per distinct key and window) ----------------------------------------

    def _key(self, provider: object, model: object, tier: object, batch: bool) -> _Key:
        raw = (provider, model, tier, batch)
        if raw in self._keys:
            return self._keys[raw]
        p = provider.lower() if isinstance(provider, str) else ""
        m = model if isinstance(model, str) else ""
        t = tier if isinstance(tier, str) else None
        found = rc.find_model(p, m) if p and m else None
        model_id = found[1].id if found else None
        overrides = tuple(o for o in self.overrides if rc.override_matches(o, p, m, model_id))
        key = _Key(p, m, rc.price_context(p, t, batch), found, overrides)
        self._keys[raw] = key
        return key

    def _rates(self, key: _Key, at: datetime) -> tuple[rc.TieredRates | None, int]:
        """The call's rates at `at` and its status code (an index of `_STATUSES`)."""
        active = [o for o in key.overrides if rc.override_active(o, at.date())]
        explicit = [o for o in active if o.discount_pct is None]
        if explicit:
            return rc.explicit_rates(explicit[-1]), _code(OVERRIDE)
        if key.found is None:
            return None, _code(UNKNOWN_MODEL)
        prices = rc.catalog_prices(*key.found, at, key.context)
        if prices is None:
            return None, _code(UNKNOWN_MODEL)
        if rc.needs_other_usage(prices):
            return None, _code(INCOMPLETE_USAGE)
        rates = rc.component_rates(prices)
        status = _code(PRICED)
        if not rc.tier_listed(*key.found, at, key.context):
            tier = rc.context_tier(key.context)
            rates = rates.scaled(self.tier_fallback.get(tier or "", Decimal(1)))
            status = _code(TIER_FALLBACK)
        discounts = [o for o in active if o.discount_pct is not None]
        if discounts:
            rates = rates.scaled(rc.discount_factor(discounts[-1]))
            status = status if status == _code(TIER_FALLBACK) else _code(OVERRIDE)
        return rates, status

    # --- the vectorized pass ------------------------------------------------------------------

    def price(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` plus the cost columns, `price_version` and `pricing_status` (see module doc)."""
        n = len(df)
        codes, uniques = _key_codes(df)
        keys = [self._key(*u) for u in uniques]
        t, unit = _timestamps(df["occurred_at"])

        # Cut time into windows at every instant where any involved price may change.
        days: set[date] = rc.override_boundaries([o for k in keys for o in k.overrides])
        times: set[time] = set()
        for k in keys:
            if k.found is not None:
                d, tod = rc.price_boundaries(k.found[1])
                days |= d
                times |= tod
        day_edges = sorted(days)
        tod_edges = sorted(times)
        per_ns = np.timedelta64(1, unit) / np.timedelta64(1, "ns")
        n_tod = len(tod_edges) + 1
        n_windows = (len(day_edges) + 1) * n_tod
        # The row's group code (key x window) is built in place in `codes`, which we own.
        codes *= n_windows
        if day_edges:
            edges = np.array([_ns(d) / per_ns for d in day_edges], dtype=np.int64)
            codes += np.searchsorted(edges, t, side="right") * n_tod
        if tod_edges:
            sod = np.mod(t, int(_NS_PER_DAY / per_ns))
            tod = np.array([_sod_ns(x) / per_ns for x in tod_edges], dtype=np.int64)
            codes += np.searchsorted(tod, sod, side="right")
        group_of_row, groups = _dense_groups(codes, len(keys) * n_windows)

        # Resolve each group at an instant inside its window.
        resolved: list[tuple[rc.TieredRates | None, int]] = []
        for g in groups.tolist():
            k, w = divmod(g, n_windows)
            d, s = divmod(w, n_tod)
            start = (
                day_edges[d - 1]
                if d
                else (day_edges[0] - timedelta(days=1) if day_edges else _EARLIEST)
            )
            at = datetime.combine(start, tod_edges[s - 1] if s else time(), UTC)
            resolved.append(self._rates(keys[k], at))
        tables = _rate_tables(resolved)

        tokens = {c: _int_column(df, c) for c in TOKEN_INPUTS}
        uncached = tokens["input_tokens"] - tokens["cache_read_tokens"]
        uncached -= tokens["cache_write_tokens"]
        uncached -= tokens["cache_write_1h_tokens"]
        row = group_of_row * tables.n_levels if tables.n_levels > 1 else group_of_row
        for level in range(tables.thresholds.shape[0]):
            row += tokens["input_tokens"] > tables.thresholds[level].take(group_of_row)

        # Each part is computed into its own rate buffer: fresh 10M-row arrays are costly.
        def part(component: int, count: np.ndarray) -> np.ndarray:
            rate = tables.rates[component].take(row)
            return np.multiply(rate, count, out=rate)

        cache_write = part(2, tokens["cache_write_tokens"])
        if tokens["cache_write_1h_tokens"].any():
            cache_write += part(3, tokens["cache_write_1h_tokens"])
        other = part(5, tokens["web_search_requests"])
        if tables.rates[6].any():
            other += tables.rates[6].take(row)
        parts = [
            part(0, uncached),
            part(1, tokens["cache_read_tokens"]),
            cache_write,
            part(4, tokens["output_tokens"]),
            other,
        ]
        status = tables.status.take(group_of_row)
        status[(uncached < 0) & ~_no_cost(status)] = _code(INVALID_USAGE)
        costs = _round_nanos(parts, _no_cost(status))

        # Built from the input's columns without copying them; the two repeated labels are
        # categoricals because a 10M-row object column of one string costs a second to fill.
        columns = {name: df[name] for name in df.columns}
        columns |= dict(zip((*COST_COLUMNS, "cost_usd"), costs, strict=True))
        columns["price_version"] = pd.Categorical.from_codes(
            np.zeros(n, dtype=np.int8), [self.price_version]
        )
        columns["pricing_status"] = pd.Categorical.from_codes(status, _STATUSES)
        return pd.DataFrame(columns, index=df.index, copy=False)

    def price_arrow(self, table: pa.Table) -> pa.Table:
        """An Arrow table of calls plus the cost columns, `price_version` and `pricing_status`.

        The same pass as `price`, for the ingester's Arrow chunks: only the columns the price
        depends on are handed to pandas; the rest of the row stays in Arrow.
        """
        needed = ["occurred_at", *KEY_COLUMNS, *TOKEN_INPUTS]
        priced = self.price(table.select(needed).to_pandas())
        out = table
        for name in (*COST_COLUMNS, "cost_usd"):
            out = out.append_column(name, pa.array(priced[name].to_numpy(), pa.float64()))
        out = out.append_column(
            "price_version", pa.repeat(pa.scalar(self.price_version, pa.string()), len(priced))
        )
        status = pa.DictionaryArray.from_arrays(
            pa.array(priced["pricing_status"].cat.codes.to_numpy()), pa.array(_STATUSES)
        )
        return out.append_column("pricing_status", status.cast(pa.string()))


# --- helpers -------------------------------------------------------------------------------


def _key_codes(df: pd.DataFrame) -> tuple[np.ndarray, list[tuple]]:
    """Integer code per row of its (provider, model, tier, batch), and the distinct keys."""
    columns = []
    for name in KEY_COLUMNS[:3]:
        series = df[name] if name in df else pd.Series(None, index=df.index, dtype=object)
        if isinstance(series.dtype, pd.CategoricalDtype):  # codes for free
            c, u = series.cat.codes.to_numpy(), series.cat.categories
        else:
            c, u = pd.factorize(series)
        # The NA sentinel (-1) becomes one more code: factorize is faster with it than without.
        columns.append((np.where(c < 0, len(u), c), [*u, None]))
    batch = df["batch"] if "batch" in df else pd.Series(False, index=df.index)
    if batch.dtype != bool:
        batch = batch.astype("boolean").fillna(False)
    columns.append((batch.to_numpy(dtype=bool), [False, True]))
    code = columns[0][0].astype(np.int64)
    for c, u in columns[1:]:
        code *= len(u)
        code += c
    inverse, used = _dense_groups(code, int(np.prod([len(u) for _, u in columns])))
    uniques = []
    for value in used.tolist():
        parts = []
        for _, u in reversed(columns):
            value, i = divmod(value, len(u))
            parts.append(u[i])
        uniques.append(tuple(reversed(parts)))
    return inverse, uniques


def _dense_groups(code: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(dense group index per row, the distinct codes in order) without sorting when small."""
    if size <= _DENSE_LIMIT:
        seen = np.zeros(size, dtype=bool)
        seen[code] = True
        used = np.flatnonzero(seen)
        lookup = np.zeros(size, dtype=np.int64)
        lookup[used] = np.arange(len(used))
        return np.take(lookup, code, out=code), used  # `code` is the caller's scratch array
    used, inverse = np.unique(code, return_inverse=True)
    return inverse.astype(np.int64), used


def _timestamps(series: pd.Series) -> tuple[np.ndarray, str]:
    """UTC epoch integers of `occurred_at` and their unit; naive values are taken as UTC."""
    if not isinstance(series.dtype, pd.DatetimeTZDtype) and series.dtype.kind != "M":
        series = pd.to_datetime(series, utc=True, format="ISO8601")
    values = series.array
    return values.asi8, values.unit


def _ns(day: date) -> int:
    return (day - date(1970, 1, 1)).days * _NS_PER_DAY


def _sod_ns(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 10**9 + t.microsecond * 1000


def _int_column(df: pd.DataFrame, name: str) -> np.ndarray:
    if name not in df:
        return np.zeros(len(df), dtype=np.int64)
    column = df[name]
    if column.dtype == np.int64:
        return column.to_numpy()  # no copy: the column is only read
    return column.to_numpy(dtype=np.int64, na_value=0)


@dataclass(frozen=True)
class _Tables:
    """Per-group lookup arrays: `rates[c][group * n_levels + level]` in USD per unit."""

    rates: list[np.ndarray]
    thresholds: np.ndarray  # (levels - 1, groups), int64; a group without the level: max int
    status: np.ndarray  # per group: the code of its status in `_STATUSES`
    n_levels: int


def _code(status: str) -> int:
    return PRICING_STATUSES.index(status)


def _no_cost(codes: np.ndarray) -> np.ndarray:
    """Rows whose status leaves them without a cost (unknown model, incomplete or invalid)."""
    return (codes >= 1) & (codes <= _NO_COST)


def _rate_tables(resolved: list[tuple[rc.TieredRates | None, int]]) -> _Tables:
    n_levels = max((len(r.levels) for r, _ in resolved if r is not None), default=1)
    size = len(resolved) * n_levels
    rates = [np.zeros(size) for _ in range(7)]
    thresholds = np.full((n_levels - 1, len(resolved)), np.iinfo(np.int64).max, dtype=np.int64)
    status = np.array([code for _, code in resolved], dtype=np.int8)
    per_token, per_unit = Decimal(1_000_000), Decimal(1000)
    for g, (r, _) in enumerate(resolved):
        if r is None:
            continue
        thresholds[: len(r.thresholds), g] = r.thresholds
        for level, lv in enumerate(r.levels):
            i = g * n_levels + level
            for c, p in enumerate(lv.per_mtok):
                rates[c][i] = float(p / per_token)
            rates[5][i] = float(lv.per_k_web_search / per_unit)
            rates[6][i] = float(lv.per_k_requests / per_unit)
    return _Tables(rates, thresholds, status, n_levels)


def _round_nanos(parts: list[np.ndarray], zero: np.ndarray) -> list[np.ndarray]:
    """Parts and their total in USD rounded half-even to nano-USD, in place. The total is the
    exact sum rounded once; its rounding residual (a few nano-USD at most) is added to the row's
    largest part so that the parts add up exactly to the total."""
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    residual = np.rint(np.multiply(total, 1e9, out=total), out=total).copy()
    for p in parts:
        np.rint(np.multiply(p, 1e9, out=p), out=p)
        residual -= p
    rows = np.flatnonzero(residual)
    if len(rows):
        stacked = np.stack([p.take(rows) for p in parts])
        largest = stacked.argmax(axis=0)
        for i, p in enumerate(parts):
            hit = rows[largest == i]
            p[hit] += residual[hit]
    out = [*parts, total]
    if zero.any():
        for p in out:
            p[zero] = 0.0
    for p in out:
        p /= 1e9
    return out
