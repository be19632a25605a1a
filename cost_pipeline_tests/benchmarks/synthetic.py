"""Synthetic `daily_cost_summary` frames with labelled incidents, for unit tests and the timing run.

Not the demo company: a fast, vectorized stand-in that has what the analytics must cope with —
weekly seasonality, trend, noise, tenants that start late, agents on several models, and
incidents (agent runaway, tenant spike, model switch) labelled like the demo generator's.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

DOW_PROFILE = np.array([1.1, 1.15, 1.15, 1.1, 1.0, 0.55, 0.5])


def synthetic_daily_summary(
    n_tenants: int,
    start: date,
    days: int,
    *,
    seed: int = 0,
    agents_per_tenant: int = 3,
    incidents_per_tenant_quarter: float = 1.0,
    late_start_share: float = 0.1,
) -> tuple[pd.DataFrame, list[dict]]:
    """(daily_cost_summary rows, incidents) for `n_tenants` over `days` from `start`."""
    rng = np.random.default_rng(seed)
    models = np.array(["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"])
    price = np.array([0.0004, 0.006, 0.009])  # USD per request, roughly
    n_series = n_tenants * agents_per_tenant
    tenant = np.repeat(np.arange(n_tenants), agents_per_tenant)
    base_requests = rng.lognormal(mean=4.0, sigma=1.2, size=n_series)
    model_idx = rng.integers(0, len(models), size=n_series)
    growth = rng.normal(0.002, 0.004, size=n_series)
    t = np.arange(days)
    dows = np.array([(start + timedelta(days=int(i))).weekday() for i in t])
    mean = base_requests[:, None] * DOW_PROFILE[dows][None, :] * np.exp(growth[:, None] * t)
    requests = rng.poisson(mean).astype(float)

    start_day = np.zeros(n_tenants, dtype=int)
    late = rng.random(n_tenants) < late_start_share
    start_day[late] = rng.integers(days // 3, days - 3, size=int(late.sum()))
    requests[t[None, :] < start_day[tenant][:, None]] = 0
    mult = np.ones_like(requests)
    model_now = np.repeat(model_idx[:, None], days, axis=1)

    incidents: list[dict] = []
    n_inc = rng.poisson(incidents_per_tenant_quarter * n_tenants * days / 91)
    for k in range(int(n_inc)):
        tn = int(rng.integers(n_tenants))
        first = max(start_day[tn] + 35, 35)
        if first >= days - 2:
            continue
        s = int(rng.integers(first, days - 1))
        kind = rng.choice(["runaway_agent", "tenant_spike", "model_switch"])
        rows = np.flatnonzero(tenant == tn)
        if kind == "runaway_agent":
            row = int(rng.choice(rows))
            length, m = int(rng.integers(1, 4)), float(rng.uniform(5, 20))
            mult[row, s : s + length] *= m
            driver = f"agent:agent-{row % agents_per_tenant}"
        elif kind == "tenant_spike":
            length, m = int(rng.integers(1, 3)), float(rng.uniform(3, 8))
            mult[rows, s : s + length] *= m
            driver = "tenant"
        else:
            row = (
                int(rng.choice(rows[model_idx[rows] == 0])) if (model_idx[rows] == 0).any() else -1
            )
            if row < 0:
                continue
            model_now[row, s:] = 2
            length, m = days - s, float(price[2] / price[0])
            driver = f"agent:agent-{row % agents_per_tenant}"
        incidents.append(
            {
                "incident_id": f"inc-{seed}-{k}",
                "kind": str(kind),
                "tenant_id": f"t{tn:04d}",
                "driver": driver,
                "start_day": start + timedelta(days=s),
                "end_day": start + timedelta(days=min(s + length, days) - 1),
                "multiplier": m,
            }
        )
    requests = np.round(requests * mult)
    cost = requests * price[model_now] * rng.lognormal(0, 0.1, size=requests.shape)
    idx_series, idx_day = np.nonzero(requests > 0)
    r = requests[idx_series, idx_day]
    frame = pd.DataFrame(
        {
            "day": [start + timedelta(days=int(d)) for d in idx_day],
            "tenant_id": [f"t{tn:04d}" for tn in tenant[idx_series]],
            "cost_category": "llm",
            "provider": "openai",
            "model_or_service": models[model_now[idx_series, idx_day]],
            "agent_id": [f"agent-{i % agents_per_tenant}" for i in idx_series],
            "requests": r.astype(int),
            "input_tokens": (r * 900).astype(int),
            "output_tokens": (r * 200).astype(int),
            "cost_usd": cost[idx_series, idx_day],
            "unpriced_requests": 0,
        }
    )
    return frame, incidents
