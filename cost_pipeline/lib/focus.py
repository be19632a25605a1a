"""FinOps FOCUS cost exports: read, validate, normalize to `cloud_costs`, map to tenants.

Accepts FOCUS 1.0, 1.1, 1.2 and the 1.3 renames (`ServiceProviderName` for `ProviderName`,
`HostProviderName` for `PublisherName`), as CSV, gzipped CSV or Parquet, from AWS, Azure or GCP.
Provider-specific `x_` columns are kept: they stay on the raw frame and travel, as one JSON
object, in the normalized frame's `extensions` column.

A row that breaks the spec — a mandatory column missing from its file, a null or non-decimal
cost, an unreadable or inverted charge period, a charge outside its billing period, an unknown
`ChargeCategory`, a non-USD currency (there is no FX conversion) — becomes a `quarantine` row
with the reason; the rest of the file loads.

Tenant mapping, most specific first: the resource id (`mappings.cloud_resource_ids`), the
tenant tag (`allocation.cloud_tenant_tag`, also as AWS's `user:<tag>`, whose value is a tenant id
or a `mappings.cloud_tags` pair), then the sub-account (`mappings.cloud_sub_account_ids`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from cost_pipeline.catalog import CLOUD_COSTS, QUARANTINE
from cost_pipeline.lib.config import CostConfig

SOURCE = "cloud_costs"
FOCUS_SUFFIXES = (".csv", ".csv.gz", ".parquet")

# FOCUS 1.3 names -> the 1.0-1.2 names this module works with.
RENAMES = {"ServiceProviderName": "ProviderName", "HostProviderName": "PublisherName"}

# What a row needs to become a `cloud_costs` row; mandatory in every FOCUS version we accept.
REQUIRED_COLUMNS = (
    "BilledCost",
    "EffectiveCost",
    "ListCost",
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "BillingAccountId",
    "BillingCurrency",
    "ChargeCategory",
    "ProviderName",
    "ServiceName",
)
DECIMAL_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost")
CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")

# One row per loaded delivery scope: which delivery is the current truth of a billing period.


@dataclass(frozen=True)
class FocusBatch:
    """One or more FOCUS files read and split: normalized good rows and quarantine rows."""

    rows: pd.DataFrame  # CLOUD_COSTS columns (+ `extensions`), unconformed
    quarantine: pd.DataFrame  # QUARANTINE columns
    raw: pd.DataFrame  # the good rows as read, 1.3 names renamed, `x_` columns kept


def is_focus_file(path: Path) -> bool:
    return path.name.lower().endswith(FOCUS_SUFFIXES)


def read_focus_file(path: str | Path) -> pd.DataFrame:
    """A FOCUS file as read: CSV values as text (decimals keep their digits), Parquet as typed."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".parquet"):
        df = pd.read_parquet(path)
    elif name.endswith((".csv", ".csv.gz")):
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    else:
        raise ValueError(f"{path}: not a FOCUS file (expected {', '.join(FOCUS_SUFFIXES)})")
    return df.rename(columns={k: v for k, v in RENAMES.items() if v not in df.columns})


def _text(series: pd.Series) -> pd.Series:
    out = series.astype("string").str.strip()
    return out.where(out.notna() & (out != ""), pd.NA)


def _instants(series: pd.Series) -> pd.Series:
    return pd.to_datetime(_text(series), utc=True, errors="coerce", format="ISO8601")


def _tags_text(series: pd.Series) -> pd.Series:
    """Tags as JSON text; Parquet exports may carry a map (list of pairs) or a struct instead."""

    def one(value: object) -> object:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return None
        if isinstance(value, str):
            return value
        pairs = dict(value) if not isinstance(value, dict) else value
        return json.dumps({str(k): v for k, v in pairs.items() if v is not None}, sort_keys=True)

    if series.dtype == object and not series.map(lambda v: isinstance(v, str) or v is None).all():
        return series.map(one)
    return _text(series).astype(object).where(lambda s: s.notna(), None)


def split_focus(
    df: pd.DataFrame, *, source_file: str, config: CostConfig, detected_at: datetime | None = None
) -> FocusBatch:
    """Validate a FOCUS frame row by row (vectorized) and normalize the rows that pass."""
    detected_at = detected_at or datetime.now(UTC)
    df = df.rename(columns={k: v for k, v in RENAMES.items() if v not in df.columns})
    df = df.reset_index(drop=True)
    reasons = pd.Series(pd.NA, index=df.index, dtype="object")

    def flag(mask: pd.Series, reason: str) -> None:
        hit = mask.fillna(False).astype(bool) & reasons.isna()
        reasons[hit] = reason

    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        flag(pd.Series(True, index=df.index), f"missing mandatory column(s): {', '.join(missing)}")
        return _batch(df, reasons, source_file, config, detected_at)

    amounts = {}
    for c in DECIMAL_COLUMNS:
        text = _text(df[c])
        amounts[c] = pd.to_numeric(text, errors="coerce")
        flag(text.isna(), f"{c} is null (mandatory decimal)")
        flag(text.notna() & amounts[c].isna(), f"{c} is not a decimal")
    charge_start, charge_end = _instants(df["ChargePeriodStart"]), _instants(df["ChargePeriodEnd"])
    bill_start, bill_end = _instants(df["BillingPeriodStart"]), _instants(df["BillingPeriodEnd"])
    flag(charge_start.isna() | charge_end.isna(), "bad charge period: not an RFC 3339 datetime")
    flag(bill_start.isna() | bill_end.isna(), "bad billing period: not an RFC 3339 datetime")
    flag(charge_end <= charge_start, "bad charge period: end is not after start")
    flag(bill_end <= bill_start, "bad billing period: end is not after start")
    flag(
        (charge_start < bill_start) | (charge_start >= bill_end),
        "bad charge period: starts outside its billing period",
    )
    for c in ("ProviderName", "ServiceName", "BillingAccountId"):
        flag(_text(df[c]).isna(), f"{c} is null (mandatory)")
    flag(~_text(df["ChargeCategory"]).isin(CHARGE_CATEGORIES), "unknown ChargeCategory")
    currency = _text(df["BillingCurrency"]).str.upper()
    flag(currency != "USD", "BillingCurrency is not USD (no FX conversion configured)")
    return _batch(df, reasons, source_file, config, detected_at)


