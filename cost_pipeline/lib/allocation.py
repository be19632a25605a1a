"""Cloud and Kubernetes cost per tenant and day: direct cost plus a share of what no tenant owns.

Each source (`cloud` FOCUS rows at `EffectiveCost`, `k8s` allocations at `totalCost`) is
turned into a ledger of (day, category, provider, tenant or none, amount). Rows mapped to a
configured tenant are that tenant's *direct* cost. Everything else — unmapped cloud rows, the
shared `platform` namespace, `__idle__`, `__unallocated__` — forms a pool per (day, source,
category, provider) that is spread by `config.allocation.rule`:

- `proportional` (default): by each tenant's direct cost of the same source and day (credits
  do not earn a negative share: weights are clipped at 0);
- `even`: equally over every configured tenant;
- `tenant`: all of it to `config.allocation.tenant` (e.g. a `platform` tenant).

A day whose source has no positive direct cost falls back to `even`. Shares are rounded to nano-USD
and the rounding residue goes to the largest share, so per source and day the allocated total
equals the source total (to far better than the 1e-6 USD the check demands).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from cost_pipeline.catalog import DAILY_COST_SUMMARY, INFRA_COST_ALLOCATION
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.schemas import MONEY_DECIMALS

IDLE = "__idle__"
UNALLOCATED = "__unallocated__"
K8S_PROVIDER = "Kubernetes"
CONSERVATION_TOLERANCE_USD = 1e-6
LEDGER_COLUMNS = ["day", "source", "category", "provider", "tenant_id", "amount"]
ALLOCATION_COLUMNS = INFRA_COST_ALLOCATION.column_names


def map_k8s_tenants(alloc: pd.DataFrame, config: CostConfig) -> pd.Series:
    """Tenant id per allocation: namespace mapping, then the tenant label; idle stays unmapped.

    The label is read from the allocation's `labels` (JSON text or dict), where Kubecost turns
    `-` and `.` in label names into `_`; its value is a tenant id or a `mappings.k8s_labels` pair.
    """
    tenant = alloc["namespace"].map(config.mapping("k8s_namespaces")).astype(object)
    label = config.allocation.k8s_tenant_label
    sanitized = label.replace("-", "_").replace(".", "_").replace("/", "_")
    labels = alloc["labels"].map(lambda v: json.dumps(v) if isinstance(v, dict) else v)
    pattern = r'"(?:' + "|".join(sorted({label, sanitized})) + r')"\s*:\s*"([^"]*)"'
    value = labels.astype("string").str.extract(pattern, expand=False)
    known = set(config.tenants_by_id)
    tenant = tenant.where(tenant.notna(), value.where(value.isin(known)).astype(object))
    pairs = (sanitized + "=" + value).map(config.mapping("k8s_labels")).astype(object)
    tenant = tenant.where(tenant.notna(), pairs)
    special = alloc["allocation_name"].isin([IDLE, UNALLOCATED]) | alloc["namespace"].isin(
        [IDLE, UNALLOCATED]
    )
    tenant = tenant.where(~special & tenant.notna(), None)
    return tenant


def cloud_ledger(cloud_costs: pd.DataFrame) -> pd.DataFrame:
    """The `cloud` source's ledger: one entry per FOCUS row at its effective (amortized) cost."""
    return pd.DataFrame(
        {
            "day": cloud_costs["day"],
            "source": "cloud",
            "category": cloud_costs["service_category"].fillna("Other"),
            "provider": cloud_costs["provider"],
            "tenant_id": cloud_costs["tenant_id"],
            "amount": cloud_costs["effective_cost"].astype("float64"),
        },
        columns=LEDGER_COLUMNS,
    )


def k8s_ledger(k8s_allocations: pd.DataFrame) -> pd.DataFrame:
    """The `k8s` source's ledger: one entry per allocation, categorized by cluster."""
    return pd.DataFrame(
        {
            "day": k8s_allocations["day"],
            "source": "k8s",
            "category": k8s_allocations["cluster"].fillna("cluster"),
            "provider": K8S_PROVIDER,
            "tenant_id": k8s_allocations["tenant_id"],
            "amount": k8s_allocations["total_cost"].astype("float64"),
        },
        columns=LEDGER_COLUMNS,
    )


def _weights(direct: pd.DataFrame, keys: pd.DataFrame, config: CostConfig) -> pd.DataFrame:
    """Per (day, source) of a pool: the receiving tenants and their weights."""
    tenants = pd.DataFrame({"tenant_id": list(config.tenants_by_id) or [UNALLOCATED], "w": 1.0})
    rule = config.allocation.rule
    if rule == "tenant":
        named = pd.DataFrame({"tenant_id": [config.allocation.tenant], "w": [1.0]})
        return keys.merge(named, how="cross")
    if rule == "even":
        return keys.merge(tenants, how="cross")
    w = direct.groupby(["day", "source", "tenant_id"], as_index=False)["amount"].sum()
    w = w.assign(w=w["amount"].clip(lower=0))[["day", "source", "tenant_id", "w"]]
    w = keys.merge(w[w["w"] > 0], on=["day", "source"])
    covered = w[["day", "source"]].drop_duplicates().assign(_covered=True)
    rest = keys.merge(covered, on=["day", "source"], how="left")
    rest = rest[rest["_covered"].isna()].drop(columns="_covered")
    return pd.concat([w, rest.merge(tenants, how="cross")], ignore_index=True)


