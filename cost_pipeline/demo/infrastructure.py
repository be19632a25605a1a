"""The demo company's infrastructure: AWS- and GCP-style FOCUS exports and a Kubecost cluster.

Scale follows the demo's LLM spend per tier (roughly $5, $40, $260 and $2,600 a month for free,
basic, pro and enterprise), so a tenant's infrastructure costs about what its LLM calls cost:
half in the cloud (AWS FOCUS 1.2 gzipped CSV with `x_` columns and `user:tenant` tags; GCP
FOCUS 1.0 Parquet with labels), half on Kubernetes (namespaces `tenant-<id>`, a shared
`platform` namespace, idle and `kube-system/__unallocated__`).

Each month gets two deliveries per provider: a mid-month one (charges up to the 15th, later
restated) and the final one after month end covering the whole month. A FOCUS ingester must
keep only the newer; file modification times are set to the delivery instants.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cost_pipeline.lib.config import CostConfig

# USD per day of infrastructure (cloud + Kubernetes) by tier, about the tier's LLM spend.
TIER_DAILY_INFRA_USD = {"free": 0.15, "basic": 1.2, "pro": 8.0, "enterprise": 80.0}
CLUSTER = "prod-1"
# (provider, service, category, share of the tenant's cloud cost, effective/billed, x_code)
AWS_SERVICES = [
    ("Amazon Elastic Compute Cloud", "Compute", 0.5, 0.92, "AmazonEC2"),
    ("Amazon Relational Database Service", "Databases", 0.3, 1.0, "AmazonRDS"),
]
GCP_SERVICES = [
    ("Cloud Storage", "Storage", 0.1, 1.0),
    ("BigQuery", "Analytics", 0.1, 1.0),
]
RESTATEMENT_FACTOR = 0.97  # the mid-month delivery under-reports; the final one restates it


def demo_days(config: CostConfig) -> list[date]:
    return config.demo.window(datetime.now(UTC).date())


def infra_incidents(config: CostConfig) -> list[dict]:
    """The demo's two labelled infrastructure incidents, near the end of the demo window so
    the last materialized days show them: Amazon EC2 of the first enterprise tenant at 6x for
    one day (3 days before the window's end), and the Kubernetes namespace of the first pro
    tenant at 10x for one day (2 days before the end)."""
    days = demo_days(config)
    if len(days) < 3 or not config.tenants:
        return []
    by_tier = {t.tier: t.id for t in reversed(config.tenants)}
    first = config.tenants[0].id
    return [
        {
            "kind": "cloud_service_spike",
            "tenant_id": by_tier.get("enterprise", first),
            "driver": "service:Amazon Elastic Compute Cloud",
            "service": "Amazon Elastic Compute Cloud",
            "day": days[-3],
            "multiplier": 6.0,
        },
        {
            "kind": "namespace_spike",
            "tenant_id": by_tier.get("pro", first),
            "driver": f"namespace:tenant-{by_tier.get('pro', first)}",
            "day": days[-2],
            "multiplier": 10.0,
        },
    ]


def tenant_daily_infra(config: CostConfig) -> pd.Series:
    """Typical daily infrastructure USD per tenant id (cloud + Kubernetes)."""
    return pd.Series(
        {t.id: TIER_DAILY_INFRA_USD.get(t.tier, 1.0) for t in config.tenants}, dtype="float64"
    )


def _rng(config: CostConfig, day: date, salt: int) -> np.random.Generator:
    return np.random.default_rng([config.demo.seed, day.toordinal(), salt])


def _jitter(rng: np.random.Generator, n: int, day: date) -> np.ndarray:
    weekend = 0.85 if day.weekday() >= 5 else 1.0
    return np.clip(rng.normal(1.0, 0.08, n), 0.6, 1.4) * weekend


# -- Kubernetes ----------------------------------------------------------------------------


def _allocation(name: str, namespace: str, labels: dict, day: date, costs: dict) -> dict:
    start = datetime.combine(day, time(), tzinfo=UTC)
    window = {"start": start.isoformat().replace("+00:00", "Z")}
    window["end"] = (start + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    body = {k: round(float(v), 6) for k, v in costs.items()}
    return {
        "name": name,
        "properties": {"cluster": CLUSTER, "namespace": namespace, "labels": labels},
        "window": window,
        "start": window["start"],
        "end": window["end"],
        "minutes": 1440,
        **body,
        "totalCost": round(sum(body.values()), 6),
    }


def kubecost_allocation_response(
    config: CostConfig, day: date, *, tenant_label: str = "tenant"
) -> dict[str, Any]:
    """The body Kubecost would answer for one day, aggregated by namespace and `tenant_label`."""
    label = tenant_label.replace("-", "_").replace(".", "_").replace("/", "_")
    base = tenant_daily_infra(config) * 0.5
    rng = _rng(config, day, 1)
    totals = base.to_numpy() * _jitter(rng, len(base), day)
    for inc in infra_incidents(config):
        if inc["kind"] == "namespace_spike" and inc["day"] == day:
            totals = totals * np.where(base.index == inc["tenant_id"], inc["multiplier"], 1.0)
    split = {"cpuCost": 0.45, "ramCost": 0.25, "pvCost": 0.12, "networkCost": 0.08}
    allocations: dict[str, dict] = {}
    for (tenant, total), tier in zip(
        zip(base.index, totals, strict=True), [t.tier for t in config.tenants], strict=True
    ):
        costs = {k: total * v for k, v in split.items()}
        costs["gpuCost"] = total * 0.1 if tier == "enterprise" else 0.0
        costs["loadBalancerCost"] = total * (0.0 if tier == "enterprise" else 0.1)
        name = f"tenant-{tenant}/{tenant}"
        allocations[name] = _allocation(name, f"tenant-{tenant}", {label: tenant}, day, costs)
    owned = float(totals.sum())
    shared = {
        "platform/__unallocated__": ("platform", owned * 0.12),
        "kube-system/__unallocated__": ("kube-system", owned * 0.03),
        "__idle__": ("__idle__", owned * 0.15 * float(rng.uniform(0.8, 1.2))),
    }
    for name, (namespace, total) in shared.items():
        costs = {"cpuCost": total * 0.6, "ramCost": total * 0.4}
        allocations[name] = _allocation(name, namespace, {}, day, costs)
    return {"code": 200, "data": [allocations]}


# -- FOCUS exports -------------------------------------------------------------------------


def _iso(ts: pd.Series | pd.Timestamp) -> Any:
    if isinstance(ts, pd.Series):
        return ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _month_bounds(month: pd.Period) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = month.start_time.tz_localize("UTC")
    return start, (month + 1).start_time.tz_localize("UTC")


def focus_rows(
    config: CostConfig, days: list[date], *, flavor: str, factor: float = 1.0
) -> pd.DataFrame:
    """FOCUS rows of the given days (one month), AWS (`aws`, 1.2) or GCP (`gcp`, 1.0) style."""
    tenants = tenant_daily_infra(config) * 0.5
    frames = []
    for day in days:
        rng = _rng(config, day, 2 if flavor == "aws" else 3)
        t = pd.DataFrame({"tenant": tenants.index, "base": tenants.to_numpy()})
        t["base"] *= _jitter(rng, len(t), day) * factor
        t["day"] = pd.Timestamp(day, tz="UTC")
        frames.append(t)
    per_day = pd.concat(frames, ignore_index=True)
    month = pd.Period(days[0], freq="M")
    bill_start, bill_end = _month_bounds(month)
    if flavor == "aws":
        services = pd.DataFrame(AWS_SERVICES, columns=["svc", "cat", "share", "eff", "code"])
        shared_services = [("Amazon Virtual Private Cloud", "Networking", 0.10, "AmazonVPC")]
    else:
        services = pd.DataFrame(GCP_SERVICES, columns=["svc", "cat", "share", "eff"])
        services["code"] = None
        shared_services = [("Cloud Monitoring", "Management and Governance", 0.02, None)]
    rows = per_day.merge(services, how="cross")
    rows["billed"] = rows["base"] * rows["share"]
    for inc in infra_incidents(config):
        if inc["kind"] == "cloud_service_spike" and flavor == "aws":
            hit = (
                (rows["day"] == pd.Timestamp(inc["day"], tz="UTC"))
                & (rows["tenant"] == inc["tenant_id"])
                & (rows["svc"] == inc["service"])
            )
            rows.loc[hit, "billed"] *= inc["multiplier"]
    rows["effective"] = rows["billed"] * rows["eff"]
    daily = per_day.groupby("day", as_index=False)["base"].sum()
    shared = daily.merge(
        pd.DataFrame(shared_services, columns=["svc", "cat", "share", "code"]), how="cross"
    )
    shared["billed"] = shared["base"] * shared["share"]
    shared["effective"] = shared["billed"]
    shared["tenant"] = None
    rows = pd.concat([rows, shared], ignore_index=True)
    rows["billed"] = rows["billed"].round(6)
    rows["effective"] = rows["effective"].round(6)
    tagged = rows["tenant"].notna()
    out = pd.DataFrame(
        {
            "BilledCost": rows["billed"],
            "EffectiveCost": rows["effective"],
            "ListCost": (rows["billed"] * 1.1).round(6),
            "ContractedCost": rows["billed"],
            "PricingQuantity": (rows["billed"] * 10).round(3),
            "PricingUnit": "Hours",
            "BillingPeriodStart": _iso(bill_start),
            "BillingPeriodEnd": _iso(bill_end),
            "ChargePeriodStart": _iso(rows["day"]),
            "ChargePeriodEnd": _iso(rows["day"] + pd.Timedelta(days=1)),
            "BillingAccountId": "123456789012" if flavor == "aws" else "01ABCD-23EF45-6789AB",
            "BillingAccountName": config.organization,
            "BillingCurrency": "USD",
            "ChargeCategory": "Usage",
            "ChargeClass": None,
            "ChargeDescription": rows["svc"] + " usage",
            "ServiceCategory": rows["cat"],
            "ServiceName": rows["svc"],
            "ResourceId": np.where(
                tagged,
                "res-" + rows["tenant"].fillna("") + "-" + rows["cat"],
                "shared-" + rows["cat"],
            ),
        }
    )
    if flavor == "aws":
        out["InvoiceIssuerName"] = out["ProviderName"] = out["PublisherName"] = "AWS"
        out["SubAccountId"] = "210987654321"
        out["RegionId"] = "us-east-1"
        out["InvoiceId"] = f"INV-{month}"
        out["Tags"] = np.where(tagged, '{"user:tenant": "' + rows["tenant"].fillna("") + '"}', "{}")
        out["x_ServiceCode"] = rows["code"]
        out["x_UsageType"] = "USE1-" + rows["cat"]
    else:
        out["InvoiceIssuerName"] = out["ProviderName"] = out["PublisherName"] = "Google Cloud"
        out["SubAccountId"] = "demo-prod"
        out["RegionId"] = "europe-west1"
        out["Tags"] = np.where(
            tagged,
            '{"env": "prod", "tenant": "' + rows["tenant"].fillna("") + '"}',
            '{"env": "prod"}',
        )
        out["x_ProjectId"] = "demo-prod"
    return out


def _write(df: pd.DataFrame, path: Path, delivered_at: datetime) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, compression="gzip" if path.name.endswith(".gz") else None)
    stamp = delivered_at.timestamp()
    os.utime(path, (stamp, stamp))
    return path


def write_demo_focus_exports(config: CostConfig, root: str | Path) -> list[Path]:
    """Write (once) every demo delivery under `root`; returns the files, oldest delivery first."""
    root = Path(root)
    days = demo_days(config)
    by_month: dict[pd.Period, list[date]] = {}
    for d in days:
        by_month.setdefault(pd.Period(d, freq="M"), []).append(d)
    written: list[tuple[datetime, Path]] = []
    for month, month_days in sorted(by_month.items()):
        first = month.start_time.date()
        mid = datetime.combine(first + timedelta(days=15), time(6), tzinfo=UTC)
        final = datetime.combine(
            (month + 1).start_time.date() + timedelta(days=2), time(6), tzinfo=UTC
        )
        for delivered_at, covered, factor in (
            (mid, [d for d in month_days if d < mid.date()], RESTATEMENT_FACTOR),
            (final, month_days, 1.0),
        ):
            if not covered:
                continue
            stamp = delivered_at.strftime("%Y%m%dT%H%M%SZ")
            targets = {
                "aws": root
                / f"aws/cur-focus/data/BILLING_PERIOD={month}/{stamp}/focus-00001.csv.gz",
                "gcp": root / f"gcp/focus/{month}/{stamp}/focus-000.parquet",
            }
            for flavor, path in targets.items():
                if not path.exists():
                    rows = focus_rows(config, covered, flavor=flavor, factor=factor)
                    _write(rows, path, delivered_at)
                written.append((delivered_at, path))
    return [p for _, p in sorted(written, key=lambda x: (x[0], str(x[1])))]
