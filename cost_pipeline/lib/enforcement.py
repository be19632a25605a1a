"""The enforcement decision, pure: may this tenant (agent, model, provider) make a call now?

Inputs are the tenant's configured limits (`limits_for`), its live spend in the current local
month (`TenantSpend`, read by `store.enforcement`) and the active overrides and suspensions.
The answer is a `Decision` that always says why.

States, per tenant and limit, as a circuit breaker:

- `closed`: under every blocking limit; calls go through.
- `open`: a blocking limit (a tier's hard cap, a budget marked `blocking`, a scope limit) is
  reached, counting the call's estimated cost; calls are denied.
- `half-open`: a limit that was open is no longer reached (the budget reset at a new period, the
  limit was raised, a credit or an override); calls go through while the breaker watches, and
  the decision re-reads the spend on every call, for `cooldown_seconds`; then `closed`. A call
  that reaches the limit again opens it at once. (Open and closed states are cached for
  `cache_seconds`.)
- `unknown`: no spend state fresh enough (`max_staleness_seconds`): the tier's `fail_mode` says
  whether the call goes through; the reason says the state is unknown.

Unpriced calls (a model without a price, usage the price needs but the record lacks) are not $0:
a decision over a scope that has them says how many calls its spend leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cost_pipeline.lib.config import CostConfig

# Scope -> the call attribute (column of priced_interactions) it is keyed on.
SCOPES: dict[str, str] = {
    "tenant": "",
    "agent": "agent_id",
    "model": "model",
    "provider": "provider",
}
CLOSED, OPEN, HALF_OPEN, UNKNOWN = "closed", "open", "half-open", "unknown"


@dataclass(frozen=True)
class Action:
    """An override (calls of the scope go through every limit) or a suspension (denied)."""

    action_id: str
    kind: str
    scope: str
    scope_value: str
    reason: str
    actor: str
    created_at: datetime | None
    expires_at: datetime | None

    def active(self, now: datetime) -> bool:
        started = self.created_at is None or self.created_at <= now
        return started and (self.expires_at is None or now < self.expires_at)

    def covers(self, call: dict[str, str | None]) -> bool:
        return self.scope == "tenant" or call.get(self.scope) == self.scope_value

    @property
    def subject(self) -> str:
        return "the tenant" if self.scope == "tenant" else f"{self.scope} {self.scope_value}"


@dataclass(frozen=True)
class TenantSpend:
    """One tenant's spend in its current local month, as the pipeline last counted it."""

    tenant_id: str
    period: str
    llm_usd: dict[tuple[str, str], float] = field(default_factory=dict)
    unpriced_calls: dict[tuple[str, str], int] = field(default_factory=dict)
    other_usd: float = 0.0
    # Priced LLM spend of the current UTC day (a daily budget is measured on UTC days).
    day_usd: float = 0.0
    refreshed_at: datetime | None = None
    actions: tuple[Action, ...] = ()
    error: str | None = None  # why the state could not be read


@dataclass(frozen=True)
class Limit:
    """A monthly limit: `counts` llm (priced LLM calls) or all (plus allocated other cost)."""

    kind: str  # hard_cap, budget, daily_budget or scope_limit
    scope: str
    scope_value: str
    limit_usd: float
    counts: str
    blocking: bool

    def applies(self, call: dict[str, str | None]) -> bool:
        return self.scope == "tenant" or call.get(self.scope) == self.scope_value

    @property
    def subject(self) -> str:
        name = {
            "hard_cap": "tier hard cap",
            "budget": "budget",
            "daily_budget": "daily budget",
            "scope_limit": "limit",
        }[self.kind]
        return name if self.scope == "tenant" else f"{self.scope} {self.scope_value} {name}"


@dataclass(frozen=True)
class Decision:
    """The answer to an app: whether to call, why, and the numbers behind it."""

    allowed: bool
    reason: str
    state: str
    limit: float | None = None
    spent: float | None = None
    remaining: float | None = None
    subject: str = "tenant"
    # The limits found under their amount for this call (what may move a breaker to closed).
    checked: tuple[str, ...] = ()


def counted_scopes(config: CostConfig) -> tuple[str, ...]:
    """The scopes `spend_counters` keeps: tenant, agent, model and provider always; end users
    only when a limit needs them (there can be as many users as calls)."""
    users = any(limit.scope == "user" for t in config.tenants for limit in t.limits)
    return tuple(s for s in SCOPES if s != "user" or users)


def limits_for(config: CostConfig, tenant_id: str) -> list[Limit]:
    """The tenant's limits from the configuration; only blocking ones deny calls."""
    tenant = config.tenants_by_id[tenant_id]
    tier = config.tiers[tenant.tier]
    out = []
    if tier.hard_cap_usd is not None:
        out.append(
            Limit("hard_cap", "tenant", "", float(tier.hard_cap_usd), tier.allowance_counts, True)
        )
    if tenant.budget.monthly_usd is not None:
        out.append(
            Limit(
                "budget",
                "tenant",
                "",
                float(tenant.budget.monthly_usd),
                "all",
                tenant.budget.blocking,
            )
        )
    if tenant.budget.daily_usd is not None:
        out.append(
            Limit(
                "daily_budget",
                "tenant",
                "",
                float(tenant.budget.daily_usd),
                "llm",
                tenant.budget.blocking,
            )
        )
    for scoped in tenant.limits:
        out.append(
            Limit(
                "scope_limit",
                scoped.scope,
                scoped.value,
                float(scoped.monthly_usd),
                "llm",
                scoped.blocking,
            )
        )
    return out