def allocate(ledger: pd.DataFrame, config: CostConfig) -> pd.DataFrame:
    """Spread each source's unowned cost over tenants; rows in `ALLOCATION_COLUMNS` order.

    One row per (day, tenant, source, category, provider) with `direct_cost`, `shared_cost`
    and `cost_usd = direct_cost + shared_cost`.
    """
    if ledger.empty:
        return pd.DataFrame(columns=ALLOCATION_COLUMNS)
    ledger = ledger.assign(provider=ledger["provider"].fillna(""))
    owned = ledger["tenant_id"].isin(list(config.tenants_by_id))
    direct, unowned = ledger[owned], ledger[~owned]
    group = ["day", "tenant_id", "source", "category", "provider"]
    direct_rows = direct.groupby(group, as_index=False)["amount"].sum()
    direct_rows = direct_rows.rename(columns={"amount": "direct_cost"})

    pool_keys = ["day", "source", "category", "provider"]
    pools = unowned.groupby(pool_keys, as_index=False)["amount"].sum()
    pools["pool"] = np.arange(len(pools))
    if len(pools):
        keys = pools[["day", "source"]].drop_duplicates()
        shares = pools.merge(_weights(direct, keys, config), on=["day", "source"])
        total_w = shares.groupby("pool")["w"].transform("sum")
        exact = shares["amount"] * shares["w"] / total_w
        shares["shared_cost"] = exact.round(MONEY_DECIMALS)
        # Put the rounding residue on each pool's largest share so the pool sums exactly.
        residue = shares["amount"] - shares.groupby("pool")["shared_cost"].transform("sum")
        largest = exact.abs().groupby(shares["pool"]).idxmax()
        shares.loc[largest.to_numpy(), "shared_cost"] += residue.loc[largest.to_numpy()]
        shared_rows = shares.groupby(group, as_index=False)["shared_cost"].sum()
    else:
        shared_rows = pd.DataFrame(columns=[*group, "shared_cost"])

    out = direct_rows.merge(shared_rows, on=group, how="outer")
    out[["direct_cost", "shared_cost"]] = (
        out[["direct_cost", "shared_cost"]].astype("float64").fillna(0.0)
    )
    out["cost_usd"] = out["direct_cost"] + out["shared_cost"]
    out["provider"] = out["provider"].replace("", None)
    out = out.sort_values(["day", "source", "tenant_id", "category"], kind="stable")
    return out[ALLOCATION_COLUMNS].reset_index(drop=True)


def conservation(ledger: pd.DataFrame, allocation: pd.DataFrame) -> pd.DataFrame:
    """Per (day, source): the source total, the allocated total, the gap and whether it holds."""
    source = ledger.groupby(["day", "source"])["amount"].sum().rename("source_total_usd")
    allocated = allocation.groupby(["day", "source"])["cost_usd"].sum().rename("allocated_usd")
    out = pd.concat([source, allocated], axis=1).fillna(0.0).reset_index()
    out["gap_usd"] = (out["allocated_usd"] - out["source_total_usd"]).abs()
    out["conserved"] = out["gap_usd"] <= CONSERVATION_TOLERANCE_USD
    return out


def infra_summary_rows(infra_cost_allocation: pd.DataFrame) -> pd.DataFrame:
    """`daily_cost_summary` rows of categories `cloud` and `k8s` from the day's allocation.

    `cost_category` is the source, `model_or_service` the category (cloud service category
    or k8s cluster), `provider` the cloud provider (when the allocation frame carries it) or
    `Kubernetes`; requests and tokens are 0.
    """
    df = infra_cost_allocation
    if df.empty:
        return DAILY_COST_SUMMARY.empty_frame()
    if "provider" in df.columns:
        provider = df["provider"]
    else:
        provider = pd.Series(None, index=df.index, dtype=object)
    provider = provider.where(provider.notna(), df["source"].map({"k8s": K8S_PROVIDER}))
    frame = pd.DataFrame(
        {
            "day": df["day"],
            "tenant_id": df["tenant_id"],
            "cost_category": df["source"],
            "provider": provider.fillna(""),
            "model_or_service": df["category"].fillna(""),
            "cost_usd": df["cost_usd"].astype("float64"),
        }
    )
    keys = ["day", "tenant_id", "cost_category", "provider", "model_or_service"]
    out = frame.groupby(keys, as_index=False)["cost_usd"].sum()
    for c in ("provider", "model_or_service"):
        out[c] = out[c].replace("", None)
    out = out.assign(requests=0, input_tokens=0, output_tokens=0, unpriced_requests=0)
    return DAILY_COST_SUMMARY.conform(out)
