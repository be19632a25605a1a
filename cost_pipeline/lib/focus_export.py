"""The whole per-tenant ledger as FinOps FOCUS 1.2: build, validate, write CSV and Parquet.

The export passes the FinOps Foundation's `focus-validator` (FOCUS 1.2) with the optional column
groups in `APPLICABILITY_CRITERIA`; `cost_pipeline_tests/lib/test_focus_validator.py` runs it.

- LLM rows (one per `daily_cost_summary` row): `ServiceCategory = "AI and Machine Learning"`,
  `ServiceSubcategory = "Generative AI"`, tokens as `ConsumedQuantity` / `PricingQuantity`.
  Billed = effective = contracted = the ledger's cost; `ListCost` is the summary's optional
  `list_cost_usd` column (cost at list price, before a negotiated override) or the same cost.
- Kubernetes rows: `Compute` / `Containers`, the allocation window (24 `Hours` a day) as the
  quantity, since allocations carry no resource quantities.
- Cloud rows come from the month's `cloud_costs` rows when given, so billed, effective, list and
  contracted cost, charge category (credits, tax, purchases), quantities and invoice id are the
  source's. A row mapped to a tenant is that tenant's; an unmapped row is spread over tenants in
  the shares the allocation gave them (the summary's cloud cost less their direct cost), with
  nano-exact largest-remainder rounding, so per tenant `EffectiveCost` equals the summary and in
  total every cost column equals the source. A row not in the ledger currency (`needs_fx`) keeps
  its own `BillingCurrency` and amounts and its mapped tenant (or `__unallocated__`). Without
  `cloud_costs`, cloud summary rows are written with their one cost in every cost column and no
  quantity: valid FOCUS columns, but not the source's detail (compatibility only).

The tenant is the sub-account (`SubAccountId`, `x_TenantId`); project columns are prefixed `x_`.
`InvoiceId` is null: a chargeback ledger row is not invoiced (FOCUS, and the validator, want it
null or set on every row alike); the provider's invoice id of a cloud row is `x_SourceInvoiceId`.
`export_problems` reconciles an export with the ledger: `EffectiveCost` (ledger currency) sums to
the summary total. `ledger_to_focus_range` and `filter_focus` cut the export to some tenants and
a range of days (a tenant's statement, an export on demand).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.focus import CHARGE_CATEGORIES
from cost_pipeline.lib.nano_split import from_nanos, split_nanos, to_nanos

FOCUS_VERSION = "1.2"
LLM_CATEGORY = "AI and Machine Learning"
UNALLOCATED = "__unallocated__"
# Optional column groups the export supports, as `focus-validator --applicability-criteria`.
APPLICABILITY_CRITERIA = (
    "ACCOUNT_NAMING_SUPPORTED",
    "SUB_ACCOUNT_SUPPORTED",
    "TAGGING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
)
# FOCUS 1.2 ServiceCategory -> its allowed ServiceSubcategory values.
SUBCATEGORIES: dict[str, tuple[str, ...]] = {
    "AI and Machine Learning": (
        "AI Platforms",
        "Bots",
        "Generative AI",
        "Machine Learning",
        "Natural Language Processing",
    ),
    "Analytics": (
        "Analytics Platforms",
        "Business Intelligence",
        "Data Processing",
        "Search",
        "Streaming Analytics",
    ),
    "Business Applications": ("Productivity and Collaboration",),
    "Compute": (
        "Containers",
        "End User Computing",
        "Quantum Compute",
        "Serverless Compute",
        "Virtual Machines",
    ),
    "Databases": (
        "Caching",
        "Data Warehouses",
        "Ledger Databases",
        "NoSQL Databases",
        "Relational Databases",
        "Time Series Databases",
    ),
    "Developer Tools": (
        "Developer Platforms",
        "Continuous Integration and Deployment",
        "Development Environments",
        "Source Code Management",
        "Quality Assurance",
    ),
    "Identity": ("Identity and Access Management",),
    "Integration": ("API Management", "Messaging", "Workflow Orchestration"),
    "Internet of Things": ("IoT Analytics", "IoT Platforms"),
    "Management and Governance": (
        "Architecture",
        "Compliance",
        "Cost Management",
        "Data Governance",
        "Disaster Recovery",
        "Endpoint Management",
        "Observability",
        "Support",
    ),
    "Media": ("Content Creation", "Gaming", "Media Streaming", "Mixed Reality"),
    "Migration": ("Data Migration", "Resource Migration"),
    "Mobile": (),
    "Multicloud": ("Multicloud Integration",),
    "Networking": (
        "Application Networking",
        "Content Delivery",
        "Network Connectivity",
        "Network Infrastructure",
        "Network Routing",
        "Network Security",
    ),
    "Security": (
        "Secret Management",
        "Security Posture Management",
        "Threat Detection and Response",
    ),
    "Storage": (
        "Backup Storage",
        "Block Storage",
        "File Storage",
        "Object Storage",
        "Storage Platforms",
    ),
    "Web": ("Application Platforms",),
    "Other": (),
}
SERVICE_CATEGORIES = tuple(SUBCATEGORIES)
CHARGE_FREQUENCIES = ("One-Time", "Recurring", "Usage-Based")
# Mandatory FOCUS 1.2 columns (and the optional ones the export commits to): name -> (kind,
# nullable).
MANDATORY: dict[str, tuple[str, bool]] = {
    "BilledCost": ("decimal", False),
    "EffectiveCost": ("decimal", False),
    "ListCost": ("decimal", False),
    "ContractedCost": ("decimal", False),
    "PricingQuantity": ("decimal", True),
    "ConsumedQuantity": ("decimal", True),
    "BillingPeriodStart": ("datetime", False),
    "BillingPeriodEnd": ("datetime", False),
    "ChargePeriodStart": ("datetime", False),
    "ChargePeriodEnd": ("datetime", False),
    "BillingAccountId": ("string", False),
    "BillingAccountName": ("string", False),
    "BillingCurrency": ("string", False),
    "ChargeCategory": ("string", False),
    "ChargeClass": ("string", True),
    "ChargeDescription": ("string", False),
    "ChargeFrequency": ("string", False),
    "InvoiceId": ("string", True),
    "InvoiceIssuerName": ("string", False),
    "ProviderName": ("string", False),
    "PublisherName": ("string", False),
    "ServiceCategory": ("string", False),
    "ServiceSubcategory": ("string", False),
    "ServiceName": ("string", False),
    "PricingUnit": ("string", True),
    "ConsumedUnit": ("string", True),
}
OPTIONAL = (
    "ServiceProviderName",
    "HostProviderName",
    "SubAccountId",
    "SubAccountName",
    "Tags",
    # Always null (no commitment discounts are restated): present because the validator's
    # ConsumedQuantity rules read it.
    "CommitmentDiscountStatus",
)
PROJECT_COLUMNS = (
    "x_TenantId",
    "x_TenantName",
    "x_CostCategory",
    "x_Model",
    "x_AgentId",
    "x_Requests",
    "x_InputTokens",
    "x_OutputTokens",
    "x_UnpricedRequests",
    "x_SourceInvoiceId",
)
COLUMNS = [*MANDATORY, *OPTIONAL, *PROJECT_COLUMNS]
ISO = "%Y-%m-%dT%H:%M:%SZ"
ISO_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
K8S_HOURS_PER_DAY = 24
COSTS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
_SOURCE_COSTS = {
    "billed_cost": "BilledCost",
    "effective_cost": "EffectiveCost",
    "list_cost": "ListCost",
    "contracted_cost": "ContractedCost",
}


def month_days(month: date) -> list[date]:
    """Every day of the calendar month containing `month`."""
    first = month.replace(day=1)
    end = (pd.Timestamp(first) + pd.offsets.MonthBegin(1)).date()
    return [d.date() for d in pd.date_range(first, end, inclusive="left")]


def _subcategory(category: pd.Series, given: pd.Series | None = None) -> pd.Series:
    """A FOCUS subcategory valid for each category: `given` when allowed, else `Other (...)`."""
    fallback = "Other (" + category.astype(str) + ")"
    if given is None:
        return fallback
    allowed = pd.Series(
        [g in SUBCATEGORIES.get(c, ()) for c, g in zip(category, given, strict=True)],
        index=category.index,
    )
    return given.where(allowed, fallback)


def _account(config: CostConfig) -> str:
    account = "".join(ch if ch.isalnum() else "-" for ch in config.organization.lower()).strip("-")
    return account or "cost-pipeline"


def ledger_to_focus(
    summary: pd.DataFrame,
    *,
    config: CostConfig,
    month: date,
    cloud_costs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """FOCUS 1.2 rows (`COLUMNS`) of a month's ledger.

    `summary` is the month's `daily_cost_summary` (an optional `list_cost_usd` column gives LLM
    rows their list-price cost); `cloud_costs`, the month's `cloud_costs` rows, makes the cloud
    rows restate the source (see the module docstring).
    """
    s = summary.reset_index(drop=True)
    first = pd.Timestamp(month.replace(day=1), tz="UTC")
    if cloud_costs is not None:
        cloud = _cloud_rows(s, cloud_costs, config=config, month=month)
        s = s[s["cost_category"].astype(str) != "cloud"].reset_index(drop=True)
    else:
        cloud = None
    category = s["cost_category"].astype(str)
    is_llm = category.isin(["llm", "unattributed"])
    is_k8s = category == "k8s"
    provider = s["provider"].fillna("").astype(str)
    service = s["model_or_service"].fillna("").astype(str)
    provider_name = provider.where(provider != "", np.where(is_llm, "Unknown", "Internal"))
    service_category = pd.Series(
        np.select(
            [is_llm, is_k8s, service.isin(SERVICE_CATEGORIES)],
            [LLM_CATEGORY, "Compute", service],
            default="Other",
        ),
        index=s.index,
    )
    subcategory = np.select(
        [is_llm, is_k8s], ["Generative AI", "Containers"], default=_subcategory(service_category)
    )
    tokens = (s["input_tokens"].astype("int64") + s["output_tokens"].astype("int64")).astype(
        "float64"
    )
    quantity = np.select([is_llm, is_k8s], [tokens, float(K8S_HOURS_PER_DAY)], default=np.nan)
    unit = np.select([is_llm, is_k8s], ["Tokens", "Hours"], default=None)
    cost = s["cost_usd"].astype("float64").round(9)
    list_cost = (
        s["list_cost_usd"].astype("float64").round(9).where(is_llm, cost).fillna(cost)
        if "list_cost_usd" in s.columns
        else cost
    )
    day = pd.to_datetime(s["day"]).dt.tz_localize("UTC")
    tenant = s["tenant_id"].astype(str)
    out = pd.DataFrame(
        {
            "BilledCost": cost,
            "EffectiveCost": cost,
            "ListCost": list_cost,
            "ContractedCost": cost,
            "PricingQuantity": quantity,
            "ConsumedQuantity": quantity,
            "ChargePeriodStart": day.dt.strftime(ISO),
            "ChargePeriodEnd": (day + pd.Timedelta(days=1)).dt.strftime(ISO),
            "BillingCurrency": config.currency,
            "ChargeCategory": "Usage",
            "ChargeClass": None,
            "ChargeDescription": category + " cost of " + tenant + ": " + service,
            "ChargeFrequency": "Usage-Based",
            "InvoiceIssuerName": provider_name,
            "ProviderName": provider_name,
            "PublisherName": provider_name,
            "ServiceCategory": service_category,
            "ServiceSubcategory": subcategory,
            "ServiceName": np.where(is_llm, provider_name + " API", service.replace("", "Other")),
            "PricingUnit": unit,
            "ConsumedUnit": unit,
            "x_TenantId": tenant,
            "x_CostCategory": category,
            "x_Model": np.where(is_llm, service, None),
            "x_AgentId": s["agent_id"],
            "x_Requests": s["requests"].astype("int64"),
            "x_InputTokens": s["input_tokens"].astype("int64"),
            "x_OutputTokens": s["output_tokens"].astype("int64"),
            "x_UnpricedRequests": s["unpriced_requests"].fillna(0).astype("int64"),
            "x_SourceInvoiceId": None,
        }
    )
    if cloud is not None and len(cloud):
        out = pd.concat([out, cloud], ignore_index=True) if len(out) else cloud
    return _finish(out, config=config, first=first)


def _finish(out: pd.DataFrame, *, config: CostConfig, first: pd.Timestamp) -> pd.DataFrame:
    """Columns every row shares: billing period and account, sub-account, tags, names."""
    names = {t.id: t.name for t in config.tenants}
    tenant = out["x_TenantId"].astype(str)
    out = out.assign(
        BillingPeriodStart=first.strftime(ISO),
        BillingPeriodEnd=(first + pd.offsets.MonthBegin(1)).strftime(ISO),
        BillingAccountId=_account(config),
        BillingAccountName=config.organization,
        ServiceProviderName=out["ProviderName"],
        HostProviderName=out["PublisherName"],
        SubAccountId=tenant,
        SubAccountName=tenant.map(names).fillna(tenant),
        Tags='{"tenant": "' + tenant + '"}',
        InvoiceId=None,
        CommitmentDiscountStatus=None,
        x_TenantName=tenant.map(names).fillna(tenant),
    )
    # FOCUS: a ServiceName has one ServiceSubcategory; a restated source may disagree with
    # itself, so each name keeps its first.
    out["ServiceSubcategory"] = out.groupby("ServiceName", sort=False)[
        "ServiceSubcategory"
    ].transform("first")
    return out[COLUMNS].reset_index(drop=True)


def _cloud_rows(
    summary: pd.DataFrame, cloud_costs: pd.DataFrame, *, config: CostConfig, month: date
) -> pd.DataFrame:
    """The month's cloud_costs rows per tenant: direct rows kept, unmapped rows spread."""
    days = set(month_days(month))
    cc = cloud_costs[pd.to_datetime(cloud_costs["day"]).dt.date.isin(days)].reset_index(drop=True)
    if cc.empty:
        return pd.DataFrame()
    cc = cc.assign(
        day=pd.to_datetime(cc["day"]).dt.date,
        provider=cc["provider"].fillna("").astype(str),
        category=cc["service_category"].fillna("Other").astype(str),
        currency=cc["currency"].fillna("").astype(str).str.upper(),
    )
    for c in _SOURCE_COSTS:
        if c not in cc.columns:
            cc[c] = np.nan
    key = ["day", "provider", "category"]
    tenants = set(config.tenants_by_id)
    in_ledger_currency = cc["currency"] == config.currency
    owned = cc["tenant_id"].isin(tenants) | ~in_ledger_currency
    direct = cc[owned].assign(tenant=cc.loc[owned, "tenant_id"].fillna(UNALLOCATED))
    pool = cc[~owned].reset_index(drop=True)
    spread = _spread(summary, direct[in_ledger_currency[owned]], pool, key, config)
    rows = pd.concat([direct, spread], ignore_index=True)
    return _cloud_focus(rows)


