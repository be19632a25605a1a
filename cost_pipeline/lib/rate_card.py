"""The price catalog: genai-prices' bundled snapshot plus negotiated overrides, as rates.

This module turns catalog entries into the per-token rates the vectorized engine
(`lib.pricing`) multiplies, and into the effective-dated `model_prices` rate card. Both go
through `component_rates`, so the card shows exactly what the engine charges.

Token categories follow genai-prices' unit registry (`data_units.py`): a request's TOTAL input
splits into uncached input, cache reads, 5-minute and 1-hour cache writes. genai-prices prices
each *leaf* of that tree: a category without its own price (e.g. cache reads on a model with no
cache price) is charged at its parent's price, so `component_rates` falls back the same way
(1h write -> cache write -> input). Long-context tiers (`TieredPrices`) apply to the whole
request once its total input exceeds a threshold; each category keeps its own tiers.

Service tier / batch -> genai-prices `price_context` (see `price_context`):

| provider  | service_tier (batch false or null)   | price_context                 |
|-----------|--------------------------------------|-------------------------------|
| any       | batch=True, or tier `batch`          | `{"processing": "batch"}`     |
| any       | null                                 | none: list price              |
| openai    | `default`, `auto`, `standard`, `scale` | `{"service_tier": "default"}` |
| openai    | `flex`, `priority`, `fast`, other    | `{"service_tier": <tier>}`    |
| anthropic | `standard`, `priority`, other        | none: list price              |
| anthropic | `fast` (fast mode)                   | `{"speed": "fast"}`           |
| other     | any                                  | `{"service_tier": <tier>}`    |

Tiers are compared lower-case. Anthropic's Priority Tier is a capacity commitment billed outside
the per-token list (its cost report leaves it out), so priority calls are priced at the standard
list price. OpenAI's Scale Tier is prepaid units; its calls are priced at the default tier.

Overrides (`config.PriceOverride`) match a provider exactly and a model glob (`fnmatch`, case
insensitive) against either the raw model string or the catalog model id, on UTC dates from
`effective_from` through `effective_to` inclusive. The LAST matching override of each kind wins.
Explicit prices (custom or fine-tuned models) replace the catalog price; cache reads and writes
without their own price are charged at `input_mtok` (genai-prices' leaf rule), web searches at 0.
A discount multiplies every component of the catalog price by `1 - discount_pct / 100`; it is
not applied on top of explicit prices.

Units beyond tokens (`UNIT_COMPONENTS`): genai-prices prices some models per character
(`input_mchars`: `tts-1`, `tts-1-hd`) or per hour of audio (`audio_hours`, or one direction's
`input_audio_hours` / `output_audio_hours`: `whisper-1`, Groq and Mistral transcription,
realtime voice models) and per request (`requests_kcount`: Perplexity). It has no per-image or
per-video-second price. Rate cards (`config.RateCard`) price any provider's units on effective
dates; a card's price of a unit replaces the catalog's (`with_cards`), never discounted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import cache

import genai_prices
import pandas as pd
from genai_prices import data_snapshot
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    PriceVariant,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
    Usage,
)

from cost_pipeline.catalog import MODEL_PRICES
from cost_pipeline.lib.config import ImagePrice, PriceOverride, RateCard

CATALOG_SOURCE = f"genai-prices {genai_prices.__version__}"
OVERRIDE_SOURCE = "override"
RATE_CARD_SOURCE = "rate_card"
DEFAULT_PROVIDERS = ("openai", "anthropic")

# Per-token categories, in the order of `ComponentRates.per_mtok`.
TOKEN_COMPONENTS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")
# Usage units beyond tokens, in the order of `ComponentRates.per_unit` (requests and images are
# priced apart: per call, and per image size and quality).
UNIT_COMPONENTS = ("characters", "audio_seconds", "video_seconds")
# genai-prices price keys of each unit, with the number of units their price is for; the first
# present is used (audio: the total, else the one direction the catalog prices).
CATALOG_UNIT_KEYS: dict[str, tuple[tuple[str, int], ...]] = {
    "characters": (("input_mchars", 1_000_000),),
    "audio_seconds": (
        ("audio_hours", 3600),
        ("input_audio_hours", 3600),
        ("output_audio_hours", 3600),
    ),
    "video_seconds": (),
}
TOKEN_PRICE_KEYS = frozenset(
    {
        "input_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "cache_write_5m_mtok",
        "cache_write_1h_mtok",
        "output_mtok",
    }
)
Price = Decimal | TieredPrices
ZERO = Decimal(0)
NO_UNITS: tuple[Decimal | None, ...] = (None,) * len(UNIT_COMPONENTS)


@dataclass(frozen=True)
class ComponentRates:
    """What one request costs per unit, at one level of long-context tiering.

    `per_mtok` are USD per million tokens of each `TOKEN_COMPONENTS` leaf; `per_k_web_search`
    is USD per thousand web searches and `per_k_requests` USD per thousand requests; `per_unit`
    is USD per one unit of each `UNIT_COMPONENTS` (None: the price has none for that unit).
    """

    per_mtok: tuple[Decimal, ...]
    per_k_web_search: Decimal = ZERO
    per_k_requests: Decimal = ZERO
    per_unit: tuple[Decimal | None, ...] = NO_UNITS

    def scaled(self, factor: Decimal) -> ComponentRates:
        return ComponentRates(
            tuple(p * factor for p in self.per_mtok),
            self.per_k_web_search * factor,
            self.per_k_requests * factor,
            tuple(None if p is None else p * factor for p in self.per_unit),
        )


@dataclass(frozen=True)
class TieredRates:
    """Rates at each long-context level: `levels[i]` applies when total input tokens exceed
    `thresholds[i - 1]` (and not `thresholds[i]`); `levels[0]` is the base price.
    `tokens_priced`: whether the price has any token price at all (`tts-1` has none: its calls
    are priced by characters only, and a call without characters cannot be priced)."""

    thresholds: tuple[int, ...]
    levels: tuple[ComponentRates, ...]
    tokens_priced: bool = True

    def scaled(self, factor: Decimal) -> TieredRates:
        levels = tuple(level.scaled(factor) for level in self.levels)
        return TieredRates(self.thresholds, levels, self.tokens_priced)


def _at(price: Price | None, input_tokens: int) -> Decimal:
    """genai-prices' `calc_unit_price` tier choice: the highest tier whose start is exceeded."""
    if price is None:
        return ZERO
    if not isinstance(price, TieredPrices):
        return price
    chosen = price.base
    for tier in price.tiers:  # sorted ascending by genai-prices
        if input_tokens > tier.start:
            chosen = tier.price
    return chosen


