"""Benchmark: per-call latency of `estimate_cost` (target < 1 ms), next to references measured
in the same run: the engine pricing one row through `PricingEngine.price` (the ledger's path, a
one-row DataFrame) and the bare `PricingEngine.price_usage` the estimate is built on.

Calls cycle through a mix of models and shapes (tokens, text sized offline, cached input, a
long-context call, TTS characters, a rate-carded video service), warm: the configuration and the
engine's resolved windows are loaded once per process, as in a gateway.

    python -m cost_pipeline_tests.benchmarks.bench_estimate [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from cost_pipeline.estimate import estimate_cost
from cost_pipeline.lib.config import RateCard, load_config
from cost_pipeline.lib.pricing import PricingEngine

AT = datetime(2026, 9, 2, 10, tzinfo=UTC)
PROMPT = "Summarise the customer's last three tickets and draft a reply in their language. " * 12
CASES: list[dict] = [
    {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1200, "max_output_tokens": 300},
    {"provider": "openai", "model": "gpt-4.1-mini", "text": PROMPT, "max_output_tokens": 800},
    {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "input_tokens": 250_000,
        "max_output_tokens": 4000,
        "cached_input_tokens": 200_000,
    },
    {"provider": "openai", "model": "tts-1", "text": PROMPT},
    {"provider": "pika", "model": "pika-2.2", "video_seconds": 5},
]


def _timed(fn: Callable[[], object], calls: int) -> list[float]:
    for _ in range(50):  # warm: resolved windows, caches
        fn()
    out = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - started) / 1e6)
    return out


def _row(case: dict) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "occurred_at": [pd.Timestamp(AT)],
            "provider": [case["provider"]],
            "model": [case["model"]],
            "service_tier": [None],
            "batch": [False],
            "input_tokens": [case.get("input_tokens", 1000)],
            "cache_read_tokens": [0],
            "cache_write_tokens": [0],
            "cache_write_1h_tokens": [0],
            "output_tokens": [case.get("max_output_tokens", 0)],
            "web_search_requests": [0],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    config = load_config()
    card = RateCard(provider="pika", model="pika-*", video_seconds={"usd": "0.08"})
    config = config.model_copy(update={"rate_cards": [*config.rate_cards, card]})
    engine = PricingEngine.for_config(config)
    state = {"i": 0}

    def estimate() -> object:
        case = CASES[state["i"] % len(CASES)]
        state["i"] += 1
        return estimate_cost(**case, at=AT, engine=engine)

    frames = [_row(c) for c in CASES[:3]]

    def price_one_row() -> object:
        state["i"] += 1
        return engine.price(frames[state["i"] % len(frames)])

    usage = {
        "input_tokens": np.array([1200, 1200]),
        "cache_read_tokens": np.array([0, 0]),
        "output_tokens": np.array([0, 300]),
    }

    def price_usage() -> object:
        return engine.price_usage("openai", "gpt-4o-mini", AT, usage)

    print(f"estimate_cost: {args.calls:,} warm calls per figure, ms per call")
    print(f"{'path':<38}{'median':>9}{'p99':>9}{'mean':>9}")
    for label, fn in (
        ("estimate_cost (mixed cases)", estimate),
        ("reference: engine.price, 1-row frame", price_one_row),
        ("reference: engine.price_usage, 2 rows", price_usage),
    ):
        times = sorted(_timed(fn, args.calls))
        p99 = times[int(len(times) * 0.99) - 1]
        print(
            f"{label:<38}{statistics.median(times):>9.3f}{p99:>9.3f}{statistics.fmean(times):>9.3f}"
        )
    print("target: estimate_cost < 1 ms per call")


if __name__ == "__main__":
    main()