def _spread(
    summary: pd.DataFrame,
    direct: pd.DataFrame,
    pool: pd.DataFrame,
    key: list[str],
    config: CostConfig,
) -> pd.DataFrame:
    """Unmapped rows split over tenants by the allocation's shares (see module docstring)."""
    if pool.empty:
        return pool.assign(tenant=pd.Series(dtype=object))
    cloud = summary[summary["cost_category"].astype(str) == "cloud"]
    allocated = pd.DataFrame(
        {
            "day": pd.to_datetime(cloud["day"]).dt.date,
            "provider": cloud["provider"].fillna("").astype(str),
            "category": cloud["model_or_service"].fillna("Other").astype(str),
            "tenant": cloud["tenant_id"].astype(str),
            "amount": cloud["cost_usd"].astype("float64"),
        }
    )
    owned = direct.assign(amount=-direct["effective_cost"].astype("float64"))[
        [*key, "tenant", "amount"]
    ]
    shares = pd.concat([allocated, owned]).groupby([*key, "tenant"], as_index=False)["amount"].sum()
    pool_total = pool.groupby(key, as_index=False)["effective_cost"].sum()
    shares = shares.merge(pool_total, on=key)
    ratio = shares["amount"] / shares["effective_cost"].where(shares["effective_cost"] != 0)
    shares["w"] = ratio.clip(lower=0).fillna(0.0)
    shares = shares[shares["w"] > 0][[*key, "tenant", "w"]]
    pool = pool.reset_index(drop=True).assign(_row=lambda p: np.arange(len(p)))
    parts = pool[["_row", *key]].merge(shares, on=key, how="left")
    # A pool the allocation gave no share of (zero effective cost, or no summary yet) goes by
    # the configured rule: all to the rule's tenant, or evenly.
    uncovered = parts["tenant"].isna()
    if uncovered.any():
        if config.allocation.rule == "tenant":
            fallback = [config.allocation.tenant]
        else:
            fallback = list(config.tenants_by_id) or [UNALLOCATED]
        missing = parts.loc[uncovered, ["_row", *key]].drop_duplicates("_row")
        even = missing.merge(pd.DataFrame({"tenant": fallback, "w": 1.0}), how="cross")
        parts = pd.concat([parts[~uncovered], even], ignore_index=True)
    parts = parts.sort_values(["_row", "tenant"], kind="stable").reset_index(drop=True)
    owner = parts["_row"].to_numpy()
    weight = parts["w"].to_numpy(dtype="float64")
    out = pool.iloc[owner].reset_index(drop=True).assign(tenant=parts["tenant"].to_numpy())
    for c in _SOURCE_COSTS:
        values = pool[c].astype("float64")
        split = from_nanos(split_nanos(to_nanos(values.fillna(0.0)), owner, weight))
        out[c] = np.where(values.notna().to_numpy()[owner], split, np.nan)
    share = weight / np.bincount(owner, weights=weight)[owner]
    for c in ("consumed_quantity", "pricing_quantity"):
        if c in out.columns:
            out[c] = out[c].astype("float64") * share
    return out.drop(columns="_row")


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series(None, index=df.index, dtype=object)


