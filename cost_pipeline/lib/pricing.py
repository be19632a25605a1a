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

Units beyond tokens: a call may carry `characters`, `audio_seconds`, `video_seconds`, `images`
(with `image_size` / `image_quality`) and `requests` (null: one). Each is priced at the
catalog's unit price where genai-prices has one (see `lib.rate_card`) or at the price of the
call's active rate cards (`config.RateCard`, which win); their cost is `cost_units_usd`
(characters, seconds, images) and, for per-request fees, `cost_other_usd`. A call logged with
an app-supplied `reported_cost_usd` (a service priced elsewhere) keeps that amount as its cost
(in `cost_other_usd`) whatever the catalog says.

Every row says how it was priced (`pricing_status`):

- `priced`: the catalog's list price for the call's model, tier and instant;
- `override`: a price override or discount from the configuration applied;
- `tier_fallback`: the catalog has no price for the call's service tier / batch on that date;
  the standard price times the tier's configured multiplier (`pricing.tier_fallback_multipliers`)
  is used. genai-prices itself would silently use the standard price;
- `rate_card`: a configured rate card priced a unit of the call (and the catalog or an
  override its tokens, if it has any);
- `app_reported`: the cost is the one the app logged (`reported_cost_usd`), kept as reported;
- `unknown_model`: nothing prices the call's tokens (a call of an unknown model with no tokens,
  priced by a rate card, is `rate_card`);
- `incomplete_usage`: the price and the usage do not meet: the price charges units the record
  lacks (a `tts-1` call without characters, `whisper-1` without audio seconds), or the call
  carries a unit (characters, seconds, images of that size and quality) nothing prices at its
  instant. Pricing the rest would understate it;
- `invalid_usage`: cache tokens exceed the total input (genai-prices rejects it).

The last three get zero costs and are counted as unpriced (`UNPRICED_STATUSES`), so they are
flagged rather than silently free.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa

from cost_pipeline.lib import rate_card as rc
from cost_pipeline.lib.config import CostConfig, ImagePrice, PriceOverride, RateCard

