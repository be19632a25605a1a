"""A DuckDB reference of the day's computation, for the pipeline benchmark only.

The same steps as ingest + price + summarize — parse the JSON Lines, validate the fields the
pipeline requires, drop repeated event ids, price every call, group by tenant, provider, model
and agent — written as one DuckDB query over the file, with per-token rates for the day's
(provider, model, tier, batch) keys taken from the project's own pricing engine. It persists
nothing: it is the yardstick the project's time is compared with, not a second implementation.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from cost_pipeline.lib.config import load_config
from cost_pipeline.lib.pricing import PricingEngine
from cost_pipeline.lib.schemas import TOKEN_COLUMNS

PARTS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_1h_tokens")


def _rates(keys: pd.DataFrame, at: datetime) -> pd.DataFrame:
    """USD per token of each component for each key, measured with the project's engine."""
    engine = PricingEngine.for_config(load_config())
    rows = []
    unit = 1_000_000
    probes = {
        "r_in": dict(input_tokens=unit),
        "r_cr": dict(input_tokens=unit, cache_read_tokens=unit),
        "r_cw": dict(input_tokens=unit, cache_write_tokens=unit),
        "r_cw1": dict(input_tokens=unit, cache_write_1h_tokens=unit),
        "r_out": dict(output_tokens=unit),
        "r_ws": dict(web_search_requests=unit),
    }
    for key in keys.itertuples(index=False):
        row = {"provider": key.provider, "model": key.model, "service_tier": key.service_tier,
               "batch": key.batch}  # fmt: skip
        frame = pd.DataFrame(
            [
                {**row, "occurred_at": at, **dict.fromkeys(TOKEN_COLUMNS, 0), **probe}
                for probe in probes.values()
            ]
        )
        costs = engine.price(frame)["cost_usd"].to_numpy() / unit
        rate = dict(zip(probes, costs, strict=True))
        rate["r_cr"] -= rate["r_in"]  # a cache-read token is also an input token
        rate["r_cw"] -= rate["r_in"]
        rate["r_cw1"] -= rate["r_in"]
        rows.append({**row, **rate})
    return pd.DataFrame(rows)


def run(log_dir: Path) -> dict[str, float]:
    """Seconds for the whole computation and its total cost (USD)."""
    import duckdb

    files = sorted(str(p) for p in log_dir.glob("interactions-*"))
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(
        "CREATE TEMP TABLE calls AS SELECT * FROM read_json(?, format='newline_delimited', "
        "columns={event_id: 'VARCHAR', occurred_at: 'TIMESTAMPTZ', tenant_id: 'VARCHAR', "
        "agent_id: 'VARCHAR', provider: 'VARCHAR', model: 'VARCHAR', service_tier: 'VARCHAR', "
        "batch: 'BOOLEAN', input_tokens: 'BIGINT', cache_read_tokens: 'BIGINT', "
        "cache_write_tokens: 'BIGINT', cache_write_1h_tokens: 'BIGINT', output_tokens: 'BIGINT', "
        "web_search_requests: 'BIGINT'}, ignore_errors=true)",
        [files],
    )
    con.execute(
        "CREATE TEMP TABLE valid AS SELECT * FROM calls WHERE event_id IS NOT NULL AND "
        "tenant_id IS NOT NULL AND provider IS NOT NULL AND model IS NOT NULL AND "
        "occurred_at IS NOT NULL AND input_tokens >= 0 AND output_tokens >= 0 "
        "QUALIFY row_number() OVER (PARTITION BY event_id) = 1"
    )
    keys = con.execute(
        "SELECT DISTINCT provider, model, service_tier, batch, min(occurred_at) OVER () AS at "
        "FROM valid"
    ).df()
    at = pd.Timestamp(keys["at"].iloc[0]).to_pydatetime().astimezone(UTC)
    rates = _rates(keys.drop(columns="at"), at)  # noqa: F841 - read by the query below
    total = con.execute(
        "SELECT SUM(cost) FROM (SELECT v.tenant_id, v.provider, v.model, v.agent_id, "
        "SUM((v.input_tokens - v.cache_read_tokens - v.cache_write_tokens - "
        "v.cache_write_1h_tokens) * r.r_in + v.cache_read_tokens * (r.r_in + r.r_cr) + "
        "v.cache_write_tokens * (r.r_in + r.r_cw) + v.cache_write_1h_tokens * (r.r_in + r.r_cw1) "
        "+ v.output_tokens * r.r_out + v.web_search_requests * r.r_ws) AS cost, COUNT(*) AS n "
        "FROM valid v JOIN rates r ON v.provider = r.provider AND v.model = r.model AND "
        "v.service_tier IS NOT DISTINCT FROM r.service_tier AND v.batch IS NOT DISTINCT FROM "
        "r.batch GROUP BY ALL)"
    ).fetchone()[0]
    return {"seconds": round(time.perf_counter() - started, 2), "total_usd": float(total or 0)}
