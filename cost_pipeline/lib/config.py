"""The one configuration file: tenants, tiers, budgets, source mappings, price overrides, alerts.

`load_config()` reads `COST_PIPELINE_CONFIG` (or the packaged demo configuration) and validates
it completely at load time. An invalid file raises `ConfigError` naming the file, the key path
and the reason, so a typo fails when the code location loads, not inside a 3 a.m. run.
"""

from __future__ import annotations

import functools
import os
from datetime import date, timedelta
from decimal import Decimal
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CONFIG_ENV = "COST_PIPELINE_CONFIG"
DEMO_CONFIG = "demo_config.yaml"

Percent = Annotated[float, Field(gt=0, le=1000)]
Money = Annotated[Decimal, Field(ge=0)]


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Overage(_Model):
    """How usage beyond a tier's allowance is billed."""

    unit: Literal["usd", "tokens"] = "usd"
    # usd: amount = overage cost x (1 + markup); tokens: amount = overage Mtok x unit price.
    markup: Annotated[float, Field(ge=0)] = 0.0
    unit_price_usd: Money | None = None

    @model_validator(mode="after")
    def _unit_price_for_tokens(self) -> Overage:
        if self.unit == "tokens" and self.unit_price_usd is None:
            raise ValueError("unit 'tokens' needs unit_price_usd (USD per million tokens)")
        return self


class Tier(_Model):
    """A price plan: its monthly price, what the price includes, and what happens beyond it.

    A tier either caps spend (`hard_cap_usd`: the tenant is blocked once it is reached) or bills
    usage beyond `included_usage_usd` / `included_tokens` as overage (`overage`), not both.

    `allowance_counts` says which cost counts toward the tier's allowance, its hard cap and its
    overage:

    - `llm` (default): the tenant's LLM usage only, i.e. its priced LLM calls (`llm_cost_usd`
      of `budget_status`). Cloud and Kubernetes cost allocated to the tenant, shared and idle
      infrastructure spread onto it, and provider usage the app log missed (`unattributed`)
      neither consume the allowance nor block a capped tenant nor get billed as overage;
    - `all`: the tenant's whole cost (`spend_usd`: LLM plus allocated cloud, Kubernetes and
      unattributed cost) counts, e.g. for a plan that resells dedicated infrastructure.

    Budgets (`Tenant.budget`, `company_budget`) and unit economics always use the whole cost.
    """

    name: str
    monthly_price_usd: Money = Decimal(0)
    included_usage_usd: Money | None = None
    included_tokens: Annotated[int, Field(ge=0)] | None = None
    hard_cap_usd: Money | None = None
    overage: Overage | None = None
    allowance_counts: Literal["llm", "all"] = "llm"
    # What `enforcement.decide` answers for this tier's tenants when it has no fresh spend state
    # (no snapshot, or older than `enforcement.max_staleness_seconds`): `open` lets calls through
    # (availability first), `closed` denies them (a cap that must hold). Either way the decision
    # says why (`state: unknown`).
    fail_mode: Literal["open", "closed"] = "open"

    @model_validator(mode="after")
    def _cap_or_overage(self) -> Tier:
        if self.hard_cap_usd is not None and self.overage is not None:
            raise ValueError("a tier has either a hard cap or overage billing, not both")
        return self


class Budget(_Model):
    monthly_usd: Money | None = None
    daily_usd: Money | None = None
    thresholds: list[Percent] | None = None
    # A blocking budget denies calls (`enforcement.decide`) once reached, like a hard cap: the
    # monthly amount on the whole cost, the daily amount on the LLM spend of the UTC day.
    blocking: bool = False


class ScopeLimit(_Model):
    """A monthly limit on one scope inside a tenant: an agent, a model, a provider or an end user.

    Reaching a blocking limit denies calls of that scope only; the tenant's other calls go on.
    """

    scope: Literal["agent", "model", "provider", "user"]
    value: Annotated[str, Field(min_length=1)]
    monthly_usd: Money
    blocking: bool = True