def _batch(
    df: pd.DataFrame,
    reasons: pd.Series,
    source_file: str,
    config: CostConfig,
    detected_at: datetime,
) -> FocusBatch:
    bad = reasons.notna()
    quarantine = quarantine_rows(df[bad], reasons[bad], source_file, detected_at)
    good = df[~bad].reset_index(drop=True)
    return FocusBatch(rows=normalize(good, source_file, config), quarantine=quarantine, raw=good)


def quarantine_rows(
    df: pd.DataFrame, reasons: pd.Series, source_file: str, detected_at: datetime
) -> pd.DataFrame:
    """QUARANTINE rows: each rejected record whole, as JSON, with its file and reason."""
    if df.empty:
        return QUARANTINE.empty_frame()
    raw = df.astype(object).where(df.notna(), None).to_json(orient="records", lines=True)
    days = (
        _instants(df["ChargePeriodStart"]).dt.date
        if "ChargePeriodStart" in df
        else pd.Series(None, index=df.index)
    )
    out = pd.DataFrame(
        {
            "source": SOURCE,
            "day": days.astype(object).where(days.notna(), None).to_numpy(),
            "raw": raw.splitlines(),
            "reason": (f"{Path(source_file).name}: " + reasons.astype(str)).to_numpy(),
            "detected_at": detected_at,
        }
    )
    return QUARANTINE.conform(out)


def _optional(df: pd.DataFrame, *names: str) -> pd.Series:
    for name in names:
        if name in df.columns:
            return _text(df[name]).astype(object).where(lambda s: s.notna(), None)
    return pd.Series(None, index=df.index, dtype=object)


def normalize(df: pd.DataFrame, source_file: str, config: CostConfig) -> pd.DataFrame:
    """Valid FOCUS rows -> `cloud_costs` columns (plus `extensions`: the `x_` columns as JSON)."""
    if df.empty:
        return CLOUD_COSTS.empty_frame().assign(extensions=pd.Series(dtype=object))
    start = _instants(df["ChargePeriodStart"])
    tags = _tags_text(df["Tags"]) if "Tags" in df.columns else pd.Series(None, index=df.index)
    out = pd.DataFrame(
        {
            "charge_period_start": start,
            "day": start.dt.date,
            "billing_period_start": _instants(df["BillingPeriodStart"]).dt.date,
            "provider": _text(df["ProviderName"]).astype(object),
            "service_name": _optional(df, "ServiceName"),
            "service_category": _optional(df, "ServiceCategory"),
            "sub_account_id": _optional(df, "SubAccountId"),
            "resource_id": _optional(df, "ResourceId"),
            "region": _optional(df, "RegionId", "Region", "RegionName"),
            "tags": tags,
            "billed_cost": pd.to_numeric(_text(df["BilledCost"])),
            "effective_cost": pd.to_numeric(_text(df["EffectiveCost"])),
            "list_cost": pd.to_numeric(_text(df["ListCost"])),
            "currency": _text(df["BillingCurrency"]).str.upper().astype(object),
            "charge_category": _text(df["ChargeCategory"]).astype(object),
            "invoice_id": _optional(df, "InvoiceId"),
            "source_file": source_file,
        }
    )
    out["tenant_id"] = map_cloud_tenants(out, config)
    extras = [c for c in df.columns if c.startswith("x_")]
    out["extensions"] = (
        df[extras]
        .astype(object)
        .where(df[extras].notna(), None)
        .to_json(orient="records", lines=True)
        .splitlines()
        if extras
        else None
    )
    return out


def _tag_value(tags: pd.Series, key: str) -> pd.Series:
    """The value of tag `key` (or AWS's `user:<key>`) in JSON tag text, vectorized by regex."""
    pattern = r'"(?:user:)?' + re.escape(key) + r'"\s*:\s*"([^"]*)"'
    return tags.astype("string").str.extract(pattern, expand=False)


def map_cloud_tenants(rows: pd.DataFrame, config: CostConfig) -> pd.Series:
    """Tenant id per normalized row (resource id, then tenant tag, then sub-account), or None."""
    known = set(config.tenants_by_id)
    tenant = pd.Series(pd.NA, index=rows.index, dtype="object")

    def fill(candidates: pd.Series) -> None:
        nonlocal tenant
        tenant = tenant.where(tenant.notna(), candidates)

    fill(rows["resource_id"].map(config.mapping("cloud_resource_ids")))
    tags = rows["tags"]
    tag_pairs = config.mapping("cloud_tags")  # "key=value" -> tenant
    tag_key = config.allocation.cloud_tenant_tag
    value = _tag_value(tags, tag_key)
    fill(value.where(value.isin(known)).astype(object))
    for key in sorted({pair.split("=", 1)[0] for pair in tag_pairs}):
        pairs = key + "=" + _tag_value(tags, key)
        fill(pairs.map(tag_pairs).astype(object))
    fill(rows["sub_account_id"].map(config.mapping("cloud_sub_account_ids")))
    return tenant.where(tenant.notna(), None)
