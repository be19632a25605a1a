"""Benchmark: latency of `enforcement.decide`, warm (cached state) and cold (state read from the
warehouse), on SQLite and PostgreSQL, next to the daily flag `is_allowed` measured in the same
run as the reference.

A company of 1,000 tenants, each with 3 agents, 2 models and 2 providers, 31 days of counters
(about 250,000 counter rows), overrides on 5 % of tenants. Targets (issue 15): p99 ≤ 0.2 ms warm,
≤ 5 ms cold.

    python -m cost_pipeline_tests.benchmarks.bench_enforcement [--engines sqlite,postgres]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import (
    COUNTER_REFRESHES,
    SPEND_COUNTERS,
    TENANT_ENFORCEMENT,
)
from cost_pipeline.enforcement import Enforcer, is_allowed
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.store import enforcement as store
from cost_pipeline.store.warehouse import Warehouse

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
TENANTS = 1000
NOW = datetime(2026, 10, 31, 12, tzinfo=UTC)


def company() -> CostConfig:
    tenants = [
        {
            "id": f"t{i:04d}",
            "name": f"Tenant {i}",
            "tier": "free" if i % 4 == 0 else "pro",
            "budget": {"monthly_usd": 1000, "blocking": i % 2 == 0},
            "limits": [{"scope": "agent", "value": "agent-0", "monthly_usd": 200}],
        }
        for i in range(TENANTS)
    ]
    return CostConfig.model_validate(
        {
            "tiers": {
                "free": {"name": "Free", "hard_cap_usd": 10},
                "pro": {"name": "Pro", "monthly_price_usd": 99},
            },
            "tenants": tenants,
            "enforcement": {"cache_seconds": 3600},
        }
    )


def seed(wh: Warehouse) -> None:
    rng = random.Random(7)
    rows = []
    for i in range(TENANTS):
        tenant = f"t{i:04d}"
        for d in range(1, 32):
            day = date(2026, 10, d)
            scopes = [("tenant", "")]
            scopes += [("agent", f"agent-{a}") for a in range(3)]
            scopes += [("model", m) for m in ("gpt-4o", "claude-sonnet-4-5")]
            scopes += [("provider", p) for p in ("openai", "anthropic")]
            for scope, value in scopes:
                rows.append((day, tenant, "2026-10", scope, value, rng.random() * 5, 10, 0))
    frame = pd.DataFrame(rows, columns=SPEND_COUNTERS.column_names)
    wh.append(SPEND_COUNTERS, frame)
    wh.append(
        COUNTER_REFRESHES, pd.DataFrame([{"source": "llm_interactions", "refreshed_at": NOW}])
    )
    enforcement = pd.DataFrame(
        {
            "day": date(2026, 10, 30),
            "tenant_id": [f"t{i:04d}" for i in range(TENANTS)],
            "period": "2026-10",
            "period_end": pd.Timestamp("2026-11-01", tz="UTC"),
            "allowed": True,
            "reason": "ok",
            "since": pd.Timestamp("2026-10-01", tz="UTC"),
            "spend_usd": 1.0,
            "hard_cap_usd": None,
        }
    )
    wh.append(TENANT_ENFORCEMENT, enforcement)
    for i in range(0, TENANTS, 20):
        store.record_action(
            wh,
            kind="override",
            tenant_id=f"t{i:04d}",
            scope="tenant",
            scope_value="",
            reason="bench",
            actor="bench",
            expires_at=NOW + timedelta(days=1),
            now=NOW - timedelta(hours=1),
        )


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples)
    return statistics.median(ms), ms[int(len(ms) * 0.99) - 1]


def measure(url: str, config: CostConfig, calls: int) -> dict[str, float]:
    rng = random.Random(11)
    asks = [(f"t{rng.randrange(TENANTS):04d}", f"agent-{rng.randrange(3)}") for _ in range(calls)]
    enforcer = Enforcer(url, config)
    cold = []
    for tenant, agent in asks:
        enforcer._cache.clear()
        start = time.perf_counter()
        enforcer.decide(tenant, agent=agent, estimated_cost=0.01, now=NOW)
        cold.append(time.perf_counter() - start)
    for tenant, agent in asks:  # every tenant asked is now cached
        enforcer.decide(tenant, agent=agent, now=NOW)
    warm = []
    for tenant, agent in asks:
        start = time.perf_counter()
        enforcer.decide(tenant, agent=agent, estimated_cost=0.01, now=NOW)
        warm.append(time.perf_counter() - start)
    flag = []
    for tenant, _ in asks:
        start = time.perf_counter()
        is_allowed(tenant, url, now=NOW)
        flag.append(time.perf_counter() - start)
    (w50, w99), (c50, c99), (f50, f99) = percentiles(warm), percentiles(cold), percentiles(flag)
    return {
        "warm_p50": w50,
        "warm_p99": w99,
        "cold_p50": c50,
        "cold_p99": c99,
        "flag_p50": f50,
        "flag_p99": f99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    config = company()
    print(f"enforcement.decide: {TENANTS} tenants, {args.calls} decisions per figure, ms")
    print(
        f"{'engine':<10}{'warm p50':>10}{'warm p99':>10}{'cold p50':>10}{'cold p99':>10}"
        f"{'flag p50':>10}{'flag p99':>10}{'cold/flag':>11}"
    )
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            if engine == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                drop = None
            else:
                name = f"bench_enforcement_{uuid.uuid4().hex[:8]}"
                admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                url = sa.engine.make_url(ADMIN).set(database=name).render_as_string(False)
                drop = (admin, name)
            try:
                wh = Warehouse(url)
                wh.migrate(first_day=date(2026, 10, 1), last_day=date(2026, 11, 2))
                seed(wh)
                r = measure(url, config, args.calls)
                wh.dispose()
            finally:
                if drop is not None:
                    with drop[0].connect() as conn:
                        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{drop[1]}" WITH (FORCE)')
        print(
            f"{engine:<10}{r['warm_p50']:>10.4f}{r['warm_p99']:>10.4f}{r['cold_p50']:>10.3f}"
            f"{r['cold_p99']:>10.3f}{r['flag_p50']:>10.3f}{r['flag_p99']:>10.3f}"
            f"{r['cold_p99'] / r['flag_p99']:>10.2f}x"
        )


if __name__ == "__main__":
    main()