def evaluate(
    spend: TenantSpend,
    limits: list[Limit],
    call: dict[str, str | None],
    *,
    estimated_cost: float,
    now: datetime,
    fail_mode: str,
    max_staleness: timedelta,
) -> Decision:
    """The decision from the state alone (no breaker memory; see `Breaker`)."""
    actions = [a for a in spend.actions if a.active(now) and a.covers(call)]
    suspended = [a for a in actions if a.kind == "suspension"]
    if suspended:
        a = suspended[0]
        return Decision(
            False, f"{a.subject} suspended by {a.actor}: {a.reason}", OPEN, subject=a.subject
        )
    override = next((a for a in actions if a.kind == "override"), None)
    if override is not None:
        until = override.expires_at.isoformat(timespec="minutes") if override.expires_at else "-"
        return Decision(
            True,
            f"override for {override.subject} by {override.actor} until {until}: {override.reason}",
            CLOSED,
            subject=override.subject,
        )
    if spend.refreshed_at is None or now - spend.refreshed_at > max_staleness:
        seen = spend.refreshed_at.isoformat(timespec="seconds") if spend.refreshed_at else "never"
        why = f"unreadable: {spend.error}" if spend.error else f"last counted {seen}"
        return Decision(
            fail_mode == "open",
            f"spend state unknown ({why}); the tier fails {fail_mode}",
            UNKNOWN,
        )
    binding: Decision | None = None
    under: list[str] = []
    for limit in limits:
        if not limit.applies(call):
            continue
        key = (limit.scope, limit.scope_value)
        spent = spend.day_usd if limit.kind == "daily_budget" else spend.llm_usd.get(key, 0.0)
        if limit.counts == "all" and limit.scope == "tenant":
            spent += spend.other_usd
        remaining = limit.limit_usd - spent
        unpriced = spend.unpriced_calls.get(key, 0)
        note = f"; {unpriced} unpriced call(s) not in the spend" if unpriced else ""
        reached = spent + max(estimated_cost, 0.0) >= limit.limit_usd
        when = "today (UTC)" if limit.kind == "daily_budget" else f"in {spend.period}"
        if limit.blocking and reached:
            return Decision(
                False,
                f"{limit.subject} reached: {spent:.2f} of {limit.limit_usd:.2f} USD spent "
                f"{when}{note}",
                OPEN,
                limit.limit_usd,
                spent,
                remaining,
                limit.subject,
            )
        under.append(limit.subject)
        candidate = Decision(
            True,
            f"within the {limit.subject}: {remaining:.2f} of {limit.limit_usd:.2f} USD left "
            f"{when}{note}" + ("" if limit.blocking else " (not blocking)"),
            CLOSED,
            limit.limit_usd,
            spent,
            remaining,
            limit.subject,
        )
        if binding is None or remaining < (binding.remaining or 0.0):
            binding = candidate
    if binding is None:
        return Decision(True, f"no limit applies in {spend.period}", CLOSED)
    return replace(binding, checked=tuple(under))


class Breaker:
    """Per-process memory of open limits, turning a recovered limit half-open for a cool-down."""

    def __init__(self) -> None:
        # (tenant, subject) -> (state, since)
        self._memory: dict[tuple[str, str], tuple[str, datetime]] = {}

    def apply(
        self, tenant_id: str, decision: Decision, now: datetime, cooldown: timedelta
    ) -> Decision:
        key = (tenant_id, decision.subject)
        if not decision.allowed and decision.state == OPEN:
            state, since = self._memory.get(key, (OPEN, now))
            self._memory[key] = (OPEN, since if state == OPEN else now)
            return decision
        if decision.state != CLOSED:
            return decision
        recovering = [
            (k, v)
            for k, v in self._memory.items()
            if k[0] == tenant_id and k[1] in decision.checked
        ]
        for k, (state, since) in recovering:
            if state == OPEN:
                self._memory[k] = (HALF_OPEN, now)
                since = now
            elif now - since >= cooldown:
                del self._memory[k]
                continue
            return replace(
                decision,
                state=HALF_OPEN,
                reason=f"{decision.reason}; {k[1]} was reached and is under watch since "
                f"{since.isoformat(timespec='seconds')} (half-open until "
                f"{(since + cooldown).isoformat(timespec='seconds')})",
            )
        return decision

    def watching(self, tenant_id: str) -> bool:
        """Whether a limit of the tenant is half-open: its spend is then re-read on each call,
        so a limit reached again opens at once. (An open limit is cached like a closed one: a
        denial may outlive an override or a credit by `cache_seconds`.)"""
        return any(k[0] == tenant_id and v[0] == HALF_OPEN for k, v in self._memory.items())