def component_rates(model_price: ModelPrice) -> TieredRates:
    """Leaf rates of every token category, at every long-context level of `model_price`."""
    p = {k: v for k, v in model_price.__dict__.items() if v is not None and not k.startswith("_")}
    # Unpriced leaves are charged at their parent's price, as genai-prices' decomposition does.
    write = p.get("cache_write_mtok", p.get("input_mtok"))
    prices: tuple[Price | None, ...] = (
        p.get("input_mtok"),
        p.get("cache_read_mtok", p.get("input_mtok")),
        p.get("cache_write_5m_mtok", write),
        p.get("cache_write_1h_mtok", write),
        p.get("output_mtok"),
        p.get("web_searches_kcount"),
        p.get("requests_kcount"),
    )
    units = [_catalog_unit(p, unit) for unit in UNIT_COMPONENTS]
    every = [*prices, *(u[0] for u in units if u is not None)]
    thresholds = sorted({t.start for v in every if isinstance(v, TieredPrices) for t in v.tiers})
    # Level i is reached by any input in (thresholds[i-1], thresholds[i]]; price it at its low end.
    probes = [0, *(t + 1 for t in thresholds)]
    levels = tuple(
        ComponentRates(
            tuple(_at(v, n) for v in prices[:5]),
            _at(prices[5], n),
            _at(prices[6], n),
            tuple(None if u is None else _at(u[0], n) / u[1] for u in units),
        )
        for n in probes
    )
    return TieredRates(tuple(thresholds), levels, bool(TOKEN_PRICE_KEYS & p.keys()))


def _catalog_unit(prices: Mapping[str, Price], unit: str) -> tuple[Price, int] | None:
    """The catalog's price of `unit` and the number of units it is for, if it has one."""
    return next(((prices[k], per) for k, per in CATALOG_UNIT_KEYS[unit] if k in prices), None)


