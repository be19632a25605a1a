"""The whole per-tenant ledger as FinOps FOCUS 1.2: build, validate, write CSV and Parquet.

One FOCUS row per `daily_cost_summary` row of the month. LLM rows carry
`ServiceCategory = "AI and Machine Learning"`, the LLM provider as `ProviderName` (and the 1.3
name `ServiceProviderName`) and tokens as `ConsumedQuantity`; cloud rows keep their provider and
service category; Kubernetes rows are `Compute` on `Kubernetes`. The tenant is the sub-account
(`SubAccountId`, `x_TenantId`); project columns are prefixed `x_`. `BilledCost`, `EffectiveCost`,
`ListCost` and `ContractedCost` are the ledger's cost, so the export's `BilledCost` sum equals the
summary total.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.focus import CHARGE_CATEGORIES

FOCUS_VERSION = "1.2"
LLM_CATEGORY = "AI and Machine Learning"
SERVICE_CATEGORIES = (
    "AI and Machine Learning",
    "Analytics",
    "Business Applications",
    "Compute",
    "Databases",
    "Developer Tools",
    "Multicloud",
    "Identity",
    "Integration",
    "Internet of Things",
    "Management and Governance",
    "Media",
    "Migration",
    "Mobile",
    "Networking",
    "Security",
    "Storage",
    "Web",
    "Other",
)
# Mandatory FOCUS 1.2 columns: name -> (kind, nullable).
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
    "InvoiceIssuerName": ("string", False),
    "ProviderName": ("string", False),
    "PublisherName": ("string", False),
    "ServiceCategory": ("string", False),
    "ServiceName": ("string", False),
    "PricingUnit": ("string", True),
    "ConsumedUnit": ("string", True),
}
OPTIONAL = ("ServiceProviderName", "HostProviderName", "SubAccountId", "SubAccountName", "Tags")
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
)
COLUMNS = [*MANDATORY, *OPTIONAL, *PROJECT_COLUMNS]
ISO = "%Y-%m-%dT%H:%M:%SZ"
ISO_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


def month_days(month: date) -> list[date]:
    """Every day of the calendar month containing `month`."""
    first = month.replace(day=1)
    end = (pd.Timestamp(first) + pd.offsets.MonthBegin(1)).date()
    return [d.date() for d in pd.date_range(first, end, inclusive="left")]


def ledger_to_focus(summary: pd.DataFrame, *, config: CostConfig, month: date) -> pd.DataFrame:
    """FOCUS 1.2 rows (`COLUMNS`) of a month's `daily_cost_summary` rows."""
    s = summary.reset_index(drop=True)
    first = pd.Timestamp(month.replace(day=1), tz="UTC")
    day = pd.to_datetime(s["day"]).dt.tz_localize("UTC")
    category = s["cost_category"].astype(str)
    is_llm = category.isin(["llm", "unattributed"])
    provider = s["provider"].fillna("").astype(str)
    service = s["model_or_service"].fillna("").astype(str)
    provider_name = provider.where(provider != "", np.where(is_llm, "Unknown", "Internal"))
    service_category = np.select(
        [is_llm, category == "k8s", service.isin(SERVICE_CATEGORIES)],
        [LLM_CATEGORY, "Compute", service],
        default="Other",
    )
    tokens = s["input_tokens"].astype("int64") + s["output_tokens"].astype("int64")
    cost = s["cost_usd"].astype("float64").round(9)
    names = {t.id: t.name for t in config.tenants}
    tenant = s["tenant_id"].astype(str)
    account = "".join(ch if ch.isalnum() else "-" for ch in config.organization.lower()).strip("-")
    out = pd.DataFrame(
        {
            "BilledCost": cost,
            "EffectiveCost": cost,
            "ListCost": cost,
            "ContractedCost": cost,
            "PricingQuantity": np.where(is_llm, tokens, np.nan),
            "ConsumedQuantity": np.where(is_llm, tokens, np.nan),
            "BillingPeriodStart": first.strftime(ISO),
            "BillingPeriodEnd": (first + pd.offsets.MonthBegin(1)).strftime(ISO),
            "ChargePeriodStart": day.dt.strftime(ISO),
            "ChargePeriodEnd": (day + pd.Timedelta(days=1)).dt.strftime(ISO),
            "BillingAccountId": account or "cost-pipeline",
            "BillingAccountName": config.organization,
            "BillingCurrency": config.currency,
            "ChargeCategory": "Usage",
            "ChargeClass": None,
            "ChargeDescription": category + " cost of " + tenant + ": " + service,
            "ChargeFrequency": "Usage-Based",
            "InvoiceIssuerName": provider_name,
            "ProviderName": provider_name,
            "PublisherName": provider_name,
            "ServiceCategory": service_category,
            "ServiceName": np.where(is_llm, provider_name + " API", service.replace("", "Other")),
            "PricingUnit": np.where(is_llm, "Tokens", None),
            "ConsumedUnit": np.where(is_llm, "Tokens", None),
            "ServiceProviderName": provider_name,
            "HostProviderName": provider_name,
            "SubAccountId": tenant,
            "SubAccountName": tenant.map(names).fillna(tenant),
            "Tags": '{"tenant": "' + tenant + '"}',
            "x_TenantId": tenant,
            "x_TenantName": tenant.map(names).fillna(tenant),
            "x_CostCategory": category,
            "x_Model": np.where(is_llm, service, None),
            "x_AgentId": s["agent_id"],
            "x_Requests": s["requests"].astype("int64"),
            "x_InputTokens": s["input_tokens"].astype("int64"),
            "x_OutputTokens": s["output_tokens"].astype("int64"),
            "x_UnpricedRequests": s["unpriced_requests"].fillna(0).astype("int64"),
        }
    )
    return out[COLUMNS]


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
