"""What changed in the configuration between two runs, setting by setting (pure).

Audited: tiers, each tenant's tier, time zone, budget and scope limits, the company budget,
the price overrides (rate cards, keyed by provider, model and start date), pricing, billing and
enforcement settings. Everything else (mappings, demo, channels) is operational and not audited.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from cost_pipeline.lib.config import CostConfig

TENANT_FIELDS = ("tier", "timezone", "budget", "limits")


def audited_settings(config: CostConfig) -> dict[str, str]:
    """The audited settings as path -> JSON text (stable, so equal settings compare equal)."""
    data = config.model_dump(mode="json")
    out: dict[str, Any] = {}
    for name, tier in data["tiers"].items():
        out[f"tiers.{name}"] = tier
    for tenant in data["tenants"]:
        for field in TENANT_FIELDS:
            out[f"tenants.{tenant['id']}.{field}"] = tenant[field]
    out["company_budget"] = data["company_budget"]
    out["default_thresholds"] = data["default_thresholds"]
    for card in data["price_overrides"]:
        key = f"{card['provider']}/{card['model']}@{card.get('effective_from') or '-'}"
        out[f"price_overrides.{key}"] = card
    for section in ("pricing", "billing", "enforcement"):
        out[section] = data[section]
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in sorted(out.items())}


def changes(old: dict[str, str] | None, new: dict[str, str]) -> pd.DataFrame:
    """One row per setting added, removed or changed: subject, tenant_id, old_value, new_value
    (JSON text or None). Nothing when `old` is None (the first snapshot is the baseline)."""
    columns = ["subject", "tenant_id", "old_value", "new_value"]
    if old is None:
        return pd.DataFrame(columns=columns)
    rows = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before != after:
            tenant = key.split(".")[1] if key.startswith("tenants.") else None
            rows.append((key, tenant, before, after))
    return pd.DataFrame(rows, columns=columns)