def _cloud_focus(rows: pd.DataFrame) -> pd.DataFrame:
    """Cloud rows per tenant -> FOCUS rows, aggregated per day, tenant and charge."""
    if rows.empty:
        return pd.DataFrame()
    charge = rows["charge_category"].fillna("Usage").astype(str)
    usage = charge == "Usage"
    consumed = pd.to_numeric(_col(rows, "consumed_quantity"), errors="coerce")
    consumed_unit = _col(rows, "consumed_unit")
    pricing = pd.to_numeric(_col(rows, "pricing_quantity"), errors="coerce")
    pricing_unit = _col(rows, "pricing_unit")
    # FOCUS: no consumed quantity but on usage, no pricing quantity on tax.
    fill = consumed.isna() & pricing.notna()
    consumed, consumed_unit = (
        consumed.where(~fill, pricing),
        consumed_unit.where(~fill, pricing_unit),
    )
    consumed = consumed.where(usage)
    consumed_unit = consumed_unit.where(usage & consumed.notna(), None)
    pricing = pricing.where(charge != "Tax")
    pricing_unit = pricing_unit.where(pricing.notna(), None)
    category = rows["category"].where(rows["category"].isin(SERVICE_CATEGORIES), "Other")
    frequency = _col(rows, "charge_frequency")
    frequency = frequency.where(
        frequency.isin(CHARGE_FREQUENCIES),
        np.where(charge == "Purchase", "One-Time", "Usage-Based"),
    )
    contracted = rows["contracted_cost"].astype("float64")
    contracted = contracted.fillna(
        rows["list_cost"].where(charge.isin(["Usage", "Purchase"]), rows["billed_cost"])
    )
    provider = rows["provider"].replace("", "Unknown")
    service = _col(rows, "service_name").fillna(category).astype(str)
    frame = pd.DataFrame(
        {
            "day": rows["day"],
            "x_TenantId": rows["tenant"].astype(str),
            "ProviderName": provider,
            "PublisherName": provider,
            "InvoiceIssuerName": provider,
            "ServiceName": service,
            "ServiceCategory": category,
            "ServiceSubcategory": _subcategory(category, _col(rows, "service_subcategory")),
            "ChargeCategory": charge,
            "ChargeClass": _col(rows, "charge_class"),
            "ChargeFrequency": frequency,
            "BillingCurrency": rows["currency"],
            "x_SourceInvoiceId": _col(rows, "invoice_id"),
            "ConsumedUnit": consumed_unit,
            "PricingUnit": pricing_unit,
            "ChargeDescription": _col(rows, "charge_description").fillna(charge + " of " + service),
            "BilledCost": rows["billed_cost"].astype("float64"),
            "EffectiveCost": rows["effective_cost"].astype("float64"),
            "ListCost": rows["list_cost"].astype("float64"),
            "ContractedCost": contracted,
            "ConsumedQuantity": consumed,
            "PricingQuantity": pricing,
        }
    )
    keys = [
        "day",
        "x_TenantId",
        "ProviderName",
        "PublisherName",
        "InvoiceIssuerName",
        "ServiceName",
        "ServiceCategory",
        "ServiceSubcategory",
        "ChargeCategory",
        "ChargeClass",
        "ChargeFrequency",
        "BillingCurrency",
        "x_SourceInvoiceId",
        "ConsumedUnit",
        "PricingUnit",
    ]
    sums = {c: (c, "sum") for c in COSTS}
    sums |= {c: (c, lambda v: v.sum(min_count=1)) for c in ("ConsumedQuantity", "PricingQuantity")}
    sums["ChargeDescription"] = ("ChargeDescription", "first")
    agg = frame.groupby(keys, dropna=False, sort=True, as_index=False).agg(**sums)
    for c in COSTS:
        agg[c] = agg[c].round(9)
    day = pd.to_datetime(agg["day"]).dt.tz_localize("UTC")
    return agg.drop(columns="day").assign(
        ChargePeriodStart=day.dt.strftime(ISO),
        ChargePeriodEnd=(day + pd.Timedelta(days=1)).dt.strftime(ISO),
        x_CostCategory="cloud",
        x_Model=None,
        x_AgentId=None,
        x_Requests=0,
        x_InputTokens=0,
        x_OutputTokens=0,
        x_UnpricedRequests=0,
    )


