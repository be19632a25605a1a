"""Shared builders for billing tests: a small tier/tenant config and priced interactions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from cost_pipeline.catalog import PRICED_INTERACTIONS
from cost_pipeline.lib.config import CostConfig, parse_config
from cost_pipeline.lib.schemas import TOKEN_COLUMNS
from cost_pipeline.store.warehouse import Warehouse

RAW_CONFIG = {
    "tiers": {
        "free": {"name": "Free", "included_usage_usd": 5, "hard_cap_usd": 5},
        "pro": {
            "name": "Pro",
            "monthly_price_usd": 299,
            "included_usage_usd": 200,
            "overage": {"unit": "usd", "markup": 0.15},
        },
        "tokens": {
            "name": "Tokens",
            "monthly_price_usd": 100,
            "included_tokens": 1_000_000,
            "overage": {"unit": "tokens", "unit_price_usd": "2.5"},
        },
        "enterprise": {
            "name": "Enterprise",
            "monthly_price_usd": 2500,
            "included_usage_usd": 2000,
            "overage": {"unit": "usd", "markup": 0.1},
        },
    },
    "tenants": [
        {"id": "acme", "name": "Acme", "tier": "free"},
        {"id": "pronto", "name": "Pronto", "tier": "pro", "stripe_customer_id": "cus_pronto"},
        {
            "id": "nyc",
            "name": "NYC",
            "tier": "pro",
            "timezone": "America/New_York",
            "stripe_customer_id": "cus_nyc",
        },
        {"id": "toki", "name": "Toki", "tier": "tokens", "stripe_customer_id": "cus_toki"},
        {
            "id": "bigco",
            "name": "BigCo",
            "tier": "enterprise",
            "stripe_customer_id": "cus_bigco",
            "contract_overage": {"unit": "usd", "markup": 0.05},
        },
    ],
}


def small_config() -> CostConfig:
    return parse_config(RAW_CONFIG)


def interactions(rows: list[tuple[str, datetime, float, int]]) -> pd.DataFrame:
    """(tenant, occurred_at, cost_usd, tokens) -> priced_interactions rows (tokens split 1:1)."""
    df = pd.DataFrame(rows, columns=["tenant_id", "occurred_at", "cost_usd", "tokens"])
    df["event_id"] = [f"e{i}" for i in range(len(df))]
    df["day"] = pd.to_datetime(df["occurred_at"], utc=True).dt.date
    df["provider"], df["model"], df["pricing_status"] = "openai", "gpt-x", "priced"
    for c in TOKEN_COLUMNS:
        df[c] = 0
    df["input_tokens"] = df["tokens"] // 2
    df["output_tokens"] = df["tokens"] - df["input_tokens"]
    for c in ("cost_input_usd", "cost_cache_read_usd", "cost_cache_write_usd", "cost_other_usd"):
        df[c] = 0.0
    df["cost_output_usd"] = df["cost_usd"]
    return PRICED_INTERACTIONS.conform(df)


def seed(wh: Warehouse, rows: list[tuple[str, datetime, float, int]]) -> None:
    df = interactions(rows)
    for day, part in df.groupby("day"):
        wh.replace_partition(PRICED_INTERACTIONS, day, part)


# Three tenants' September usage: pronto and bigco over their allowance, acme under it.
SEPTEMBER = [
    ("pronto", datetime(2026, 9, 10, tzinfo=UTC), 300.0, 10),
    ("acme", datetime(2026, 9, 11, tzinfo=UTC), 9.0, 10),
    ("bigco", datetime(2026, 9, 12, tzinfo=UTC), 2_100.0, 10),
]


def seeded_billing_warehouse(
    tmp_path: Path, url: str, raw: dict, extra: list[tuple[str, datetime, float, int]] = ()
) -> tuple[str, str]:
    """(warehouse URL, config path): September's usage seeded, `raw` written as the config."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    wh = Warehouse(url)
    seed(wh, [*SEPTEMBER, *extra])
    wh.dispose()
    return url, str(config_path)