def catalog_units(model: ModelInfo) -> frozenset[str]:
    """The units (`UNIT_COMPONENTS`, `requests`) any of the model's catalog prices charges."""
    entries = model.prices if isinstance(model.prices, list) else [model.prices]
    prices = [getattr(e, "prices", e) for e in entries]
    prices += [v.prices for v in model.price_variants or ()]
    keys = {k for p in prices for k, v in p.__dict__.items() if v is not None}
    units = {u for u, options in CATALOG_UNIT_KEYS.items() if any(k in keys for k, _ in options)}
    return frozenset(units | ({"requests"} if "requests_kcount" in keys else set()))


def explicit_rates(override: PriceOverride) -> TieredRates:
    """Rates of a custom model priced entirely by an override."""
    inp = override.input_mtok or ZERO
    read = override.cache_read_mtok if override.cache_read_mtok is not None else inp
    write = override.cache_write_mtok if override.cache_write_mtok is not None else inp
    out = override.output_mtok or ZERO
    return TieredRates((), (ComponentRates((inp, read, write, write, out)),))


def price_context(
    provider: str | None, service_tier: str | None, batch: bool | None
) -> dict[str, str] | None:
    """genai-prices `price_context` for a call's service tier and batch flag (table above)."""
    tier = (service_tier or "").strip().lower() or None
    if batch or tier == "batch":
        return {"processing": "batch"}
    if tier is None:
        return None
    provider = (provider or "").lower()
    if provider == "anthropic":
        return {"speed": "fast"} if tier == "fast" else None
    if provider == "openai" and tier in ("default", "auto", "standard", "scale"):
        return {"service_tier": "default"}
    return {"service_tier": tier}


# --- catalog access -------------------------------------------------------------------------


def _provider(provider_id: str) -> Provider | None:
    return next((p for p in data_snapshot.get_snapshot().providers if p.id == provider_id), None)


def catalog_models(provider: str) -> list[str]:
    """Model ids of `provider` in the bundled genai-prices snapshot (empty if unknown)."""
    found = _provider(provider.lower())
    return [m.id for m in found.models] if found is not None else []


@cache
def find_model(provider: str, model: str) -> tuple[Provider, ModelInfo] | None:
    """genai-prices' own matching of a raw model string (dated snapshots, aliases), or None."""
    try:
        return data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None


def catalog_prices(
    provider: Provider, model: ModelInfo, at: datetime, context: Mapping[str, str] | None
) -> ModelPrice | None:
    """The price genai-prices' `calc_price` uses at `at` (None if the catalog entry is unusable)."""
    # Mirrors ModelInfo.calc_price: a model borrowed from a fallback provider ignores the context.
    if context and not any(model is m for m in provider.models):
        context = None
    prices = model.get_prices(at, context)
    keys = frozenset(k for k, v in prices.__dict__.items() if v is not None)
    return prices if _valid_price_keys(keys) else None


# The price keys a call's usage columns can pay for (see `component_rates`).
USAGE_PRICE_KEYS = frozenset(
    {
        "input_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "cache_write_5m_mtok",
        "cache_write_1h_mtok",
        "output_mtok",
        "web_searches_kcount",
        "requests_kcount",
        *(key for options in CATALOG_UNIT_KEYS.values() for key, _ in options),
    }
)


def needs_other_usage(prices: ModelPrice) -> bool:
    """Whether the price charges only units a call's record cannot express (document pages,
    pixels, messages): pricing such a call from what it has would make it free."""
    keys = {k for k, v in prices.__dict__.items() if v is not None and not k.startswith("_")}
    return bool(keys) and not keys & USAGE_PRICE_KEYS


# Contexts that select the standard price itself (OpenAI's default tier has no variant).
STANDARD_CONTEXTS = ({"service_tier": "default"},)


def tier_listed(
    provider: Provider, model: ModelInfo, at: datetime, context: Mapping[str, str] | None
) -> bool:
    """Whether the catalog has a price for the call's service tier / batch `context` at `at`
    (genai-prices silently falls back to the standard price when it has none)."""
    if not context or dict(context) in STANDARD_CONTEXTS:
        return True
    if not any(model is m for m in provider.models):
        return False  # a model borrowed from a fallback provider ignores the context
    return any(
        (variant.constraint is None or variant.constraint.active(at))
        and all(context.get(key) == value for key, value in variant.when.items())
        for variant in model.price_variants or ()
    )