def export_problems(focus: pd.DataFrame, summary: pd.DataFrame, *, currency: str) -> list[str]:
    """Where an export (as written and read back) does not restate the ledger.

    The `EffectiveCost` of rows in the ledger `currency` must sum to the summary's `cost_usd`
    (to 1e-6). Rows in other currencies are never added in (see `other_currencies`).
    """
    in_currency = focus["BillingCurrency"].astype(str) == currency
    effective = float(pd.to_numeric(focus.loc[in_currency, "EffectiveCost"]).sum())
    total = float(summary["cost_usd"].astype("float64").sum())
    if abs(effective - total) <= 1e-6:
        return []
    return [
        f"EffectiveCost sum {effective:.9f} {currency} differs from the ledger's {total:.9f} "
        f"by {effective - total:+.9f}"
    ]


def other_currencies(focus: pd.DataFrame, *, currency: str) -> dict[str, float]:
    """EffectiveCost per BillingCurrency other than the ledger's: kept, never converted."""
    other = focus[focus["BillingCurrency"].astype(str) != currency]
    sums = pd.to_numeric(other["EffectiveCost"]).groupby(other["BillingCurrency"]).sum()
    return {str(k): round(float(v), 9) for k, v in sums.items()}


def validate_focus(df: pd.DataFrame) -> list[str]:
    """Problems that make `df` invalid FOCUS 1.2; empty when it validates.

    Checks every mandatory column is present and of its type (decimals numeric, datetimes
    RFC 3339 UTC `YYYY-MM-DDTHH:MM:SSZ`, non-nullable columns without nulls), allowed values
    of `ChargeCategory` and `ServiceCategory`, ISO 4217 currency, periods in order and custom
    columns prefixed `x_`.
    """
    problems: list[str] = []
    for name, (kind, nullable) in MANDATORY.items():
        if name not in df.columns:
            problems.append(f"missing mandatory column {name}")
            continue
        values = df[name]
        present = values.notna() & (values.astype("string") != "")
        if not nullable and not present.all():
            problems.append(f"{name}: {int((~present).sum())} null value(s)")
        if kind == "decimal":
            numeric = pd.to_numeric(values.where(present), errors="coerce")
            if (present & numeric.isna()).any():
                problems.append(f"{name}: non-decimal value(s)")
        elif kind == "datetime":
            ok = values.astype("string").str.match(ISO_PATTERN).fillna(False)
            if (present & ~ok).any():
                problems.append(f"{name}: value(s) not RFC 3339 UTC, e.g. {values[~ok].iloc[0]!r}")
    known = set(MANDATORY) | set(OPTIONAL)
    custom = [c for c in df.columns if c not in known and not c.startswith("x_")]
    if custom:
        problems.append(f"custom column(s) without the x_ prefix: {', '.join(custom)}")
    if problems:
        return problems
    if not df["ChargeCategory"].isin(CHARGE_CATEGORIES).all():
        problems.append("ChargeCategory: value(s) outside " + ", ".join(CHARGE_CATEGORIES))
    if not df["ServiceCategory"].isin(SERVICE_CATEGORIES).all():
        bad = df.loc[~df["ServiceCategory"].isin(SERVICE_CATEGORIES), "ServiceCategory"].iloc[0]
        problems.append(f"ServiceCategory: value {bad!r} is not a FOCUS service category")
    if not df["BillingCurrency"].astype(str).str.fullmatch(r"[A-Z]{3}").all():
        problems.append("BillingCurrency: not an ISO 4217 code")
    for period in ("Charge", "Billing"):
        start = pd.to_datetime(df[f"{period}PeriodStart"], utc=True)
        end = pd.to_datetime(df[f"{period}PeriodEnd"], utc=True)
        if (end <= start).any():
            problems.append(f"{period}PeriodEnd is not after {period}PeriodStart")
    charge = pd.to_datetime(df["ChargePeriodStart"], utc=True)
    inside = (charge >= pd.to_datetime(df["BillingPeriodStart"], utc=True)) & (
        charge < pd.to_datetime(df["BillingPeriodEnd"], utc=True)
    )
    if not inside.all():
        problems.append("ChargePeriodStart outside its billing period")
    return problems