class Mappings(_Model):
    """How source records are attributed to a tenant."""

    openai_project_ids: list[str] = []
    openai_api_key_ids: list[str] = []
    anthropic_workspace_ids: list[str] = []
    anthropic_api_key_ids: list[str] = []
    k8s_namespaces: list[str] = []
    k8s_labels: dict[str, str] = {}
    cloud_tags: dict[str, str] = {}
    cloud_sub_account_ids: list[str] = []
    cloud_resource_ids: list[str] = []


class Tenant(_Model):
    id: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")]
    name: str
    tier: str
    timezone: str = "UTC"
    stripe_customer_id: str | None = None
    slack_channel: str | None = None
    contract_overage: Overage | None = None
    budget: Budget = Budget()
    limits: list[ScopeLimit] = []
    # The currency the tenant is shown and billed in (default: the ledger's, USD).
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    mappings: Mappings = Mappings()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


class PriceOverride(_Model):
    """A negotiated discount on list prices, or the whole price of a custom model."""

    provider: str
    model: str = "*"
    effective_from: date | None = None
    effective_to: date | None = None
    discount_pct: Annotated[float, Field(ge=0, lt=100)] | None = None
    input_mtok: Money | None = None
    cache_read_mtok: Money | None = None
    cache_write_mtok: Money | None = None
    output_mtok: Money | None = None

    @model_validator(mode="after")
    def _discount_or_prices(self) -> PriceOverride:
        has_prices = self.input_mtok is not None or self.output_mtok is not None
        if (self.discount_pct is None) == (not has_prices):
            raise ValueError("give either discount_pct or explicit prices (input_mtok, ...)")
        if has_prices and (self.input_mtok is None or self.output_mtok is None):
            raise ValueError("explicit prices need at least input_mtok and output_mtok")
        return self


class UnitPrice(_Model):
    """`usd` for every `per` units: `{usd: 0.30, per: 1000}` is $0.30 per 1,000 characters."""

    usd: Money
    per: Annotated[int, Field(ge=1)] = 1


class ImagePrice(_Model):
    """USD per image of a `size` (`1024x1024`) and `quality` (`hd`); unset matches any."""

    size: str | None = None
    quality: str | None = None
    usd: Money


class RateCard(_Model):
    """Effective-dated prices of usage units beyond tokens, for any provider and service.

    Prices a provider's models (a glob on the raw model string or its catalog id, as overrides)
    per character, per second of audio or video, per image (by size and quality: the first entry
    of `images` whose size and quality match a call wins) or per request, on UTC dates from
    `effective_from` through `effective_to`. A card's unit price replaces the genai-prices one;
    the last active card pricing a unit wins. Providers outside the catalog are accepted in the
    interaction log once a card names them. Token prices stay with `price_overrides`.
    """

    provider: Annotated[str, Field(min_length=1)]
    model: str = "*"
    effective_from: date | None = None
    effective_to: date | None = None
    characters: UnitPrice | None = None
    audio_seconds: UnitPrice | None = None
    video_seconds: UnitPrice | None = None
    requests: UnitPrice | None = None
    images: list[ImagePrice] = []

    @model_validator(mode="after")
    def _prices_something(self) -> RateCard:
        priced = (self.characters, self.audio_seconds, self.video_seconds, self.requests)
        if all(p is None for p in priced) and not self.images:
            raise ValueError(
                "a rate card prices at least one unit (characters, audio_seconds, "
                "video_seconds, requests, images)"
            )
        if self.effective_from and self.effective_to and self.effective_to < self.effective_from:
            raise ValueError("effective_to is before effective_from")
        return self


class Alerts(_Model):
    default_channel: str = "#cost-alerts"
    digest_after: Annotated[int, Field(ge=1)] = 10
    dagster_ui_url: str = "http://127.0.0.1:3000"