PRICED = "priced"
UNKNOWN_MODEL = "unknown_model"
INVALID_USAGE = "invalid_usage"
INCOMPLETE_USAGE = "incomplete_usage"
TIER_FALLBACK = "tier_fallback"
OVERRIDE = "override"
RATE_CARD = "rate_card"
APP_REPORTED = "app_reported"
# Codes 1-3 have no cost (see `_round_nanos`); the others are priced.
_STATUSES = np.array(
    [
        PRICED,
        UNKNOWN_MODEL,
        INVALID_USAGE,
        INCOMPLETE_USAGE,
        TIER_FALLBACK,
        OVERRIDE,
        RATE_CARD,
        APP_REPORTED,
    ],
    dtype=object,
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
    "cost_units_usd",
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
# The call's usage beyond tokens (each optional; see the module doc).
UNIT_INPUTS = (
    *rc.UNIT_COMPONENTS,
    "images",
    "image_size",
    "image_quality",
    "requests",
    "reported_cost_usd",
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
    cards: tuple[RateCard, ...] = ()  # the rate cards whose provider and glob match


@dataclass(frozen=True)
class _Group:
    """A key's prices in one price window: token rates (None: none), status code, which units
    (`rc.UNIT_COMPONENTS`, then requests) a rate card priced, and its image prices."""

    rates: rc.TieredRates | None
    status: int
    from_card: tuple[bool, ...] = (False,) * (len(rc.UNIT_COMPONENTS) + 1)
    images: tuple[ImagePrice, ...] = ()


_ENGINES: dict[str, PricingEngine] = {}


class PricingEngine:
    """Prices LLM calls (or usage buckets) with genai-prices' catalog plus `overrides` and
    `rate_cards` (prices of units beyond tokens)."""

    def __init__(
        self,
        overrides: Sequence[PriceOverride] = (),
        tier_fallback: Mapping[str, Decimal] | None = None,
        rate_cards: Sequence[RateCard] = (),
    ) -> None:
        self.overrides = tuple(overrides)
        self.tier_fallback = {k.lower(): v for k, v in (tier_fallback or {}).items()}
        self.rate_cards = tuple(rate_cards)
        self.price_version = rc.price_version(self.overrides, self.tier_fallback, self.rate_cards)
        self._keys: dict[tuple, _Key] = {}
        self._units: dict[tuple[str, str], frozenset[str]] = {}
        self._edges: dict[tuple, tuple[list[date], list[time]]] = {}
        self._windows: dict[tuple, _Tables] = {}

    @classmethod
    def for_config(cls, config: CostConfig) -> PricingEngine:
        """The engine of a configuration: its price overrides, tier fallback multipliers and
        rate cards.

        One engine per price version and process: the version hashes everything a price
        depends on, so an engine's resolved models serve every later day of a backfill.
        """
        engine = cls(
            config.price_overrides, config.pricing.tier_fallback_multipliers, config.rate_cards
        )
        return _ENGINES.setdefault(engine.price_version, engine)

    def priced_units(self, provider: str, model: str) -> frozenset[str]:
        """The units beyond tokens (`rc.UNIT_COMPONENTS`, `images`, `requests`) that something
        prices for the model at some date: the catalog or a matching rate card. A unit outside
        this set can never be priced for the model, whatever the call's date."""
        pair = (provider.lower(), model)
        if pair not in self._units:
            key = self._key(provider, model, None, False)
            found = rc.catalog_units(key.found[1]) if key.found else frozenset()
            self._units[pair] = found.union(*(rc.card_units(c) for c in key.cards))
        return self._units[pair]

    def rate_card(self, providers: Sequence[str] = rc.DEFAULT_PROVIDERS) -> pd.DataFrame:
        """The `model_prices` rows of this engine's catalog, overrides and rate cards."""
        return rc.build_rate_card(
            self.overrides,
            providers=providers,
            rate_cards=self.rate_cards,
            tier_fallback=self.tier_fallback,
        )

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
        cards = tuple(c for c in self.rate_cards if rc.override_matches(c, p, m, model_id))
        key = _Key(p, m, rc.price_context(p, t, batch), found, overrides, cards)
        self._keys[raw] = key
        return key

    def _rates(self, key: _Key, at: datetime) -> _Group:
        """The call's prices at `at`: token rates and status, with its active rate cards."""
        rates, status = self._token_rates(key, at)
        cards = [c for c in key.cards if rc.override_active(c, at.date())]
        if not cards:
            return _Group(rates, status)
        card = rc.with_cards(rates, cards)
        return _Group(card.rates, status, card.from_card, card.images)

    def _token_rates(self, key: _Key, at: datetime) -> tuple[rc.TieredRates | None, int]:
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
        days: set[date] = rc.override_boundaries(
            [o for k in keys for o in (*k.overrides, *k.cards)]
        )
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
        resolved: list[_Group] = []
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

        costs, status = _costs(df, group_of_row, tables)

        # Built from the input's columns without copying them; the two repeated labels are
        # categoricals because a 10M-row object column of one string costs a second to fill.
        columns = {name: df[name] for name in df.columns}
        columns |= dict(zip((*COST_COLUMNS, "cost_usd"), costs, strict=True))
        columns["price_version"] = pd.Categorical.from_codes(
            np.zeros(n, dtype=np.int8), [self.price_version]
        )
        columns["pricing_status"] = pd.Categorical.from_codes(status, _STATUSES)
        return pd.DataFrame(columns, index=df.index, copy=False)

    def price_usage(
        self,
        provider: str,
        model: str,
        at: datetime,
        usage: Mapping[str, Sequence[float] | np.ndarray],
        *,
        service_tier: str | None = None,
        batch: bool = False,
    ) -> tuple[dict[str, np.ndarray], list[str]]:
        """A few calls of ONE model at one instant, priced without pandas (`estimate_cost`).

        The same resolution (`_rates` at `at`, which lies in the price window `price` would
        cut) and the same row pass (`_costs`) as `price`, so the costs are identical to the
        last nano-USD. `usage` maps columns of `TOKEN_INPUTS` / `UNIT_INPUTS` to arrays of one
        length. Returns the cost columns (`COST_COLUMNS`, `cost_usd`) and each row's status.
        """
        tables = self._window_tables(provider, model, service_tier, batch, at)
        columns = {k: np.asarray(v) for k, v in usage.items()}
        costs, status = _costs(columns, np.zeros(_length(columns), dtype=np.int64), tables)
        names = (*COST_COLUMNS, "cost_usd")
        return dict(zip(names, costs, strict=True)), [PRICING_STATUSES[c] for c in status]

    def _window_tables(
        self, provider: str, model: str, tier: str | None, batch: bool, at: datetime
    ) -> _Tables:
        """The rate tables of one key in the price window holding `at`, kept per window (the
        windows of `price`: cut at the key's own price change instants)."""
        raw = (provider, model, tier, batch)
        if raw not in self._edges:
            key = self._key(*raw)
            days = rc.override_boundaries([*key.overrides, *key.cards])
            times: set[time] = set()
            if key.found is not None:
                d, tod = rc.price_boundaries(key.found[1])
                days, times = days | d, tod
            self._edges[raw] = (sorted(days), sorted(times))
        days_cut, times_cut = self._edges[raw]
        window = (*raw, bisect_right(days_cut, at.date()), bisect_right(times_cut, at.time()))
        if window not in self._windows:
            if len(self._windows) > 10_000:
                self._windows.clear()
            self._windows[window] = _rate_tables([self._rates(self._key(*raw), at)])
        return self._windows[window]

    def price_arrow(self, table: pa.Table) -> pa.Table:
        """An Arrow table of calls plus the cost columns, `price_version` and `pricing_status`.

        The same pass as `price`, for the ingester's Arrow chunks: only the columns the price
        depends on are handed to pandas; the rest of the row stays in Arrow.
        """
        needed = ["occurred_at", *KEY_COLUMNS, *TOKEN_INPUTS]
        needed += [c for c in UNIT_INPUTS if c in table.column_names]
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


def _costs(
    df: Mapping[str, pd.Series | np.ndarray], group_of_row: np.ndarray, tables: _Tables
) -> tuple[list[np.ndarray], np.ndarray]:
    """The cost parts (`COST_COLUMNS`) and total of each call, rounded to nano-USD, and each
    call's status code: the row pass of `PricingEngine.price`, given each row's group."""
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
        requests = _float_column(df, "requests")
        fees = tables.rates[6].take(row)
        if requests is not None:  # a call that does not say is one request
            fees *= np.where(np.isnan(requests), 1.0, requests)
        other += fees
    status = tables.status.take(group_of_row)
    units = _unit_costs(df, tables, group_of_row, tokens, status)
    parts = [
        part(0, uncached),
        part(1, tokens["cache_read_tokens"]),
        cache_write,
        part(4, tokens["output_tokens"]),
        other,
    ]
    if units is not None:
        parts.append(units)
    status[(uncached < 0) & ~_no_cost(status)] = _code(INVALID_USAGE)
    reported = _float_column(df, "reported_cost_usd")
    if reported is not None and (has := ~np.isnan(reported)).any():
        # A cost the app reports is kept as reported, whatever the catalog would say.
        for p in parts:
            p[has] = 0.0
        other[has] = reported[has]
        status[has] = _code(APP_REPORTED)
    costs = _round_nanos(parts, _no_cost(status))
    if units is None:  # no call uses a unit: the part is zero, and not worth a pass
        costs.insert(len(parts), np.zeros(len(group_of_row)))
    return costs, status


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


def _int_column(df: Mapping[str, pd.Series | np.ndarray], name: str) -> np.ndarray:
    if name not in df:
        return np.zeros(_length(df), dtype=np.int64)
    column = df[name]
    if isinstance(column, np.ndarray):
        return column.astype(np.int64, copy=False)
    if column.dtype == np.int64:
        return column.to_numpy()  # no copy: the column is only read
    return column.to_numpy(dtype=np.int64, na_value=0)


def _length(df: Mapping[str, pd.Series | np.ndarray]) -> int:
    return len(df) if isinstance(df, pd.DataFrame) else len(next(iter(df.values())))


def _float_column(df: Mapping[str, pd.Series | np.ndarray], name: str) -> np.ndarray | None:
    """A numeric column as float64 with NaN for null, or None when the frame has no such column."""
    if name not in df:
        return None
    column = df[name]
    if isinstance(column, np.ndarray) and column.dtype != object:
        return column.astype(np.float64, copy=False)
    if column.dtype == np.float64 and isinstance(column, pd.Series):
        return column.to_numpy()
    values = pd.to_numeric(pd.Series(column, copy=False), errors="coerce")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass(frozen=True)
class _Tables:
    """Per-group lookup arrays: `rates[c][group * n_levels + level]` in USD per unit; unit
    rates (`rc.UNIT_COMPONENTS`, USD per unit) and flags per group."""

    rates: list[np.ndarray]
    thresholds: np.ndarray  # (levels - 1, groups), int64; a group without the level: max int
    status: np.ndarray  # per group: the code of its status in `_STATUSES`
    n_levels: int
    tokens_priced: np.ndarray  # per group: whether its price has any token price
    unit_rates: np.ndarray  # (units, groups): USD per unit
    unit_priced: np.ndarray  # (units, groups): whether the unit has a price
    from_card: np.ndarray  # (units + requests, groups): whether a rate card priced it
    images: list[tuple[ImagePrice, ...]]  # per group: its image prices
    carded: np.ndarray  # per group: whether a rate card is active for it


def _code(status: str) -> int:
    return PRICING_STATUSES.index(status)


def _no_cost(codes: np.ndarray) -> np.ndarray:
    """Rows whose status leaves them without a cost (unknown model, incomplete or invalid)."""
    return (codes >= 1) & (codes <= _NO_COST)


def _rate_tables(resolved: list[_Group]) -> _Tables:
    n_levels = max((len(x.rates.levels) for x in resolved if x.rates is not None), default=1)
    size = len(resolved) * n_levels
    n_groups, n_units = len(resolved), len(rc.UNIT_COMPONENTS)
    rates = [np.zeros(size) for _ in range(7)]
    thresholds = np.full((n_levels - 1, n_groups), np.iinfo(np.int64).max, dtype=np.int64)
    status = np.array([x.status for x in resolved], dtype=np.int8)
    tokens_priced = np.zeros(n_groups, dtype=bool)
    unit_rates = np.zeros((n_units, n_groups))
    unit_priced = np.zeros((n_units, n_groups), dtype=bool)
    from_card = (
        np.array([x.from_card for x in resolved], dtype=bool).reshape(n_groups, n_units + 1).T
    )
    per_token, per_unit = Decimal(1_000_000), Decimal(1000)
    for g, x in enumerate(resolved):
        r = x.rates
        if r is None:
            continue
        tokens_priced[g] = r.tokens_priced
        thresholds[: len(r.thresholds), g] = r.thresholds
        for level, lv in enumerate(r.levels):
            i = g * n_levels + level
            for c, p in enumerate(lv.per_mtok):
                rates[c][i] = float(p / per_token)
            rates[5][i] = float(lv.per_k_web_search / per_unit)
            rates[6][i] = float(lv.per_k_requests / per_unit)
        # Units are never tiered by input tokens: the base level's price is the price.
        for u, p in enumerate(r.levels[0].per_unit):
            if p is not None:
                unit_rates[u, g], unit_priced[u, g] = float(p), True
    images = [x.images for x in resolved]
    carded = from_card.any(axis=0) | np.array([bool(i) for i in images], dtype=bool)
    return _Tables(
        rates,
        thresholds,
        status,
        n_levels,
        tokens_priced,
        unit_rates,
        unit_priced,
        from_card,
        images,
        carded,
    )


def _unit_costs(
    df: Mapping[str, pd.Series | np.ndarray],
    tables: _Tables,
    group: np.ndarray,
    tokens: Mapping[str, np.ndarray],
    status: np.ndarray,
) -> np.ndarray | None:
    """USD of each call's units beyond tokens (None: no call uses any and nothing changes);
    `status` is adjusted in place (module doc)."""
    n = len(group)
    cost = priced = missing = card = None
    for u, unit in enumerate(rc.UNIT_COMPONENTS):
        quantity = _float_column(df, unit)
        used = quantity > 0 if quantity is not None else None
        if used is None or not used.any():
            continue
        if cost is None:
            cost, priced = np.zeros(n), np.zeros(n, dtype=bool)
            missing, card = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        ok = used & tables.unit_priced[u].take(group)
        priced |= ok
        missing |= used & ~ok
        card |= ok & tables.from_card[u].take(group)
        cost[ok] += quantity[ok] * tables.unit_rates[u].take(group[ok])
    images = _float_column(df, "images")
    if images is not None and (images > 0).any():
        if cost is None:
            cost, priced = np.zeros(n), np.zeros(n, dtype=bool)
            missing, card = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        rows = np.flatnonzero(images > 0)
        rate = _image_rates(df, tables, group, rows)
        ok = ~np.isnan(rate)
        cost[rows[ok]] += images[rows[ok]] * rate[ok]
        priced[rows[ok]] = card[rows[ok]] = True
        missing[rows[~ok]] = True
    by_card = None
    if tables.from_card[len(rc.UNIT_COMPONENTS)].any():  # a card prices requests
        by_card = tables.from_card[len(rc.UNIT_COMPONENTS)].take(group)
        requests = _float_column(df, "requests")
        if requests is not None:
            by_card &= np.isnan(requests) | (requests > 0)
    rate_card, incomplete = _code(RATE_CARD), _code(INCOMPLETE_USAGE)
    pricedish = np.isin(tables.status, [_code(PRICED), _code(TIER_FALLBACK), _code(OVERRIDE)])
    units_only = pricedish & ~tables.tokens_priced  # groups priced by units alone (tts-1)
    if cost is None and by_card is None and not units_only.any():
        return None
    if cost is None:
        cost, priced = np.zeros(n), np.zeros(n, dtype=bool)
        missing, card = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if by_card is None:
        by_card = np.zeros(n, dtype=bool)
    if priced.any() or by_card.any() or missing.any():
        # A call of a model without token prices (or whose tokens cannot be priced) that uses
        # no tokens is priced by its units alone; a unit of it a rate card cannot price (an
        # image size it lacks) makes it incomplete rather than of an unknown model.
        no_tokens = (tokens["input_tokens"] == 0) & (tokens["output_tokens"] == 0)
        no_tokens &= tokens["web_search_requests"] == 0
        unpriced = (status == _code(UNKNOWN_MODEL)) | (status == incomplete)
        status[unpriced & no_tokens & (priced | by_card) & ~missing] = rate_card
        status[unpriced & no_tokens & missing & tables.carded.take(group)] = incomplete
    if units_only.any():
        # A price of units only (tts-1: characters) on a call that carries none of them.
        status[units_only.take(group) & ~priced] = incomplete
    status[missing & ~_no_cost(status)] = incomplete
    status[(status == _code(PRICED)) & (card | by_card)] = rate_card
    return cost


def _image_rates(
    df: Mapping[str, pd.Series | np.ndarray], tables: _Tables, group: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """USD per image of each of `rows` (NaN: no price for its size and quality), resolved once
    per distinct (group, size, quality)."""

    def labels(name: str) -> pd.Series:
        if name not in df:
            return pd.Series([None] * len(rows), dtype=object)
        values = pd.Series(df[name]).iloc[rows].astype(object)
        return values.map(rc.normalized_label).reset_index(drop=True)

    keys = pd.DataFrame(
        {"g": group[rows], "size": labels("image_size"), "q": labels("image_quality")}
    )
    joined = (
        keys["g"].astype(str) + "\x00" + keys["size"].astype(str) + "\x00" + keys["q"].astype(str)
    )
    combo, distinct = pd.factorize(joined)
    first = keys.iloc[np.unique(combo, return_index=True)[1]]
    prices = np.full(len(distinct), np.nan)
    for i, (g, size, quality) in enumerate(first.itertuples(index=False)):
        found = rc.image_price(tables.images[g], _none(size), _none(quality))
        prices[i] = np.nan if found is None else float(found)
    return prices[combo]


def _none(value: object) -> str | None:
    return value if isinstance(value, str) else None


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