def export_paths(out_dir: str | Path, month: date) -> tuple[Path, Path]:
    stem = f"focus-{FOCUS_VERSION}_{month:%Y-%m}"
    return Path(out_dir) / f"{stem}.csv", Path(out_dir) / f"{stem}.parquet"


def write_focus_month(df: pd.DataFrame, out_dir: str | Path, month: date) -> tuple[Path, Path]:
    """Write the month as CSV and Parquet, atomically (temp file, then rename)."""
    csv_path, parquet_path = export_paths(out_dir, month)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_csv, tmp_parquet = csv_path.with_suffix(".csv.tmp"), parquet_path.with_suffix(".tmp")
    df.to_csv(tmp_csv, index=False, float_format="%.9f")
    df.to_parquet(tmp_parquet, index=False)
    tmp_csv.replace(csv_path)
    tmp_parquet.replace(parquet_path)
    return csv_path, parquet_path


def read_focus_export(path: str | Path) -> pd.DataFrame:
    """An export file back, CSV read as text so validation sees what a consumer sees."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def filter_focus(
    focus: pd.DataFrame,
    *,
    tenant_ids: Collection[str] | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """The rows of `tenant_ids` (`x_TenantId`; None: every tenant) whose charge period starts on
    a UTC day in `start..end` (inclusive; None: open)."""
    keep = pd.Series(True, index=focus.index)
    if tenant_ids is not None:
        keep &= focus["x_TenantId"].astype(str).isin(set(tenant_ids))
    day = pd.to_datetime(focus["ChargePeriodStart"], utc=True).dt.date
    if start is not None:
        keep &= day >= start
    if end is not None:
        keep &= day <= end
    return focus[keep].reset_index(drop=True)


def ledger_to_focus_range(
    summary: pd.DataFrame,
    *,
    config: CostConfig,
    start: date,
    end: date,
    cloud_costs: pd.DataFrame | None = None,
    tenant_ids: Collection[str] | None = None,
) -> pd.DataFrame:
    """FOCUS rows (`COLUMNS`) of the days `start..end`, each month with its own billing period,
    of `tenant_ids` only when given. Unmapped cloud cost is spread over every tenant first (as
    in the monthly export), so a tenant's rows hold its share of it."""
    frames = []
    months = sorted({d.replace(day=1) for d in pd.date_range(start, end).date})
    day = pd.to_datetime(summary["day"]).dt.date
    for month in months:
        days = set(month_days(month))
        rows = summary[day.isin(days)]
        cloud = None
        if cloud_costs is not None:
            cloud = cloud_costs[pd.to_datetime(cloud_costs["day"]).dt.date.isin(days)]
        if rows.empty and (cloud is None or cloud.empty):
            continue
        focus = ledger_to_focus(rows, config=config, month=month, cloud_costs=cloud)
        frames.append(filter_focus(focus, tenant_ids=tenant_ids, start=start, end=end))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)


def focus_csv(df: pd.DataFrame) -> bytes:
    """An export as CSV bytes, written as `write_focus_month` writes its CSV."""
    return df.to_csv(index=False, float_format="%.9f").encode()
