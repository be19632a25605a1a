"""Scenario families with the shapes real bills have, for `make eval` (not the demo generator).

Each family gives `daily_cost_summary`-shaped rows (plus FOCUS `charge_category` /
`charge_frequency` for non-usage charges), the cloud / k8s detail rows the anomaly asset reads,
and labelled incidents. Noise is heavy-tailed (Student-t in log space), levels drift as a
random walk, some tenants are sparse; none of it is tuned to the demo company.

Families: dense (weekly), ramp, collapse, churn, sparse, month_start_fee, credits, step (a
sustained 1.3-1.9x rise), drop (to 0.2-0.6x), cloud_spike (one cloud service 3-8x for 1-3 days,
cloud-only tenant), k8s_spike (one namespace 5-15x, Kubernetes-only tenant). Each incident
carries its true dollar impact (`impact_usd`), so the evaluation can tell which ones reach the
alert threshold.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

FAMILIES = (
    "dense",
    "ramp",
    "collapse",
    "churn",
    "sparse",
    "month_start_fee",
    "credits",
    "step",
    "drop",
    "cloud_spike",
    "k8s_spike",
)
ANOMALY_FAMILIES = ("step", "drop", "cloud_spike", "k8s_spike", "collapse")
WEEKLY = np.array([1.15, 1.2, 1.2, 1.15, 1.05, 0.6, 0.55])


def _base(rng: np.random.Generator, n: int, days: int, start: date) -> np.ndarray:
    """Dense daily usage (n x days): lognormal levels, weekly shape of varying strength, a
    random-walk drift and Student-t (df 3) multiplicative noise."""
    level = rng.lognormal(3.0, 1.3, n)
    dows = np.array([(start + timedelta(days=i)).weekday() for i in range(days)])
    strength = rng.uniform(0, 1, n)
    weekly = 1 + strength[:, None] * (WEEKLY[dows][None, :] - 1)
    drift = np.cumsum(rng.normal(0, 0.01, (n, days)), axis=1)
    noise_scale = rng.uniform(0.05, 0.3, n)
    noise = noise_scale[:, None] * np.clip(rng.standard_t(3, (n, days)), -6, 6)
    return level[:, None] * weekly * np.exp(drift + noise)


def family(
    name: str, n: int, start: date, days: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(summary rows, detail rows, incidents) of `n` tenants of one family."""
    rng = np.random.default_rng([seed, FAMILIES.index(name)])
    y = _base(rng, n, days, start)
    t = np.arange(days)
    tenants = [f"{name}-{i:03d}" for i in range(n)]
    extra: list[dict] = []
    incidents: list[dict] = []
    detail = pd.DataFrame(columns=["day", "tenant_id", "driver", "cost_usd"])
    category = "llm"
    at = rng.integers(60, days - 10, n)
    if name == "ramp":
        growth = rng.uniform(0.005, 0.03, n)
        y *= np.exp(growth[:, None] * np.clip(t[None, :] - at[:, None] + 30, 0, None))
    elif name in ("collapse", "churn", "drop", "step"):
        lo, hi = {"collapse": (0.05, 0.3), "churn": (0, 0), "drop": (0.2, 0.6)}.get(
            name, (1.3, 1.9)
        )
        factor = rng.uniform(lo, hi, n)
        shifted = np.where(t[None, :] >= at[:, None], y * factor[:, None], y)
        if name != "churn":
            for i in range(n):
                impact = float((shifted[i] - y[i]).sum())
                incidents.append(
                    _incident(name, tenants[i], "tenant", start, at[i], days - 1, impact)
                )
        y = shifted
    elif name == "sparse":
        p = rng.uniform(0.05, 0.5, n)
        active = rng.random((n, days)) < p[:, None]
        y = np.where(active, y * rng.lognormal(0.5, 1.0, (n, days)) / p[:, None] * 0.3, 0.0)
    elif name == "month_start_fee":
        fee = rng.uniform(2, 20, n) * y.mean(axis=1)
        for i in range(n):
            for d in range(days):
                day = start + timedelta(days=d)
                if day.day == 1:
                    extra.append(_charge(day, tenants[i], fee[i], "Purchase", "Recurring"))
    elif name == "credits":
        for i in range(n):
            for d in rng.choice(days, size=3, replace=False):
                amount = -rng.uniform(2, 15) * y[i].mean()
                extra.append(_charge(start + timedelta(days=int(d)), tenants[i], amount, "Credit"))
    elif name in ("cloud_spike", "k8s_spike"):
        category = "cloud" if name == "cloud_spike" else "k8s"
        prefix = "service:" if category == "cloud" else "namespace:"
        parts = (
            ["AmazonEC2", "AmazonRDS", "AmazonS3"]
            if category == "cloud"
            else ["ns-api", "ns-batch", "ns-db"]
        )
        share = rng.dirichlet(np.ones(len(parts)), n)
        # Infrastructure is smoother than LLM calls.
        y = _base(rng, n, days, start) ** 0.0 * rng.lognormal(3, 1, n)[:, None]
        y = y * np.exp(rng.normal(0, 0.05, (n, days)))
        split = y[:, None, :] * share[:, :, None]
        lo, hi = (3, 8) if category == "cloud" else (5, 15)
        for i in range(n):
            k = int(np.argmax(share[i]))
            s, length = int(at[i]), int(rng.integers(1, 4))
            before = split[i, k, s : s + length].sum()
            split[i, k, s : s + length] *= rng.uniform(lo, hi)
            impact = float(split[i, k, s : s + length].sum() - before)
            incidents.append(
                _incident(name, tenants[i], prefix + parts[k], start, s, s + length - 1, impact)
            )
        y = split.sum(axis=1)
        rows = []
        for i in range(n):
            for k, part in enumerate(parts):
                rows.append(
                    pd.DataFrame(
                        {
                            "day": [start + timedelta(days=int(d)) for d in t],
                            "tenant_id": tenants[i],
                            "driver": prefix + part,
                            "cost_usd": split[i, k],
                        }
                    )
                )
        detail = pd.concat(rows, ignore_index=True)
    summary = pd.DataFrame(
        {
            "day": np.tile([start + timedelta(days=int(d)) for d in t], n),
            "tenant_id": np.repeat(tenants, days),
            "cost_category": category,
            "provider": {"llm": "openai", "cloud": "AWS", "k8s": "Kubernetes"}[category],
            "model_or_service": {"llm": "gpt-4o", "cloud": "Compute", "k8s": "prod-1"}[category],
            "agent_id": None,
            "requests": np.round(y.ravel() * 10).astype(int) if category == "llm" else 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": y.ravel(),
            "charge_category": "Usage",
            "charge_frequency": "Usage-Based",
        }
    )
    summary = summary[summary["cost_usd"] != 0]
    if extra:
        summary = pd.concat([summary, pd.DataFrame(extra)], ignore_index=True)
    return summary, detail, incidents


def _charge(day: date, tenant: str, amount: float, cat: str, freq: str = "One-Time") -> dict:
    return {
        "day": day,
        "tenant_id": tenant,
        "cost_category": "cloud",
        "provider": "AWS",
        "model_or_service": "Marketplace",
        "agent_id": None,
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": float(amount),
        "charge_category": cat,
        "charge_frequency": freq,
    }


def _incident(
    kind: str, tenant: str, driver: str, start: date, s: int, e: int, impact_usd: float
) -> dict:
    """A labelled incident; `impact_usd` is its true extra (or, negative, missing) cost."""
    return {
        "kind": kind,
        "tenant_id": tenant,
        "driver": driver,
        "start_day": start + timedelta(days=int(s)),
        "end_day": start + timedelta(days=int(e)),
        "impact_usd": impact_usd,
    }
