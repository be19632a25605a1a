"""What an app gateway asks before calling a model: `decide`, and the older daily `is_allowed`.

    from cost_pipeline.enforcement import decide

    d = decide("acme", agent="support-bot", model="gpt-4o", provider="openai",
               estimated_cost=0.02)
    if not d.allowed:
        raise BudgetExceeded(d.reason)       # d.state, d.limit, d.spent, d.remaining

`decide` reads the spend counters that every ingestion updates in the transaction that loads the
calls (so a call over a cap is denied one ingest interval later), the tenant's limits from the
configuration and the active overrides and suspensions, and caches what it read per tenant for
`enforcement.cache_seconds` (a warm decision is a dictionary lookup and a few comparisons). The
states (closed, open, half-open, unknown) are described in `cost_pipeline.lib.enforcement`.
An unknown tenant is denied or allowed by `enforcement.unknown_tenant`, with that reason; spend
state older than `enforcement.max_staleness_seconds` follows the tier's `fail_mode`.

The warehouse is `COST_WAREHOUSE_URL` (or the local default) and the configuration
`COST_PIPELINE_CONFIG` unless given. One `Enforcer` per process is enough; it is thread-safe for
reads (a race at worst reads the state twice).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import pandas as pd

from cost_pipeline import environment
from cost_pipeline.lib.config import CostConfig, config_path, load_config
from cost_pipeline.lib.enforcement import (
    CLOSED,
    OPEN,
    Breaker,
    Decision,
    Limit,
    TenantSpend,
    evaluate,
    limits_for,
)
from cost_pipeline.lib.periods import Period, period_of, tenant_timezone
from cost_pipeline.store import enforcement as store
from cost_pipeline.store import queries
from cost_pipeline.store.warehouse import Warehouse

# The counters `decide` trusts are those the interaction-log ingestion keeps.
COUNTER_SOURCE = "llm_interactions"


class Enforcer:
    """Decisions for one warehouse and configuration, with a per-tenant cache."""

    def __init__(
        self,
        warehouse_url: str | None = None,
        config: CostConfig | str | Path | None = None,
    ) -> None:
        self.warehouse = Warehouse(warehouse_url or environment.default_warehouse_url())
        self._config_source = config
        self._config: CostConfig | None = config if isinstance(config, CostConfig) else None
        self._config_stamp: float | None = None
        self._cache: dict[str, _Entry] = {}
        self._breaker = Breaker()
        self._lock = threading.Lock()

    @property
    def config(self) -> CostConfig:
        """The configuration, re-read when its file changes."""
        if isinstance(self._config_source, CostConfig):
            return self._config_source
        path = Path(self._config_source) if self._config_source else config_path()
        stamp = path.stat().st_mtime
        if self._config is None or stamp != self._config_stamp:
            self._config, self._config_stamp = load_config(path), stamp
            self._cache.clear()
        return self._config

    def decide(
        self,
        tenant: str,
        agent: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        estimated_cost: float = 0.0,
        *,
        user: str | None = None,
        now: datetime | None = None,
    ) -> Decision:
        """Whether `tenant` (its `agent`, `model`, `provider` and end `user`) may make this call
        now, and why (see the module docstring)."""
        config = self.config
        now = now or datetime.now(UTC)
        settings = config.enforcement
        if tenant not in config.tenants_by_id:
            allowed = settings.unknown_tenant == "allow"
            return Decision(
                allowed,
                f"unknown tenant {tenant!r}: {'allowed' if allowed else 'denied'} by "
                "enforcement.unknown_tenant",
                CLOSED if allowed else OPEN,
            )
        entry = self._entry(config, tenant, now)
        decision = evaluate(
            entry.spend,
            entry.limits,
            {"tenant": tenant, "agent": agent, "model": model, "provider": provider, "user": user},
            estimated_cost=estimated_cost,
            now=now,
            fail_mode=entry.fail_mode,
            max_staleness=timedelta(seconds=settings.max_staleness_seconds),
        )
        with self._lock:
            return self._breaker.apply(
                tenant, decision, now, timedelta(seconds=settings.cooldown_seconds)
            )

    def _entry(self, config: CostConfig, tenant: str, now: datetime) -> _Entry:
        cached = self._cache.get(tenant)
        # Reused for `cache_seconds` within the same period and UTC day; a tenant whose limit
        # is half-open is re-read on every call.
        if (
            cached is not None
            and cached.loaded >= time.monotonic() - config.enforcement.cache_seconds
            and cached.period.start <= now < cached.period.end
            and cached.day == now.date()
            and not self._breaker.watching(tenant)
        ):
            return cached
        period = period_of(now, tenant_timezone(config, tenant))
        spend = store.tenant_state(
            self.warehouse, tenant, period.key, COUNTER_SOURCE, now.astimezone(UTC).date()
        )
        entry = _Entry(
            time.monotonic(),
            now.astimezone(UTC).date(),
            period,
            spend,
            limits_for(config, tenant),
            config.tier_of(tenant).fail_mode,
        )
        if spend.refreshed_at is not None:  # an unknown state is asked again next time
            self._cache[tenant] = entry
        return entry


@dataclass(frozen=True)
class _Entry:
    loaded: float
    day: date  # the UTC day its daily spend is of
    period: Period
    spend: TenantSpend
    limits: list[Limit]
    fail_mode: str


@cache
def _enforcer(warehouse_url: str | None, config: str | None) -> Enforcer:
    return Enforcer(warehouse_url, config)


def decide(
    tenant: str,
    agent: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    estimated_cost: float = 0.0,
    *,
    user: str | None = None,
    warehouse_url: str | None = None,
    config_path: str | None = None,
    now: datetime | None = None,
) -> Decision:
    """`Enforcer.decide` on the process's shared enforcer for this warehouse and config."""
    return _enforcer(warehouse_url, config_path).decide(
        tenant, agent, model, provider, estimated_cost, user=user, now=now
    )


@cache
def _warehouse(url: str) -> Warehouse:
    return Warehouse(url)


def is_allowed(tenant_id: str, warehouse_url: str, *, now: datetime | None = None) -> bool:
    """The daily flag (`tenant_enforcement`): True unless the tenant's latest row blocks it for
    the current period. Only as fresh as the last daily or hourly build and blind to scopes,
    overrides and unknown tenants (allowed): prefer `decide`."""
    wh = _warehouse(warehouse_url)
    rows = queries.latest_enforcement(wh, tenant_id)
    if rows.empty:
        return True
    row = rows.iloc[0]
    period_end = pd.Timestamp(row["period_end"])
    period_end = period_end.tz_localize(UTC) if period_end.tzinfo is None else period_end
    if (now or datetime.now(UTC)) >= period_end:
        return True
    return bool(row["allowed"])