def context_tier(context: Mapping[str, str] | None) -> str | None:
    """The tier label of a price context: `batch`, or the service tier / speed named in it."""
    if not context:
        return None
    if context.get("processing") == "batch":
        return "batch"
    return context.get("service_tier") or context.get("speed")


@cache
def _valid_price_keys(keys: frozenset[str]) -> bool:
    """Whether genai-prices accepts a price with these keys (its validation depends on the key
    set only; it is cached because it costs as much as pricing a whole group)."""
    try:
        ModelPrice(**dict.fromkeys(keys, Decimal(1))).calc_price(Usage())
    except ValueError:
        return False
    return True


def _utc_time(value: time) -> time:
    """A constraint's time of day in UTC; naive times are UTC (as in genai-prices)."""
    if value.tzinfo is None:
        return value
    return datetime.combine(date(2000, 1, 1), value).astimezone(UTC).time()


def price_boundaries(model: ModelInfo) -> tuple[set[date], set[time]]:
    """UTC start dates and UTC times of day at which `model`'s price can change."""
    constraints = [c.constraint for c in model.prices] if isinstance(model.prices, list) else []
    constraints += [v.constraint for v in model.price_variants or ()]
    days = {c.start_date for c in constraints if isinstance(c, StartDateConstraint)}
    times = {
        _utc_time(t)
        for c in constraints
        if isinstance(c, TimeOfDateConstraint)
        for t in (c.start_time, c.end_time)
    }
    return days, times


# --- overrides ------------------------------------------------------------------------------


Dated = PriceOverride | RateCard


def override_matches(override: Dated, provider: str, model: str, model_id: str | None) -> bool:
    """Whether an override's (or a rate card's) provider and model glob match a call."""
    if override.provider.lower() != provider.lower():
        return False
    glob = override.model.lower()
    return fnmatchcase(model.lower(), glob) or (
        model_id is not None and fnmatchcase(model_id.lower(), glob)
    )


def override_active(override: Dated, day: date) -> bool:
    return (override.effective_from is None or day >= override.effective_from) and (
        override.effective_to is None or day <= override.effective_to
    )


def override_boundaries(overrides: Sequence[Dated]) -> set[date]:
    """UTC dates at which an override starts or stops applying (its end date is inclusive)."""
    days = {o.effective_from for o in overrides if o.effective_from is not None}
    return days | {o.effective_to + timedelta(days=1) for o in overrides if o.effective_to}


# --- rate cards -----------------------------------------------------------------------------

_NO_TOKENS = TieredRates((), (ComponentRates((ZERO,) * len(TOKEN_COMPONENTS)),), False)


@dataclass(frozen=True)
class CardRates:
    """What the active rate cards of a call add: its rates with the cards' unit prices in place
    (catalog and override token prices kept), which units a card priced (`UNIT_COMPONENTS`
    then `requests`), and the image prices of the last card that has some."""

    rates: TieredRates
    from_card: tuple[bool, ...]
    images: tuple[ImagePrice, ...]


def card_unit_price(card: RateCard, unit: str) -> Decimal | None:
    """USD per one unit (`UNIT_COMPONENTS` or `requests`) of a card, or None if it has none."""
    price = getattr(card, unit)
    return None if price is None else price.usd / price.per


def with_cards(rates: TieredRates | None, cards: Sequence[RateCard]) -> CardRates:
    """`rates` (None: no token price) with the unit prices of the active `cards` (the last
    card pricing a unit wins) replacing the catalog's."""
    units: list[Decimal | None] = [None] * len(UNIT_COMPONENTS)
    request: Decimal | None = None
    images: tuple[ImagePrice, ...] = ()
    for card in cards:
        for i, unit in enumerate(UNIT_COMPONENTS):
            price = card_unit_price(card, unit)
            units[i] = price if price is not None else units[i]
        price = card_unit_price(card, "requests")
        request = price if price is not None else request
        images = tuple(card.images) or images
    base = rates if rates is not None else _NO_TOKENS
    levels = tuple(
        ComponentRates(
            level.per_mtok,
            level.per_k_web_search,
            request * 1000 if request is not None else level.per_k_requests,
            tuple(
                c if c is not None else old for c, old in zip(units, level.per_unit, strict=True)
            ),
        )
        for level in base.levels
    )
    from_card = (*(u is not None for u in units), request is not None)
    return CardRates(TieredRates(base.thresholds, levels, base.tokens_priced), from_card, images)


