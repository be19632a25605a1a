"""Throughput of the vectorized pricing engine against per-event `genai_prices.calc_price`.

Run: `python -m cost_pipeline_tests.benchmarks.bench_pricing [--sizes 1000000 10000000]`.
Prints events/s of `PricingEngine.price` on synthetic events (~20 OpenAI and Anthropic models
over 30 days that span catalog price changes, with service tiers, batch, cache traffic and
long-context requests), the per-event time of `calc_price` on a sample, and their ratio.
Targets (from the issue): >= 2M events/s, >= 300x calc_price, 10M events in < 5 s on one core.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
from genai_prices import Usage, calc_price

from cost_pipeline.lib.config import PriceOverride
from cost_pipeline.lib.pricing import PricingEngine
from cost_pipeline.lib.rate_card import price_context

MODELS = [
    ("openai", "gpt-4o-mini-2024-07-18", 0.22),
    ("openai", "gpt-4o-2024-08-06", 0.08),
    ("openai", "gpt-4.1", 0.06),
    ("openai", "gpt-4.1-mini", 0.08),
    ("openai", "gpt-4.1-nano", 0.03),
    ("openai", "gpt-5", 0.05),
    ("openai", "gpt-5-mini", 0.06),
    ("openai", "gpt-5-nano", 0.02),
    ("openai", "gpt-5.4", 0.02),
    ("openai", "o3", 0.02),
    ("openai", "o4-mini", 0.03),
    ("openai", "text-embedding-3-small", 0.04),
    ("anthropic", "claude-sonnet-4-5-20250929", 0.10),
    ("anthropic", "claude-haiku-4-5-20251001", 0.07),
    ("anthropic", "claude-opus-4-1-20250805", 0.01),
    ("anthropic", "claude-sonnet-4-0", 0.03),
    ("anthropic", "claude-3-5-haiku-latest", 0.02),
    ("anthropic", "claude-opus-4-6", 0.02),
    ("selfhosted", "support-llama-ft", 0.03),
    ("openai", "gpt-unreleased-9", 0.01),  # unknown: flagged, not free
]
START = datetime(2026, 9, 25, tzinfo=UTC)  # 30 days across the catalog's 2026-10-12/14 changes
OVERRIDES = [
    PriceOverride(provider="anthropic", model="*", discount_pct=5, effective_from="2026-10-01"),
    PriceOverride(provider="selfhosted", model="support-llama-ft", input_mtok=0.2, output_mtok=0.6),
]


def synthetic_events(n: int, *, seed: int = 0) -> pd.DataFrame:
    """`n` calls with string key columns, as the warehouse returns them."""
    rng = np.random.default_rng(seed)
    weights = np.array([w for *_, w in MODELS])
    pick = rng.choice(len(MODELS), size=n, p=weights / weights.sum())
    providers = np.array([p for p, *_ in MODELS], dtype=object)
    models = np.array([m for _, m, _ in MODELS], dtype=object)
    tiers = np.array([None, "default", "flex", "priority", "standard"], dtype=object)
    tier = tiers.take(rng.choice(5, size=n, p=[0.6, 0.2, 0.08, 0.04, 0.08]))
    input_tokens = rng.lognormal(8, 1.5, size=n).astype(np.int64)
    long = rng.random(n) < 0.01
    input_tokens[long] += 200_000
    cache_read = (input_tokens * rng.random(n) * (rng.random(n) < 0.4)).astype(np.int64)
    write_5m = ((input_tokens - cache_read) * 0.3 * (rng.random(n) < 0.1)).astype(np.int64)
    write_1h = ((input_tokens - cache_read - write_5m) * 0.2 * (rng.random(n) < 0.05)).astype(
        np.int64
    )
    output = rng.lognormal(6, 1.2, size=n).astype(np.int64)
    seconds = rng.integers(0, 30 * 86_400, size=n)
    return pd.DataFrame(
        {
            "provider": providers.take(pick),
            "model": models.take(pick),
            "occurred_at": pd.to_datetime(START) + pd.to_timedelta(seconds, unit="s"),
            "service_tier": tier,
            "batch": rng.random(n) < 0.05,
            "input_tokens": input_tokens,
            "cache_read_tokens": cache_read,
            "cache_write_tokens": write_5m,
            "cache_write_1h_tokens": write_1h,
            "output_tokens": output,
            "reasoning_tokens": (output * 0.3).astype(np.int64),
            "web_search_requests": (rng.random(n) < 0.02).astype(np.int64),
        }
    )


def per_event_reference(sample: pd.DataFrame) -> tuple[float, list[float | None]]:
    """Seconds per event of pricing `sample` one call at a time with genai-prices, its model
    look-up caches already warm (the fairest case for calc_price), and each event's total."""
    _price_each(sample.head(200))
    start = time.perf_counter()
    totals = _price_each(sample)
    return (time.perf_counter() - start) / len(sample), totals


def _price_each(sample: pd.DataFrame) -> list[float | None]:
    totals: list[float | None] = []
    for e in sample.itertuples(index=False):
        usage = Usage(
            input_tokens=e.input_tokens,
            cache_read_tokens=e.cache_read_tokens,
            cache_write_tokens=e.cache_write_tokens + e.cache_write_1h_tokens,
            cache_write_5m_tokens=e.cache_write_tokens,
            cache_write_1h_tokens=e.cache_write_1h_tokens,
            output_tokens=e.output_tokens,
            web_searches=e.web_search_requests,
        )
        try:
            price = calc_price(
                usage,
                e.model,
                provider_id=e.provider,
                genai_request_timestamp=e.occurred_at.to_pydatetime(),
                price_context=price_context(e.provider, e.service_tier, e.batch),
            ).total_price
        except LookupError:
            totals.append(None)
            continue
        if e.provider == "anthropic" and e.occurred_at >= pd.Timestamp("2026-10-01", tz="UTC"):
            price *= Decimal("0.95")
        totals.append(float(price))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--sample", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"pricing benchmark (pid {os.getpid()}, numpy {np.__version__}, pandas {pd.__version__})")

    sample = synthetic_events(args.sample, seed=1)
    engine = PricingEngine(OVERRIDES)
    per_event, reference = per_event_reference(sample)
    priced = engine.price(sample)
    known = [i for i, r in enumerate(reference) if r is not None]
    worst = max(abs(priced["cost_usd"].iloc[i] - reference[i]) for i in known)
    print(f"calc_price per event: {per_event * 1e6:,.1f} us ({1 / per_event:,.0f} events/s)")
    print(f"engine vs calc_price on the sample: max |diff| = {worst:.2e} USD")

    for n in args.sizes:
        events = synthetic_events(n)
        timings = []
        for _ in range(args.repeat):
            engine = PricingEngine(OVERRIDES)  # new engine: catalog resolution is included
            start = time.perf_counter()
            out = engine.price(events)
            timings.append(time.perf_counter() - start)
            unknown = int((out["pricing_status"] == "unknown_model").sum())
            total = out["cost_usd"].sum()
            del out
        for label, seconds in (("first", timings[0]), (f"best of {args.repeat}", min(timings))):
            rate = n / seconds
            print(
                f"engine {n:>11,} events, {label:>9}: {seconds:6.2f} s  {rate:>12,.0f} events/s"
                f"  {rate * per_event:>6,.0f}x calc_price"
            )
        print(f"  (${total:,.2f} priced, {unknown:,} calls flagged unknown_model)")
        del events


if __name__ == "__main__":
    main()
