"""What a call will cost before it is made: `estimate_cost`, priced by the ledger's own engine.

    from cost_pipeline.estimate import estimate_cost

    e = estimate_cost("openai", "gpt-4o-mini", text=prompt, max_output_tokens=800)
    e.low_usd, e.high_usd        # Decimal USD: the range at the current rate card
    e.price_version, e.assumptions

The price comes from the same `PricingEngine` that prices the ledger (the catalog, the
configuration's overrides, tier fallbacks and rate cards, at the instant `at`), through
`PricingEngine.price_usage`: for the same usage an estimate equals the ledger's cost to the
nano-USD. `low_usd` is the call with no output and every `cached_input_tokens` read from the
prompt cache; `high_usd` the call with `max_output_tokens` of output and no cache hit. Units
beyond tokens (characters, seconds, images, requests) are taken as given.

Sizing input from text, offline. Exact token counts need the provider's tokenizer, and
`tiktoken` downloads its vocabularies on first use (no byte-pair encoding ships with the
installed packages), so `text` is sized by a documented approximation returning a range
(`tokens_from_text`):

- ASCII characters (English prose, code, JSON): 2.5 to 6 characters per token. OpenAI states
  about 4 for English (cl100k / o200k), Anthropic about 3.5; code and digits run denser, long
  common words looser. Other characters (accents, CJK, emoji): 1/3 to 1.5 tokens each.
- Never more than one token per UTF-8 byte: a byte-level BPE (tiktoken's, Claude's) cannot
  produce more, so the high end is capped there.

The range is a heuristic, not a bound, for unusual text (long runs of one character compress
far below it); give `input_tokens` when the app has the count. For a model priced per character
(`tts-1`), `text` gives `characters` exactly (its length), with no approximation.

A call nothing can price (an unknown model, a unit without a price) has no estimate: its
`low_usd` and `high_usd` are None and `pricing_status` says why, never $0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

import numpy as np

from cost_pipeline.lib.config import CostConfig, config_path, load_config
from cost_pipeline.lib.pricing import UNPRICED_STATUSES, PricingEngine

# Characters per token of ASCII text at the low and high end of the token range, and tokens per
# other character (see the module doc).
ASCII_CHARS_PER_TOKEN = (6.0, 2.5)
OTHER_TOKENS_PER_CHAR = (1 / 3, 1.5)
TEXT_ASSUMPTION = (
    "input tokens sized from text: 2.5-6 ASCII characters per token, 1/3-1.5 tokens per other "
    "character, at most one token per UTF-8 byte (offline approximation, not the tokenizer)"
)


@dataclass(frozen=True)
class TokenRange:
    """An approximate token count of a text: `low` <= `expected` <= `high`."""

    low: int
    expected: int
    high: int


@dataclass(frozen=True)
class Estimate:
    """The price range of a call at the current rate card (None: it cannot be priced)."""

    low_usd: Decimal | None
    high_usd: Decimal | None
    price_version: str
    pricing_status: str
    input_tokens: tuple[int, int]  # (low, high) input tokens the range assumes
    assumptions: tuple[str, ...]

    @property
    def priced(self) -> bool:
        return self.low_usd is not None


def tokens_from_text(text: str) -> TokenRange:
    """Approximate input tokens of `text` (see the module doc for the rule and its bounds)."""
    if not text:
        return TokenRange(0, 0, 0)
    ascii_chars = len(text.encode("ascii", "ignore"))
    other = len(text) - ascii_chars
    utf8_bytes = len(text.encode("utf-8", "surrogatepass"))
    low = ascii_chars / ASCII_CHARS_PER_TOKEN[0] + other * OTHER_TOKENS_PER_CHAR[0]
    high = ascii_chars / ASCII_CHARS_PER_TOKEN[1] + other * OTHER_TOKENS_PER_CHAR[1]
    expected = ascii_chars / 4 + other
    cap = max(utf8_bytes, 1)
    return TokenRange(
        min(max(math.ceil(low), 1), cap),
        min(max(math.ceil(expected), 1), cap),
        min(max(math.ceil(high), 1), cap),
    )


@cache
def _engine_for(path: str) -> tuple[PricingEngine, CostConfig]:
    config = load_config(path)
    return PricingEngine.for_config(config), config


def engine_for(config: CostConfig | None = None) -> PricingEngine:
    """The pricing engine of `config`, or of the configured file (read once per process)."""
    if config is not None:
        return PricingEngine.for_config(config)
    return _engine_for(str(config_path()))[0]


def estimate_cost(
    provider: str,
    model: str,
    input_tokens: int | None = None,
    max_output_tokens: int = 0,
    *,
    text: str | None = None,
    cached_input_tokens: int = 0,
    service_tier: str | None = None,
    batch: bool = False,
    web_searches: int = 0,
    characters: int | None = None,
    audio_seconds: float | None = None,
    video_seconds: float | None = None,
    images: int | None = None,
    image_size: str | None = None,
    image_quality: str | None = None,
    requests: int | None = None,
    at: datetime | None = None,
    config: CostConfig | None = None,
    engine: PricingEngine | None = None,
) -> Estimate:
    """The price range of one call of `model`, at `at` (default: now) and the current rate card.

    `input_tokens` is the total input (cache reads included); without it, `text` sizes it by
    `tokens_from_text`. `cached_input_tokens` of the input may be read from the prompt cache:
    the low end assumes they are, the high end that they are not. Output is 0 at the low end
    and `max_output_tokens` at the high end. `characters`, `audio_seconds`, `video_seconds`,
    `images` (of `image_size` / `image_quality`) and `requests` are priced as given; a model
    priced per character takes `len(text)` when `characters` is not given.

    The engine is `engine`, else that of `config`, else that of the configured file
    (`COST_PIPELINE_CONFIG` or the demo), loaded once per process.
    """
    engine = engine or engine_for(config)
    at = at or datetime.now(UTC)
    if at.tzinfo is None:
        raise ValueError("`at` must carry a time zone (UTC is what calls are priced at)")
    at = at.astimezone(UTC)
    assumptions: list[str] = []
    if characters is None and text is not None and _priced_by_characters(engine, provider, model):
        characters = len(text)
        assumptions.append(f"characters = len(text) = {characters:,} (priced per character)")
    if input_tokens is not None:
        tokens = (int(input_tokens), int(input_tokens))
    elif text is not None and characters is None:
        sized = tokens_from_text(text)
        tokens = (sized.low, sized.high)
        assumptions.append(f"{TEXT_ASSUMPTION}: {sized.low:,}-{sized.high:,} tokens")
    else:
        tokens = (0, 0)
    cached = min(int(cached_input_tokens), tokens[0])
    if cached_input_tokens:
        assumptions.append(
            f"low: {cached:,} input tokens read from the prompt cache; high: no cache hit"
        )
    if max_output_tokens:
        assumptions.append(f"low: no output; high: {int(max_output_tokens):,} output tokens")
    usage: dict[str, np.ndarray] = {
        "input_tokens": np.array(tokens, dtype=np.int64),
        "cache_read_tokens": np.array([cached, 0], dtype=np.int64),
        "output_tokens": np.array([0, int(max_output_tokens)], dtype=np.int64),
        "web_search_requests": np.full(2, int(web_searches), dtype=np.int64),
    }
    for name, value in (
        ("characters", characters),
        ("audio_seconds", audio_seconds),
        ("video_seconds", video_seconds),
        ("images", images),
        ("requests", requests),
    ):
        if value is not None:
            usage[name] = np.full(2, float(value))
    if images is not None:
        usage["image_size"] = np.array([image_size] * 2, dtype=object)
        usage["image_quality"] = np.array([image_quality] * 2, dtype=object)
    costs, statuses = engine.price_usage(
        provider, model, at, usage, service_tier=service_tier, batch=batch
    )
    unpriced = [s for s in statuses if s in UNPRICED_STATUSES]
    if unpriced:
        return Estimate(None, None, engine.price_version, unpriced[0], tokens, tuple(assumptions))
    both = sorted(_usd(x) for x in costs["cost_usd"])
    return Estimate(both[0], both[1], engine.price_version, statuses[1], tokens, tuple(assumptions))


def _priced_by_characters(engine: PricingEngine, provider: str, model: str) -> bool:
    return "characters" in engine.priced_units(provider, model)


def _usd(value: float) -> Decimal:
    """A cost the engine rounded to nano-USD, as that exact Decimal."""
    return Decimal(f"{value:.9f}")