def normalized_label(value: object) -> str | None:
    """An image size or quality as compared: trimmed, lower case (`1024X1024` = `1024x1024`)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower()


def image_price(
    prices: Sequence[ImagePrice], size: str | None, quality: str | None
) -> Decimal | None:
    """USD per image of the first entry matching `size` and `quality` (unset entries match any;
    a call that does not say its size matches only entries without one)."""
    for entry in prices:
        if entry.size is not None and normalized_label(entry.size) != size:
            continue
        if entry.quality is not None and normalized_label(entry.quality) != quality:
            continue
        return entry.usd
    return None


def card_units(card: RateCard) -> frozenset[str]:
    """The units a rate card prices (`UNIT_COMPONENTS`, `requests`, `images`)."""
    units = {u for u in (*UNIT_COMPONENTS, "requests") if getattr(card, u) is not None}
    return frozenset(units | ({"images"} if card.images else set()))


def discount_factor(override: PriceOverride) -> Decimal:
    return (Decimal(100) - Decimal(str(override.discount_pct))) / Decimal(100)


def price_version(
    overrides: Sequence[PriceOverride],
    tier_fallback: Mapping[str, Decimal] | None = None,
    rate_cards: Sequence[RateCard] = (),
) -> str:
    """Short stable hash of the catalog version, the overrides, the tier fallback multipliers
    and the rate cards: changes on any repricing."""
    content: dict[str, object] = {
        "catalog": CATALOG_SOURCE,
        "overrides": [o.model_dump(mode="json") for o in overrides],
    }
    if tier_fallback:
        content["tier_fallback"] = {k: str(v) for k, v in sorted(tier_fallback.items())}
    if rate_cards:
        content["rate_cards"] = [c.model_dump(mode="json") for c in rate_cards]
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


# --- the rate card --------------------------------------------------------------------------


def _variant_label(when: Mapping[str, str]) -> tuple[str | None, bool]:
    """(service_tier label, batch) of a price variant's context."""
    if when.get("processing") == "batch":
        return None, True
    if when.get("speed") == "fast":
        return "fast", False
    return when.get("service_tier") or ",".join(f"{k}={v}" for k, v in when.items()), False


def _midnight(day: date | None) -> pd.Timestamp | None:
    return None if day is None else pd.Timestamp(day, tz="UTC")


def _row(
    provider: str,
    pattern: str,
    window: tuple[date | None, date | None],
    tier: str | None,
    batch: bool,
    rates: TieredRates,
    source: str,
) -> dict:
    base = rates.levels[0]
    long = rates.levels[1] if len(rates.levels) > 1 else None
    row = {
        "provider": provider,
        "model_pattern": pattern,
        "effective_from": _midnight(window[0]),
        "effective_to": _midnight(window[1]),
        "service_tier": tier,
        "batch": batch,
        **{f"{c}_mtok": float(v) for c, v in zip(_CARD_COMPONENTS, base.per_mtok, strict=True)},
        "web_search_ktok": float(base.per_k_web_search),
        "long_context_threshold": rates.thresholds[0] if rates.thresholds else None,
        "source": source,
        **_unit_columns(base.per_unit, base.per_k_requests or None),
    }
    for c, v in zip(_CARD_COMPONENTS, long.per_mtok if long else (None,) * 5, strict=True):
        row[f"long_{c}_mtok"] = None if v is None else float(v)
    return row


_CARD_COMPONENTS = ("input", "cache_read", "cache_write", "cache_write_1h", "output")
# `model_prices` columns of the units beyond tokens, and what one unit of the column is.
_UNIT_CARD_COLUMNS = (
    ("characters_mchar", Decimal(1_000_000)),
    ("audio_hour", Decimal(3600)),
    ("video_second", Decimal(1)),
)


def _unit_columns(per_unit: Sequence[Decimal | None], per_k_requests: Decimal | None) -> dict:
    row: dict[str, float | None] = {
        name: None if p is None else float(p * per)
        for (name, per), p in zip(_UNIT_CARD_COLUMNS, per_unit, strict=True)
    }
    row["request_kcount"] = None if per_k_requests is None else float(per_k_requests)
    return row


