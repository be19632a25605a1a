"""The demo company's calls beyond tokens: speech and video services priced by rate cards.

Two Enterprise tenants run a `voice-agent` (ElevenLabs text to speech, billed per 1,000
characters) and a `video-studio` agent (Pika clips, billed per second of video). Both providers
are outside the genai-prices catalog and priced by the demo configuration's `rate_cards`, so the
demo shows `pricing_status = rate_card` and `cost_units_usd`. Their calls go to their own landing
files (`media-YYYY-MM-DD.jsonl`) drawn from their own random stream: the token traffic of
`DemoCompany.events_for_day`, and the provider usage twins built from it, are unchanged. They
cost about a dollar a day per tenant, a percent or two of an Enterprise tenant's spend.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from cost_pipeline.lib.config import CostConfig

MEDIA_TENANTS = ("beacon", "delta")
# (agent, provider, model, calls per weekday, the unit logged and its median per call)
SERVICES = (
    ("voice-agent", "elevenlabs", "eleven_multilingual_v2", 4.0, "characters", 600.0),
    ("video-studio", "pika", "pika-2.2", 1.0, "video_seconds", 5.0),
)


def media_calls(config: CostConfig, day: date) -> list[dict]:
    """The day's speech and video calls of the media tenants, as the app logs them."""
    rng = np.random.default_rng([config.demo.seed, day.toordinal(), 11])
    weekday = day.weekday() < 5
    start = datetime.combine(day, datetime.min.time(), UTC)
    calls = []
    for tenant in (t for t in MEDIA_TENANTS if t in config.tenants_by_id):
        for agent, provider, model, per_day, unit, median in SERVICES:
            for i in range(int(rng.poisson(per_day if weekday else per_day / 2))):
                at = start + timedelta(seconds=float(rng.uniform(8, 20)) * 3600)
                size = median * float(rng.lognormal(0, 0.4))
                amount = round(size) if unit == "characters" else round(size * 4) / 4
                calls.append(
                    {
                        "event_id": f"media-{config.demo.seed}-{day:%Y%m%d}-{tenant}-{agent}-{i}",
                        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                        "tenant_id": tenant,
                        "agent_id": agent,
                        "provider": provider,
                        "model": model,
                        unit: max(amount, 1),
                        "latency_ms": int(rng.uniform(800, 9000)),
                        "status": "ok",
                    }
                )
    return sorted(calls, key=lambda c: c["occurred_at"])


def write_demo_media(
    config: CostConfig, out: Path, days: Sequence[date], *, fresh: bool = False
) -> None:
    """The demo days' speech and video calls in the demo's interaction log folder, one
    `media-<first>_<last>.jsonl` for the days no earlier file covers (all of them again when
    `fresh`): one file, one ingestion transaction, however many days; nothing when the
    configuration has no rate card for them."""
    carded = {card.provider for card in config.rate_cards}
    if not {provider for _, provider, *_ in SERVICES} <= carded:
        return
    folder = out / "interactions"
    folder.mkdir(parents=True, exist_ok=True)
    covered: set[date] = set()
    for path in folder.glob("media-*.jsonl"):
        if fresh:
            path.unlink()
            continue
        first, _, last = path.stem.removeprefix("media-").partition("_")
        start, end = date.fromisoformat(first), date.fromisoformat(last or first)
        covered |= {start + timedelta(days=i) for i in range((end - start).days + 1)}
    missing = [d for d in days if d not in covered]
    if missing:
        path = folder / f"media-{missing[0].isoformat()}_{missing[-1].isoformat()}.jsonl"
        calls = [c for day in missing for c in media_calls(config, day)]
        path.write_text("".join(json.dumps(c) + "\n" for c in calls))