class Reconciliation(_Model):
    """How far the app log may stray from the providers' usage before the daily checks complain.

    Per provider and day (`lib.reconciliation.drift_verdicts`):

    - the total drift (app log vs provider usage, both priced alike) WARNs beyond
      `drift_warn_pct` and is an ERROR beyond `drift_fail_pct`;
    - coverage (the share of provider usage cost the app log explains, model by model) is an
      ERROR below `min_coverage_pct`;
    - a model whose own gap is material WARNs beyond `drift_warn_pct` and is named (a
      mislabelled model, a model the log never records). It is never an ERROR on its own: a
      mislabel moves cost between models, and what it costs shows in the coverage and drift.

    Coverage loses both what the log misses and what a mislabel moves between models, so its
    floor (85 %) sits below `100 - drift_fail_pct`.
    """

    drift_warn_pct: Annotated[float, Field(gt=0)] = 2.0
    drift_fail_pct: Annotated[float, Field(gt=0)] = 10.0
    min_coverage_pct: Annotated[float, Field(ge=0, le=100)] = 85.0

    @model_validator(mode="after")
    def _ordered(self) -> Reconciliation:
        if self.drift_fail_pct < self.drift_warn_pct:
            raise ValueError("drift_fail_pct must be at least drift_warn_pct")
        return self


class Allocation(_Model):
    rule: Literal["proportional", "even", "tenant"] = "proportional"
    tenant: str | None = None
    k8s_tenant_label: str = "tenant"
    cloud_tenant_tag: str = "tenant"
    # Kubecost/OpenCost restate recent days: an empty answer for a day younger than this is a
    # gap in the source, never a reason to replace a loaded day with nothing.
    k8s_settle_days: Annotated[int, Field(ge=0)] = 3
    # FOCUS exports lag a day or two: a provider whose newest row is older than this many days
    # is named stale (its export may have stopped) by the `focus_data_fresh` check.
    focus_stale_after_days: Annotated[int, Field(ge=1)] = 3

    @model_validator(mode="after")
    def _tenant_rule(self) -> Allocation:
        if self.rule == "tenant" and not self.tenant:
            raise ValueError("rule 'tenant' needs the receiving tenant id in 'tenant'")
        return self


class Plausibility(_Model):
    """Bounds beyond which a logged LLM call is not believed and is quarantined, not priced.

    A mistyped count (an overflowed counter, a byte count logged as tokens) would otherwise
    bill a tenant for millions of dollars. The context-window check uses the offline
    genai-prices snapshot and is skipped for models it does not list, or whose prices have
    long-context tiers (their window is larger than the listed one).
    """

    max_tokens_per_call: Annotated[int, Field(ge=1, le=2**53)] = 10_000_000
    check_context_window: bool = True
    # Listed windows are rounded ("1M" for 1,047,576): allow this factor above them.
    context_window_tolerance: Annotated[float, Field(ge=1)] = 1.1
    # For the pricing step: a single call priced above this is implausible.
    max_cost_per_call_usd: Money = Decimal(1000)
    # The per-source quarantine checks of a day warn on any quarantined record and fail (ERROR)
    # when more than this share of the source's records of the day were quarantined.
    quarantine_error_share_pct: Percent = 1.0


class Demo(_Model):
    """The generated demo company.

    Without `start_date` the demo covers the first day of the previous month through
    yesterday (UTC), so its months are current: the month being forecast is this one, and the
    last complete month can still be billed within Stripe's 35-day window. With `start_date`,
    it covers `days` days from there.
    """

    enabled: bool = False
    seed: int = 7
    start_date: date | None = None
    days: Annotated[int, Field(ge=1)] = 60
    events_per_day: Annotated[int, Field(ge=1)] = 6000

    def window(self, today: date) -> list[date]:
        """The demo days, given today's UTC date."""
        if self.start_date is not None:
            first, count = self.start_date, self.days
        else:
            first = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
            count = (today - first).days
        return [first + timedelta(days=i) for i in range(count)]


class Partitions(_Model):
    """The daily partitions: which UTC days the pipeline keeps and can backfill.

    `first_day` unset: the demo window's first day when the demo is on, else the first of the
    month twelve months back (a whole year of history can be backfilled). Events before the
    first day are quarantined with a reason, never silently left unpriced.
    """

    first_day: date | None = None

    def first_day_on(self, today: date, demo: Demo | None = None) -> date:
        if self.first_day is not None:
            return self.first_day
        if demo is not None and demo.enabled:
            return demo.window(today)[0]
        month = today.replace(day=1)
        return month.replace(year=month.year - 1)