def _card_rows(cards: Sequence[RateCard]) -> list[dict]:
    """One `model_prices` row per rate card (its unit prices) and one per image price."""
    rows: list[dict] = []
    for card in cards:
        until = card.effective_to + timedelta(days=1) if card.effective_to else None
        base = {
            "provider": card.provider,
            "model_pattern": card.model,
            "effective_from": _midnight(card.effective_from),
            "effective_to": _midnight(until),
            "batch": False,
            "source": RATE_CARD_SOURCE,
        }
        units = [card_unit_price(card, u) for u in UNIT_COMPONENTS]
        request = card_unit_price(card, "requests")
        if any(u is not None for u in units) or request is not None:
            rows.append(base | _unit_columns(units, None if request is None else request * 1000))
        for image in card.images:
            rows.append(
                base
                | {
                    "image_size": image.size,
                    "image_quality": image.quality,
                    "image_usd": float(image.usd),
                }
            )
    return rows


def _catalog_rows(provider: Provider) -> list[dict]:
    rows: list[dict] = []
    for model in provider.models:
        days, _ = price_boundaries(model)
        starts: list[date | None] = [None, *sorted(days)]
        contexts: list[Mapping[str, str] | None] = [None]
        variants: list[PriceVariant] = list(model.price_variants or ())
        contexts += [dict(w) for w in dict.fromkeys(tuple(v.when.items()) for v in variants)]
        for context in contexts:
            tier, batch = _variant_label(context) if context else (None, False)
            previous: TieredRates | None = None
            for i, start in enumerate(starts):
                end = starts[i + 1] if i + 1 < len(starts) else None
                probe = start or (end - timedelta(days=1) if end else date(2020, 1, 1))
                prices = catalog_prices(
                    provider, model, datetime.combine(probe, time(), UTC), context
                )
                if prices is None:
                    continue
                rates = component_rates(prices)
                if rates == previous:  # same price as the window before: extend that row
                    rows[-1]["effective_to"] = _midnight(end)
                    continue
                rows.append(
                    _row(provider.id, model.id, (start, end), tier, batch, rates, CATALOG_SOURCE)
                )
                previous = rates
    return rows


def _override_rows(overrides: Sequence[PriceOverride], catalog: list[dict]) -> list[dict]:
    rows: list[dict] = []
    for o in overrides:
        until = o.effective_to + timedelta(days=1) if o.effective_to else None
        if o.discount_pct is None:
            rows.append(
                _row(
                    o.provider,
                    o.model,
                    (o.effective_from, until),
                    None,
                    False,
                    explicit_rates(o),
                    OVERRIDE_SOURCE,
                )
            )
            continue
        factor = float(discount_factor(o))
        for row in catalog:
            if not override_matches(o, row["provider"], row["model_pattern"], None):
                continue
            start = max(
                filter(None, (row["effective_from"], _midnight(o.effective_from))), default=None
            )
            end = min(filter(None, (row["effective_to"], _midnight(until))), default=None)
            if start is not None and end is not None and start >= end:
                continue
            prices = ("_mtok", "_ktok", "_mchar", "_hour", "_kcount")
            scaled = {
                k: v * factor if k.endswith(prices) and v is not None else v for k, v in row.items()
            }
            rows.append(
                scaled | {"effective_from": start, "effective_to": end, "source": OVERRIDE_SOURCE}
            )
    return rows


def build_rate_card(
    overrides: Sequence[PriceOverride] = (),
    *,
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    rate_cards: Sequence[RateCard] = (),
    tier_fallback: Mapping[str, Decimal] | None = None,
) -> pd.DataFrame:
    """The `model_prices` table: catalog list prices per model, price window and tier / batch
    variant, plus one row per override (discounts expanded over the models they cover) and per
    rate card (one more per image price).

    Prices are the effective leaf rates the engine charges (e.g. a model without a cache price
    shows its input price as `cache_read_mtok`); the long-context columns hold the first tier.
    Override rows take precedence over catalog rows where both apply, and rate-card unit prices
    over the catalog's. `price_version` is the engine's for the same configuration.
    """
    catalog = [row for pid in providers if (p := _provider(pid)) for row in _catalog_rows(p)]
    rows = catalog + _override_rows(overrides, catalog) + _card_rows(rate_cards)
    card = pd.DataFrame(rows, columns=MODEL_PRICES.column_names)
    card["price_version"] = price_version(overrides, tier_fallback, rate_cards)
    return MODEL_PRICES.conform(card)
