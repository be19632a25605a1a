"""FinOps FOCUS cost exports: read, validate, normalize to `cloud_costs`, map to tenants.

Accepts FOCUS 1.0, 1.1, 1.2 and the 1.3 renames (`ServiceProviderName` for `ProviderName`,
`HostProviderName` for `PublisherName`), as CSV, gzipped CSV or Parquet, from AWS, Azure or GCP.
Provider-specific `x_` columns are kept: they stay on the raw frame and travel, as one JSON
object, in the normalized frame's `extensions` column.

Reading never raises (`load_focus_file`, via `lib.focus_files`): an unreadable record is one
`quarantine` row, a file that cannot be opened is one `quarantine` row. A row that breaks the
spec — a mandatory column missing from its file, a null or non-decimal cost, an unreadable or
inverted charge period, a charge starting more than `EDGE_TOLERANCE` outside its billing period,
an unknown `ChargeCategory`, a currency that is not an ISO 4217 code — becomes a `quarantine`
row with the reason; the rest of the file loads.

Real-bill shapes kept, not rejected:
- a charge starting up to `EDGE_TOLERANCE` (14 h, time zones) outside its billing period is
  booked on the billing period's first (or last) day;
- a charge whose period spans several UTC days (a monthly fee, a commitment) is amortized: one
  row per day, each cost column split by the time the day overlaps the charge period, with
  largest-remainder rounding at 9 decimals (`lib.nano_split`), so the parts sum exactly;
- billed, effective, list and contracted cost stay distinct, in the billing currency. A row not
  in USD is kept with its `currency` and original amounts and `needs_fx = True`: it must be left
  out of USD totals until it is converted (there is no FX conversion yet).

Tenant mapping, most specific first: the resource id (`mappings.cloud_resource_ids`), the
tenant tag (`allocation.cloud_tenant_tag`, also as AWS's `user:<tag>`, whose value is a tenant id
or a `mappings.cloud_tags` pair), then the sub-account (`mappings.cloud_sub_account_ids`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from cost_pipeline.catalog import CLOUD_COSTS, QUARANTINE
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.focus_files import (
    FOCUS_SUFFIXES,
    RENAMES,
    SOURCE,
    is_focus_file,
    quarantine_frame,
    read_focus_records,
)
from cost_pipeline.lib.nano_split import from_nanos, split_nanos, to_nanos

__all__ = [
    "FOCUS_SUFFIXES",
    "SOURCE",
    "FocusBatch",
    "delivery_is_new",
    "is_focus_file",
    "load_focus_file",
    "read_focus_file",
    "split_focus",
    "supersedes",
]

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
OPTIONAL_DECIMALS = ("ContractedCost", "ConsumedQuantity", "PricingQuantity", "ListUnitPrice")
CHARGE_CATEGORIES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
EDGE_TOLERANCE = pd.Timedelta(hours=14)
USD = "USD"
# Cost columns amortized over a charge period (nano-exact); quantities are split pro rata.
COST_COLUMNS = ("billed_cost", "effective_cost", "list_cost", "contracted_cost")
QUANTITY_COLUMNS = ("consumed_quantity", "pricing_quantity")


@dataclass(frozen=True)
class FocusBatch:
    """One or more FOCUS files read and split: normalized good rows and quarantine rows."""

    rows: pd.DataFrame  # CLOUD_COSTS columns (+ `extensions`), unconformed, one row per day
    quarantine: pd.DataFrame  # QUARANTINE columns
    raw: pd.DataFrame  # the good rows as read, 1.3 names renamed, `x_` columns kept
    unreadable_files: tuple[str, ...] = field(default=())  # files that could not be opened


def read_focus_file(path: str | Path) -> pd.DataFrame:
    """A FOCUS file as read (CSV as text, Parquet typed); raises `ValueError` if unreadable.

    Kept for callers that want the frame only; ingestion uses `load_focus_file`, which never
    raises.
    """
    read = read_focus_records(path, detected_at=datetime.now(UTC))
    if read.error is not None:
        raise ValueError(f"{path}: {read.error}")
    if len(read.quarantine):
        raise ValueError(f"{path}: {len(read.quarantine)} unreadable record(s)")
    return read.records


def load_focus_file(
    path: str | Path, *, config: CostConfig, detected_at: datetime | None = None
) -> FocusBatch:
    """Read, validate and normalize one FOCUS file; never raises.

    Unreadable records and spec-breaking rows are quarantine rows; a file that cannot be opened
    is one quarantine row and is listed in `unreadable_files` (its delivery is incomplete).
    """
    detected_at = detected_at or datetime.now(UTC)
    read = read_focus_records(path, detected_at=detected_at)
    if read.error is not None:
        return FocusBatch(
            rows=_empty_rows(),
            quarantine=read.quarantine,
            raw=pd.DataFrame(),
            unreadable_files=(str(path),),
        )
    try:
        batch = split_focus(
            read.records,
            source_file=str(path),
            config=config,
            detected_at=detected_at,
            lines=read.lines,
        )
    except Exception as exc:  # a defect here must not lose the file: every record is kept
        records = read.records.astype(object).where(read.records.notna(), None)
        batch = FocusBatch(
            rows=_empty_rows(),
            quarantine=quarantine_frame(
                source_file=str(path),
                detected_at=detected_at,
                raw=records.to_json(orient="records", lines=True, date_format="iso").splitlines()
                if len(records)
                else [],
                reasons=[f"could not normalize: {type(exc).__name__}: {exc}"] * len(records),
                lines=read.lines.tolist(),
            ),
            raw=pd.DataFrame(),
        )
    quarantine = pd.concat(
        [q for q in (read.quarantine, batch.quarantine) if len(q)] or [QUARANTINE.empty_frame()],
        ignore_index=True,
    )
    return FocusBatch(rows=batch.rows, quarantine=quarantine, raw=batch.raw)


def _empty_rows() -> pd.DataFrame:
    return CLOUD_COSTS.empty_frame().assign(extensions=pd.Series(dtype=object))


def _text(series: pd.Series) -> pd.Series:
    out = series.astype("string").str.strip()
    return out.where(out.notna() & (out != ""), pd.NA)


def _instants(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        return pd.to_datetime(series, utc=True)
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
    df: pd.DataFrame,
    *,
    source_file: str,
    config: CostConfig,
    detected_at: datetime | None = None,
    lines: pd.Series | None = None,
) -> FocusBatch:
    """Validate a FOCUS frame row by row (vectorized) and normalize the rows that pass.

    `lines` are the records' line numbers in `source_file` (default: header = 1, then 2, 3...).
    """
    detected_at = detected_at or datetime.now(UTC)
    df = df.rename(columns={k: v for k, v in RENAMES.items() if v not in df.columns})
    df = df.reset_index(drop=True)
    lines = (
        pd.Series(np.arange(2, len(df) + 2), dtype="int64")
        if lines is None
        else pd.Series(np.asarray(lines), dtype="int64")
    )
    reasons = pd.Series(pd.NA, index=df.index, dtype="object")

    def flag(mask: pd.Series, reason: str) -> None:
        hit = mask.fillna(False).astype(bool) & reasons.isna()
        reasons[hit] = reason

    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        flag(pd.Series(True, index=df.index), f"missing mandatory column(s): {', '.join(missing)}")
        return _batch(df, reasons, lines, source_file, config, detected_at)

    for c in DECIMAL_COLUMNS:
        text = _text(df[c])
        flag(text.isna(), f"{c} is null (mandatory decimal)")
        flag(text.notna() & pd.to_numeric(text, errors="coerce").isna(), f"{c} is not a decimal")
    for c in OPTIONAL_DECIMALS:
        if c in df.columns:
            text = _text(df[c])
            flag(
                text.notna() & pd.to_numeric(text, errors="coerce").isna(), f"{c} is not a decimal"
            )
    charge_start, charge_end = _instants(df["ChargePeriodStart"]), _instants(df["ChargePeriodEnd"])
    bill_start, bill_end = _instants(df["BillingPeriodStart"]), _instants(df["BillingPeriodEnd"])
    flag(charge_start.isna() | charge_end.isna(), "bad charge period: not an RFC 3339 datetime")
    flag(bill_start.isna() | bill_end.isna(), "bad billing period: not an RFC 3339 datetime")
    flag(charge_end <= charge_start, "bad charge period: end is not after start")
    flag(bill_end <= bill_start, "bad billing period: end is not after start")
    flag(
        (charge_start < bill_start - EDGE_TOLERANCE) | (charge_start >= bill_end + EDGE_TOLERANCE),
        "bad charge period: starts outside its billing period",
    )
    for c in ("ProviderName", "ServiceName", "BillingAccountId"):
        flag(_text(df[c]).isna(), f"{c} is null (mandatory)")
    flag(~_text(df["ChargeCategory"]).isin(CHARGE_CATEGORIES), "unknown ChargeCategory")
    currency = _text(df["BillingCurrency"]).str.upper()
    flag(~currency.str.fullmatch(r"[A-Z]{3}").fillna(False), "BillingCurrency is not ISO 4217")
    return _batch(df, reasons, lines, source_file, config, detected_at)


def _batch(
    df: pd.DataFrame,
    reasons: pd.Series,
    lines: pd.Series,
    source_file: str,
    config: CostConfig,
    detected_at: datetime,
) -> FocusBatch:
    bad = reasons.notna()
    quarantine = quarantine_rows(df[bad], reasons[bad], source_file, detected_at, lines[bad])
    good = df[~bad].reset_index(drop=True)
    return FocusBatch(rows=normalize(good, source_file, config), quarantine=quarantine, raw=good)


def quarantine_rows(
    df: pd.DataFrame,
    reasons: pd.Series,
    source_file: str,
    detected_at: datetime,
    lines: pd.Series | None = None,
) -> pd.DataFrame:
    """QUARANTINE rows: each rejected record whole, as JSON, with its file, line and reason."""
    if df.empty:
        return QUARANTINE.empty_frame()
    records = df.astype(object).where(df.notna(), None)
    raw = records.to_json(orient="records", lines=True, date_format="iso").splitlines()
    days = (
        _instants(df["ChargePeriodStart"]).dt.date
        if "ChargePeriodStart" in df
        else pd.Series(None, index=df.index)
    )
    return quarantine_frame(
        source_file=source_file,
        detected_at=detected_at,
        raw=raw,
        reasons=reasons.astype(str).tolist(),
        lines=[None] * len(df) if lines is None else [int(v) for v in lines],
        days=days.astype(object).where(days.notna(), None).tolist(),
    )


def _optional(df: pd.DataFrame, *names: str) -> pd.Series:
    for name in names:
        if name in df.columns:
            return _text(df[name]).astype(object).where(lambda s: s.notna(), None)
    return pd.Series(None, index=df.index, dtype=object)


def _decimal(df: pd.DataFrame, name: str) -> pd.Series:
    if name not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    return pd.to_numeric(_text(df[name]), errors="coerce").astype("float64")


def normalize(df: pd.DataFrame, source_file: str, config: CostConfig) -> pd.DataFrame:
    """Valid FOCUS rows -> `cloud_costs` rows (plus `extensions`: the `x_` columns as JSON).

    One output row per UTC day a charge period touches (see `amortize`), booked inside the
    billing period.
    """
    if df.empty:
        return _empty_rows()
    start, end = _instants(df["ChargePeriodStart"]), _instants(df["ChargePeriodEnd"])
    tags = _tags_text(df["Tags"]) if "Tags" in df.columns else pd.Series(None, index=df.index)
    currency = _text(df["BillingCurrency"]).str.upper().astype(object)
    out = pd.DataFrame(
        {
            "charge_period_start": start,
            "charge_period_end": end,
            "billing_period_start": _instants(df["BillingPeriodStart"]),
            "billing_period_end": _instants(df["BillingPeriodEnd"]),
            "provider": _text(df["ProviderName"]).astype(object),
            "service_name": _optional(df, "ServiceName"),
            "service_category": _optional(df, "ServiceCategory"),
            "service_subcategory": _optional(df, "ServiceSubcategory"),
            "sub_account_id": _optional(df, "SubAccountId"),
            "resource_id": _optional(df, "ResourceId"),
            "region": _optional(df, "RegionId", "Region", "RegionName"),
            "sku_id": _optional(df, "SkuId"),
            "tags": tags,
            "billed_cost": pd.to_numeric(_text(df["BilledCost"])),
            "effective_cost": pd.to_numeric(_text(df["EffectiveCost"])),
            "list_cost": pd.to_numeric(_text(df["ListCost"])),
            "contracted_cost": _decimal(df, "ContractedCost"),
            "list_unit_price": _decimal(df, "ListUnitPrice"),
            "consumed_quantity": _decimal(df, "ConsumedQuantity"),
            "consumed_unit": _optional(df, "ConsumedUnit"),
            "pricing_quantity": _decimal(df, "PricingQuantity"),
            "pricing_unit": _optional(df, "PricingUnit"),
            "currency": currency,
            "needs_fx": (currency != USD).to_numpy(),
            "charge_category": _text(df["ChargeCategory"]).astype(object),
            "charge_class": _optional(df, "ChargeClass"),
            "charge_frequency": _optional(df, "ChargeFrequency"),
            "charge_description": _optional(df, "ChargeDescription"),
            "invoice_id": _optional(df, "InvoiceId"),
            "billing_account_id": _optional(df, "BillingAccountId"),
            "source_file": source_file,
        }
    )
    out["tenant_id"] = map_cloud_tenants(out, config)
    extras = [c for c in df.columns if c.startswith("x_")]
    out["extensions"] = (
        df[extras]
        .astype(object)
        .where(df[extras].notna(), None)
        .to_json(orient="records", lines=True, date_format="iso")
        .splitlines()
        if extras
        else None
    )
    return amortize(out)


def amortize(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per UTC day each charge period touches, costs split exactly, booked in period.

    A day's share is the time it overlaps the charge period; cost columns are split with
    largest-remainder rounding at 9 decimals (the parts sum exactly to the row), quantities
    pro rata. A day outside the billing period (an edge row within `EDGE_TOLERANCE`) is booked
    on the billing period's first or last day. Expects `charge_period_start/end` and
    `billing_period_start/end` as UTC timestamps; returns `day` and `billing_period_start` as
    dates.
    """
    rows = rows.reset_index(drop=True)

    def naive(name: str) -> np.ndarray:
        return rows[name].dt.tz_convert(None).to_numpy("datetime64[ns]")

    start, end = naive("charge_period_start"), naive("charge_period_end")
    one_day, tick = np.timedelta64(1, "D"), np.timedelta64(1, "ns")
    first = start.astype("datetime64[D]")
    last = (end - tick).astype("datetime64[D]")
    n_days = np.maximum((last - first).astype("int64") + 1, 1)
    owner = np.repeat(np.arange(len(rows)), n_days)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(n_days) - n_days, n_days)
    day_start = (first[owner] + offset.astype("timedelta64[D]")).astype("datetime64[ns]")
    overlap = np.minimum(day_start + one_day, end[owner]) - np.maximum(day_start, start[owner])
    weight = overlap.astype("int64").astype("float64")
    out = rows.iloc[owner].reset_index(drop=True)
    multi = n_days[owner] > 1
    for c in COST_COLUMNS:
        values = rows[c].astype("float64")
        known = values.notna().to_numpy()
        nanos = to_nanos(values.fillna(0.0))
        parts = from_nanos(split_nanos(nanos, owner, weight))
        out[c] = np.where(known[owner], np.where(multi, parts, values.to_numpy()[owner]), np.nan)
    share = weight / np.bincount(owner, weights=weight)[owner]
    for c in QUANTITY_COLUMNS:
        out[c] = out[c].astype("float64") * np.where(multi, share, 1.0)
    bill_first = naive("billing_period_start").astype("datetime64[D]")[owner]
    bill_last = (naive("billing_period_end") - tick).astype("datetime64[D]")[owner]
    booked = np.minimum(np.maximum(day_start.astype("datetime64[D]"), bill_first), bill_last)
    out["day"] = pd.to_datetime(booked).date
    out["billing_period_start"] = rows["billing_period_start"].dt.date.to_numpy()[owner]
    return out.drop(columns=["billing_period_end"])


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


def supersedes(
    delivered_at: datetime, name: str, loaded_at: datetime | None, loaded_name: str | None
) -> bool:
    """Whether a delivery replaces the one loaded for its (provider, billing period).

    The newer delivery wins, by its instant (when its files were written), then by its name
    (export folders sort by run); equal means the same delivery again, its files changed: it
    replaces too. A genuinely older run arriving late loses; the same older *content* written
    again as a new delivery is newer and wins, provided the caller does not skip it as already
    seen (`delivery_is_new`).
    """
    if loaded_at is None:
        return True
    return (pd.Timestamp(delivered_at), name) >= (pd.Timestamp(loaded_at), loaded_name or "")


def delivery_is_new(files: dict[str, str], ingested: set[tuple[str, str]]) -> bool:
    """Whether a delivery (file path -> sha256) has anything not ingested *as this delivery*.

    Files are identified by path and content together: the same bytes delivered again under a
    new delivery folder are a new delivery (a provider restating back to an earlier version),
    which a content-only check would wrongly skip.
    """
    return any((path, digest) not in ingested for path, digest in files.items())