class Pricing(_Model):
    """How calls are priced where the catalog is silent.

    `tier_fallback_multipliers`: when a call ran on a service tier (batch, flex, priority ...)
    that the catalog does not list for its model and date, the call is priced at the model's
    standard price times the multiplier of that tier (default 1: the standard price, which
    overstates a discounted tier rather than understating a premium one) and marked
    `pricing_status = tier_fallback`, so the summary counts it.
    """

    tier_fallback_multipliers: dict[str, Annotated[Decimal, Field(gt=0, le=100)]] = {}

    def multiplier(self, tier: str | None) -> Decimal:
        return self.tier_fallback_multipliers.get((tier or "").lower(), Decimal(1))


class Billing(_Model):
    """Guards on what the billing run may send to Stripe.

    A tenant-period whose computed overage exceeds `max_overage_usd_per_period` is held (a
    `held` row in `billing_ledger`, alerted) and sent only after `billing_release_job`.
    """

    max_overage_usd_per_period: Money = Decimal(50000)


ALERT_KINDS = (
    "budget_threshold",
    "forecast_breach",
    "daily_limit",
    "anomaly",
    "run_failure",
    "billing_overage_held",
    "billing_pending_credit",
    "billing_close_mismatch",
    "weekly_digest",
    "monthly_digest",
    "recommendations_digest",
)
AlertChannel = Literal["slack", "email", "webhook"]
EmailAddress = Annotated[str, Field(pattern=r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")]


class AlertRoute(_Model):
    """Alert kinds (`*`: every kind) and the channels that receive them."""

    kinds: list[str] = ["*"]
    channels: list[AlertChannel]

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: list[str]) -> list[str]:
        unknown = [k for k in v if k != "*" and k not in ALERT_KINDS]
        if unknown:
            known = ", ".join(ALERT_KINDS)
            raise ValueError(f"unknown alert kind(s) {unknown} (known: *, {known})")
        return v


class TenantChannels(_Model):
    """A tenant's own email recipients and, when set, its own routes (instead of `routes`)."""

    email_to: list[EmailAddress] = []
    routes: list[AlertRoute] | None = None


class Channels(_Model):
    """Which channels receive which alerts: Slack, email, a signed webhook.

    An alert goes to every channel of every route matching its kind: the tenant's own `routes`
    when it has them, else the top-level ones (default: everything to Slack only). Email goes to
    the tenant's `email_to`, else to `email_to`. Servers, URLs and secrets are environment
    variables (`SMTP_*`, `ALERT_WEBHOOK_*`); a routed channel without them runs dry.
    """

    routes: list[AlertRoute] = [AlertRoute(channels=["slack"])]
    email_to: list[EmailAddress] = []
    tenants: dict[str, TenantChannels] = {}

    @model_validator(mode="after")
    def _someone_reads_email(self) -> Channels:
        def emails(routes: list[AlertRoute]) -> bool:
            return any("email" in r.channels for r in routes)

        if emails(self.routes) and not self.email_to:
            raise ValueError("routes send email but email_to is empty: who should read it?")
        for tenant, own in self.tenants.items():
            nobody = not (own.email_to or self.email_to)
            if own.routes is not None and emails(own.routes) and nobody:
                raise ValueError(f"tenants.{tenant}: routes send email but no email_to is set")
        return self

    def channels_for(self, tenant_id: str, kind: str) -> list[str]:
        """The channels that receive an alert of `kind` about `tenant_id`, in a stable order."""
        own = self.tenants.get(tenant_id)
        routes = own.routes if own is not None and own.routes is not None else self.routes
        wanted = {c for r in routes if "*" in r.kinds or kind in r.kinds for c in r.channels}
        return [c for c in ("slack", "email", "webhook") if c in wanted]

    def email_recipients(self, tenant_id: str) -> list[str]:
        own = self.tenants.get(tenant_id)
        return list(own.email_to if own is not None and own.email_to else self.email_to)


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class FxRate(_Model):
    """A configured exchange rate: `per_usd` units of `currency` per US dollar from a date on."""

    currency: Currency
    effective_from: date
    per_usd: Annotated[Decimal, Field(gt=0)]


class Fx(_Model):
    """Exchange rates for amounts billed in other currencies (`lib.fx`).

    The ECB's euro reference rates are read by the `fx_rates` asset (`ECB_RATES_URL`, the ECB's
    90-day file by default; in the demo a generated twin); `rates` is the dated fallback used
    where the ECB has no rate for a day. A row with no rate at all is not converted.
    """

    rates: list[FxRate] = []


# The per-event tables the daily assets rebuild a day from: once their rows of a day are gone,
# the day can no longer be rebuilt, so the daily partitions start after their retention.
RAW_TABLES = (
    "priced_interactions",
    "interaction_revisions",
    "cloud_costs",
    "k8s_allocations",
    "openai_usage",
    "anthropic_usage",
    "provider_usage_priced",
)


class Retention(_Model):
    """How long each table keeps its days (`days`: table -> days; tables not named are kept
    forever, e.g. the summaries). The `retention_job` drops whole days past their limit, and
    only days that are summarized (`store.retention`); the daily partitions then start after
    the shortest retention of a raw table (`RAW_TABLES`), so a day whose calls were dropped can
    never be rebuilt from nothing."""

    days: dict[str, Annotated[int, Field(ge=7)]] = {}

    def raw_days(self) -> int | None:
        kept = [n for table, n in self.days.items() if table in RAW_TABLES]
        return min(kept) if kept else None


class Enforcement(_Model):
    """How `cost_pipeline.enforcement.decide` answers apps.

    - `unknown_tenant`: a tenant id not in the configuration is denied (default) or allowed;
      the decision's reason says "unknown tenant" either way, never silently.
    - `cache_seconds`: how long a process reuses the spend state it read for a tenant.
    - `cooldown_seconds`: an open circuit (a blocking limit reached) turns half-open after this
      long, letting one probe call through per cool-down until fresh spend says closed or open.
    - `max_staleness_seconds`: spend state older than this is unknown; the tier's `fail_mode`
      decides.
    """

    unknown_tenant: Literal["deny", "allow"] = "deny"
    cache_seconds: Annotated[float, Field(ge=0)] = 5.0
    cooldown_seconds: Annotated[float, Field(gt=0)] = 900.0
    max_staleness_seconds: Annotated[float, Field(gt=0)] = 3 * 3600.0


ResetDay = Annotated[int, Field(ge=1, le=28)]
NodeId = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")]


def _zone_name(value: str | None) -> str | None:
    if value is not None:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
    return value


class NodeBudget(_Model):
    """The budget of one node of the budget hierarchy, per period (see `BudgetHierarchy`).

    `thresholds` (percent of the limit; default `default_thresholds`) may exceed 100, e.g. 150
    to hear again when an overspend reaches half the budget. `rollover` carries the unused part
    of the previous period's `monthly_usd` into the next one: `none`, `capped` (at most
    `rollover_cap_usd`) or `full`; `lib.budget_tree` states the rule.
    """

    monthly_usd: Money | None = None
    daily_usd: Money | None = None
    thresholds: list[Percent] | None = None
    rollover: Literal["none", "capped", "full"] = "none"
    rollover_cap_usd: Money | None = None

    @model_validator(mode="after")
    def _rollover(self) -> NodeBudget:
        if self.rollover != "none" and self.monthly_usd is None:
            raise ValueError(f"rollover {self.rollover!r} needs monthly_usd")
        if (self.rollover == "capped") != (self.rollover_cap_usd is not None):
            raise ValueError("rollover_cap_usd goes with rollover 'capped', and only with it")
        return self


class BudgetNode(_Model):
    """A department or a team of the budget hierarchy.

    `parent` is the id of a department or team (a department's parent is a department); none
    means the organization. `tenants` are attached to this node; a tenant is attached to at most
    one node, and the tenants attached to none belong to the organization directly. `timezone`
    and `reset_day` (the local day of the month a period starts, 1-28) default to the parent's.
    A `pooled` team's budget covers its tenants' combined spend; a team that is not pooled
    gives each of its tenants the whole budget as its own allowance.
    """

    id: NodeId
    name: str | None = None
    kind: Literal["department", "team"]
    parent: str | None = None
    tenants: list[str] = []
    budget: NodeBudget = NodeBudget()
    timezone: str | None = None
    reset_day: ResetDay | None = None
    pooled: bool = True
    # Where the node's budget alerts go in Slack (default: `alerts.default_channel`); email and
    # webhook routes per node are `channels.tenants["team:<id>"]`.
    slack_channel: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        return _zone_name(v)


class BudgetHierarchy(_Model):
    """The budget hierarchy: the organization, its departments and teams, and their tenants.

    The organization is the root: its `budget`, and the `timezone` and `reset_day` its nodes
    inherit unless they set their own. Spend rolls up from tenants to their node and on to the
    organization, which sums every tenant (`lib.budget_tree`).
    """

    budget: NodeBudget = NodeBudget()
    timezone: str = "UTC"
    reset_day: ResetDay = 1
    nodes: list[BudgetNode] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        return _zone_name(v) or v

    @model_validator(mode="after")
    def _tree(self) -> BudgetHierarchy:
        by_id: dict[str, BudgetNode] = {}
        for i, node in enumerate(self.nodes):
            if node.id in by_id:
                raise ValueError(f"nodes[{i}].id: duplicate node id {node.id!r}")
            by_id[node.id] = node
        owner: dict[str, str] = {}
        for i, node in enumerate(self.nodes):
            parent = by_id.get(node.parent) if node.parent is not None else None
            if node.parent is not None and parent is None:
                raise ValueError(
                    f"nodes[{i}].parent: unknown node {node.parent!r} "
                    f"(known: {', '.join(sorted(by_id))})"
                )
            if node.kind == "department" and parent is not None and parent.kind != "department":
                raise ValueError(
                    f"nodes[{i}].parent: department {node.id!r} cannot sit under team "
                    f"{parent.id!r} (a department's parent is a department or the organization)"
                )
            if node.kind == "department" and not node.pooled:
                raise ValueError(
                    f"nodes[{i}].pooled: only a team can be unpooled (a department's budget "
                    "covers its whole subtree)"
                )
            for tenant in node.tenants:
                if tenant in owner:
                    raise ValueError(
                        f"nodes[{i}].tenants: tenant {tenant!r} is in both {owner[tenant]} and "
                        f"{node.kind} {node.id!r} (a tenant belongs to at most one team)"
                    )
                owner[tenant] = f"{node.kind} {node.id!r}"
        for i, node in enumerate(self.nodes):
            path = [node.id]
            up = node.parent
            while up is not None:
                if up in path:
                    cycle = " -> ".join([*path[path.index(up) :], up])
                    raise ValueError(f"nodes[{i}].parent: the parents form a cycle: {cycle}")
                path.append(up)
                up = by_id[up].parent
        return self


class ModelSubstitution(_Model):
    """A cheaper model `cost_recommendations` may suggest instead of `model` (a glob matched,
    case-insensitively, against the raw model string or its catalog id) of `provider`.

    `alternative` must be a model of the genai-prices catalog: its prices and context window are
    what the saving and the fit of each call are computed with.
    """

    provider: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    alternative: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _known_alternative(self) -> ModelSubstitution:
        from genai_prices import data_snapshot  # the catalog, loaded only when one is named

        try:
            data_snapshot.get_snapshot().find_provider_model(
                self.alternative, None, self.provider.lower(), None
            )
        except LookupError:
            raise ValueError(
                f"alternative {self.alternative!r} is not a {self.provider} model of the "
                "genai-prices catalog"
            ) from None
        return self


class DeferrableCalls(_Model):
    """Agents or workflows (globs on `agent_id` / `workflow_id`; both given: both must match)
    whose calls can wait, so batch or flex processing may be recommended for those that run at
    the standard tier.

    `latency_tolerance_seconds` unset: not interactive at all (batch, which may take up to 24 h).
    Set: batch when it is at least 86,400 s, else flex when it is at least
    `Recommendations.flex_min_tolerance_seconds`, else nothing.
    """

    agent: str | None = None
    workflow: str | None = None
    latency_tolerance_seconds: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _names_something(self) -> DeferrableCalls:
        if not self.agent and not self.workflow:
            raise ValueError("give an agent or a workflow (glob) whose calls can wait")
        return self


class PromptCaching(_Model):
    """When prompt caching is recommended, and what it is assumed to achieve.

    Candidates: an agent's calls of a model with at least `min_input_tokens` input each, whose
    cache reads are at most `max_cache_read_share` of their input. Projection: each such call
    reads `assumed_hit_rate` of its input from the cache and writes `assumed_write_share` of it
    (the prefix re-written when the cache expires), priced by the catalog's cache prices.
    """

    assumed_hit_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    assumed_write_share: Annotated[float, Field(ge=0, le=1)] = 0.05
    min_input_tokens: Annotated[int, Field(ge=1)] = 4096
    max_cache_read_share: Annotated[float, Field(ge=0, lt=1)] = 0.2

    @model_validator(mode="after")
    def _fits_the_input(self) -> PromptCaching:
        if self.assumed_hit_rate + self.assumed_write_share > 1:
            raise ValueError("assumed_hit_rate + assumed_write_share cannot exceed 1 (the input)")
        return self


class Recommendations(_Model):
    """`cost_recommendations`: the last `window_days` of calls re-priced under cheaper options.

    Options: a cheaper model from `substitutions`, prompt caching (`caching`), batch or flex for
    `deferrable` calls, and trimming calls just above a long-context price tier (within
    `long_context_margin_pct` of its threshold) to the threshold. A recommendation is shown when
    it saves at least `min_monthly_saving_usd` a month on at least `min_calls` calls. The weekly
    Slack digest lists the `digest_top` largest savings.
    """

    window_days: Annotated[int, Field(ge=1, le=90)] = 14
    substitutions: list[ModelSubstitution] = []
    deferrable: list[DeferrableCalls] = []
    flex_min_tolerance_seconds: Annotated[float, Field(gt=0)] = 600.0
    caching: PromptCaching = PromptCaching()
    long_context_margin_pct: Annotated[float, Field(gt=0, le=100)] = 10.0
    min_monthly_saving_usd: Money = Decimal(1)
    min_calls: Annotated[int, Field(ge=1)] = 20
    digest_top: Annotated[int, Field(ge=1, le=25)] = 10


class Reports(_Model):
    """Where statements, exports and digest charts are written (`lib.report_files`).

    `output_url` empty: the folder `reports` in the state directory (`$DAGSTER_HOME`). Else a
    local path or any fsspec URL (`s3://bucket/prefix`, `gs://...`), whose package (`s3fs`,
    `gcsfs`) must be installed; credentials come from that package's usual environment.
    `top_n`: how many drivers, anomalies and recommendations a digest lists.
    """

    output_url: str = ""
    top_n: Annotated[int, Field(ge=1, le=20)] = 5


class CostConfig(_Model):
    organization: str = "Example Co"
    currency: Literal["USD"] = "USD"
    tiers: dict[str, Tier]
    tenants: list[Tenant]
    company_budget: Budget = Budget()
    budget_hierarchy: BudgetHierarchy = BudgetHierarchy()
    default_thresholds: list[Percent] = [50, 75, 90, 100]
    price_overrides: list[PriceOverride] = []
    rate_cards: list[RateCard] = []
    pricing: Pricing = Pricing()
    alerts: Alerts = Alerts()
    reconciliation: Reconciliation = Reconciliation()
    allocation: Allocation = Allocation()
    plausibility: Plausibility = Plausibility()
    demo: Demo = Demo()
    partitions: Partitions = Partitions()
    billing: Billing = Billing()
    channels: Channels = Channels()
    enforcement: Enforcement = Enforcement()
    reports: Reports = Reports()
    recommendations: Recommendations = Recommendations()
    fx: Fx = Fx()
    retention: Retention = Retention()

    def first_partition_day(self, today: date) -> date:
        """The first daily partition (see `Partitions`), never a day whose raw rows retention
        may have dropped (`Retention`)."""
        first = self.partitions.first_day_on(today, self.demo)
        raw = self.retention.raw_days()
        return first if raw is None else max(first, today - timedelta(days=raw - 1))

    @model_validator(mode="after")
    def _references(self) -> CostConfig:
        seen: set[str] = set()
        for i, tenant in enumerate(self.tenants):
            if tenant.id in seen:
                raise ValueError(f"tenants[{i}].id: duplicate tenant id {tenant.id!r}")
            seen.add(tenant.id)
            if tenant.tier not in self.tiers:
                raise ValueError(
                    f"tenants[{i}].tier: unknown tier {tenant.tier!r} "
                    f"(known: {', '.join(sorted(self.tiers))})"
                )
        owners: dict[tuple[str, str], str] = {}
        for tenant in self.tenants:
            for kind, ids in tenant.mappings.model_dump().items():
                values = ids.items() if isinstance(ids, dict) else ids
                for value in values:
                    key = (kind, str(value))
                    if key in owners and owners[key] != tenant.id:
                        raise ValueError(
                            f"mappings.{kind}: {value!r} is mapped to both "
                            f"{owners[key]!r} and {tenant.id!r}"
                        )
                    owners[key] = tenant.id
        if self.allocation.rule == "tenant" and self.allocation.tenant not in seen:
            raise ValueError(f"allocation.tenant: unknown tenant {self.allocation.tenant!r}")
        for i, node in enumerate(self.budget_hierarchy.nodes):
            unknown = [t for t in node.tenants if t not in seen]
            if unknown:
                raise ValueError(
                    f"budget_hierarchy.nodes[{i}].tenants: {node.kind} {node.id!r} names unknown "
                    f"tenant(s) {', '.join(map(repr, unknown))} (not in tenants[].id)"
                )
        # Alerts are routed per tenant and per budget node (`team:<id>`, `organization`, ...).
        nodes = {"organization"} | {f"{n.kind}:{n.id}" for n in self.budget_hierarchy.nodes}
        for key in self.channels.tenants:
            if key not in seen and key not in nodes:
                raise ValueError(
                    f"channels.tenants: {key!r} is neither a tenant nor a budget node "
                    "(organization, department:<id>, team:<id>)"
                )
        return self

    @cached_property
    def tenants_by_id(self) -> dict[str, Tenant]:
        return {t.id: t for t in self.tenants}

    def tier_of(self, tenant_id: str) -> Tier:
        return self.tiers[self.tenants_by_id[tenant_id].tier]

    def budget_node(self, node_id: str) -> BudgetNode | None:
        """The department or team of a budget node id (`team:<id>`, `team:<id>/<tenant>`)."""
        kind, _, rest = node_id.partition(":")
        ident = rest.split("/", 1)[0]
        return next(
            (n for n in self.budget_hierarchy.nodes if n.kind == kind and n.id == ident), None
        )

    def thresholds_for(self, tenant_id: str | None) -> list[float]:
        tenant = self.tenants_by_id.get(tenant_id or "")
        if tenant is not None and tenant.budget.thresholds:
            return sorted(tenant.budget.thresholds)
        return sorted(self.default_thresholds)

    def mapping(self, kind: str) -> dict[str, str]:
        """Source id -> tenant id for one mapping kind, e.g. `openai_project_ids`."""
        out: dict[str, str] = {}
        for tenant in self.tenants:
            ids = getattr(tenant.mappings, kind)
            for value in ids.items() if isinstance(ids, dict) else ids:
                out["=".join(value) if isinstance(value, tuple) else value] = tenant.id
        return out


def packaged_config_path() -> Path:
    """The demo configuration shipped with the package."""
    return Path(str(resources.files("cost_pipeline.demo").joinpath(DEMO_CONFIG)))


def config_path() -> Path:
    """The configured file, or the packaged demo configuration."""
    explicit = os.environ.get(CONFIG_ENV)
    return Path(explicit).expanduser() if explicit else packaged_config_path()


def load_config(path: str | Path | None = None) -> CostConfig:
    """Read and validate the configuration; raise `ConfigError` naming file, key and reason."""
    file = Path(path) if path is not None else config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read configuration ({exc.strerror or exc})") from exc
    return _parse_text(text, str(file))


@functools.lru_cache(maxsize=8)
def _parse_text(text: str, source: str) -> CostConfig:
    """The validated configuration of a file's text, parsed once per process and text (every
    run step asks for it; a frozen model is safe to share; an edited file is new text)."""
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    return parse_config(raw, source=source)


def parse_config(raw: dict[str, Any], *, source: str = "<config>") -> CostConfig:
    try:
        return CostConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{source}: {key}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
