"""Overage math: what each tenant owes beyond its tier's allowance in a billing period.

A tenant's billing period is its local calendar month (`lib.periods`). Its tier includes an
allowance, in USD of cost (`included_usage_usd`) or in tokens (`included_tokens`), matching the
unit of the overage terms that apply: the tenant's `contract_overage` (Enterprise contract rates)
when set, else its tier's `overage`. Tiers without overage terms (Free: hard capped) owe nothing.

- unit `usd`: overage = max(0, usage - allowance) USD of cost; amount = overage x (1 + markup).
  The usage is what the tier's `allowance_counts` says counts (`counted_usage`): with `llm`
  (the default) the period's priced LLM calls (`period_spend(...).llm_cost_usd`), with `all`
  the tenant's whole cost (`spend_usd`: LLM calls plus allocated cloud, Kubernetes and
  unattributed cost), the same figure the tier's hard cap is judged on (`lib.budgets`).
- unit `tokens`: overage = max(0, tokens - allowance) tokens (input + output of the period's
  priced interactions); amount = overage / 1e6 x `unit_price_usd`.

Each charge also carries the period's whole cost (`cost_usd`), which unit economics set against
revenue whatever counts toward the allowance.

All money math is `Decimal`, rounded once at the end, half-even, to cents (`amount_cents` is the
exact integer that billing reports; `amount_usd` is the same figure for humans and SQL).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd

from cost_pipeline.catalog import OVERAGE_CHARGES, TENANT_UNIT_ECONOMICS
from cost_pipeline.lib.config import CostConfig, Overage, Tier
from cost_pipeline.lib.periods import (
    periods_overlapping_day,
)

CENT = Decimal("0.01")
MTOK = Decimal(1_000_000)


USAGE_COLUMNS = [
    "tenant_id",
    "period",
    "period_start",
    "period_end",
    "llm_cost_usd",
    "other_cost_usd",
    "usage_tokens",
]


def counted_usage(llm_cost_usd: Decimal, other_cost_usd: Decimal, tier: Tier) -> Decimal:
    """The USD that count toward `tier`'s allowance, hard cap and overage (`allowance_counts`)."""
    return llm_cost_usd if tier.allowance_counts == "llm" else llm_cost_usd + other_cost_usd


def overage_terms(config: CostConfig, tenant_id: str) -> tuple[Overage | None, str]:
    """The overage terms that apply to a tenant and where they come from."""
    tenant = config.tenants_by_id[tenant_id]
    tier = config.tiers[tenant.tier]
    if tier.overage is None:
        # A tier without overage terms is capped (Free); a contract cannot un-cap it silently.
        return None, "none"
    if tenant.contract_overage is not None:
        return tenant.contract_overage, "contract"
    return tier.overage, "tier"


def _dec(value: object) -> Decimal:
    if value is None or pd.isna(value):
        return Decimal(0)
    # Money floats carry 9 decimals; reading them through a rounded string keeps them exact.
    return Decimal(str(round(float(value), 9)))


def compute_overage(
    usage: pd.DataFrame, config: CostConfig, *, computed_at: datetime
) -> pd.DataFrame:
    """Overage charges for the (tenant, period) rows of `usage` (columns `USAGE_COLUMNS`)."""
    if usage.empty:
        return OVERAGE_CHARGES.empty_frame()
    rows = []
    # One row per tenant and period (tens of rows): Decimal math per row, not per event.
    for rec in usage[USAGE_COLUMNS].to_dict("records"):
        tenant = config.tenants_by_id[rec["tenant_id"]]
        tier = config.tiers[tenant.tier]
        terms, source = overage_terms(config, tenant.id)
        llm_usd, other_usd = _dec(rec["llm_cost_usd"]), _dec(rec["other_cost_usd"])
        usage_usd = counted_usage(llm_usd, other_usd, tier)
        usage_tokens = int(rec["usage_tokens"] or 0)
        quantity = Decimal(0)
        amount = Decimal(0)
        if terms is not None and terms.unit == "usd":
            allowance = tier.included_usage_usd or Decimal(0)
            quantity = max(Decimal(0), usage_usd - allowance)
            amount = quantity * (Decimal(1) + Decimal(str(terms.markup)))
        elif terms is not None:
            allowance_tokens = tier.included_tokens or 0
            quantity = Decimal(max(0, usage_tokens - allowance_tokens))
            amount = quantity / MTOK * (terms.unit_price_usd or Decimal(0))
        cents = amount.quantize(CENT, rounding=ROUND_HALF_EVEN)
        rows.append(
            {
                "tenant_id": tenant.id,
                "period": rec["period"],
                "period_start": rec["period_start"],
                "period_end": rec["period_end"],
                "tier": tenant.tier,
                "stripe_customer_id": tenant.stripe_customer_id,
                "rate_source": source,
                "overage_unit": terms.unit if terms is not None else None,
                "included_usage_usd": tier.included_usage_usd,
                "included_tokens": tier.included_tokens,
                "allowance_counts": tier.allowance_counts,
                "usage_usd": float(usage_usd),
                "cost_usd": float(llm_usd + other_usd),
                "usage_tokens": usage_tokens,
                "overage_quantity": float(quantity),
                "markup": terms.markup if terms is not None else None,
                "unit_price_usd": terms.unit_price_usd if terms is not None else None,
                "amount_usd": float(cents),
                "amount_cents": int(cents * 100),
                "computed_at": computed_at,
            }
        )
    return OVERAGE_CHARGES.conform(pd.DataFrame(rows))


def periods_for_day(config: CostConfig, day: date) -> dict[str, list[str]]:
    """Period key -> tenant ids whose local billing period overlaps UTC day `day`."""
    out: dict[str, list[str]] = {}
    for tenant in config.tenants:
        for period in periods_overlapping_day(day, tenant.timezone):
            out.setdefault(period.key, []).append(tenant.id)
    return out


def bills_tokens(config: CostConfig, tenant_id: str) -> bool:
    terms, _ = overage_terms(config, tenant_id)
    return terms is not None and terms.unit == "tokens"


def unit_economics(charges: pd.DataFrame, config: CostConfig) -> pd.DataFrame:
    """Revenue (tier price + billed overage) against the tenant's whole cost in each period.

    The cost is `overage_charges.cost_usd`: the period's whole cost (`period_spend`, i.e.
    priced LLM calls plus the cloud, Kubernetes and unattributed rows of `daily_cost_summary`),
    whatever the tier counts toward its allowance. `margin_pct` is null when there is no
    revenue (a Free tenant's margin is simply its negative cost).
    """
    if charges.empty:
        return TENANT_UNIT_ECONOMICS.empty_frame()
    price = charges["tier"].map({k: float(t.monthly_price_usd) for k, t in config.tiers.items()})
    revenue = (price + charges["amount_usd"]).round(2)
    # Charges stored before `cost_usd` existed counted the whole cost as their usage.
    cost = charges["cost_usd"].astype("float64").fillna(charges["usage_usd"].astype("float64"))
    margin = (revenue - cost).round(9)
    out = pd.DataFrame(
        {
            "tenant_id": charges["tenant_id"],
            "period": charges["period"],
            "tier": charges["tier"],
            "tier_price_usd": price,
            "overage_usd": charges["amount_usd"],
            "revenue_usd": revenue,
            "cost_usd": cost,
            "gross_margin_usd": margin,
            "margin_pct": (margin / revenue.where(revenue > 0) * 100).round(2),
            "computed_at": charges["computed_at"],
        }
    )
    return TENANT_UNIT_ECONOMICS.conform(out)
