"""Protects the FOCUS reader: versions, formats, quarantine, amortization, currencies, tenants."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cost_pipeline.catalog import CLOUD_COSTS, QUARANTINE
from cost_pipeline.lib.config import CostConfig, parse_config
from cost_pipeline.lib.focus import read_focus_file, split_focus


@pytest.fixture(scope="module")
def config() -> CostConfig:
    return parse_config(
        {
            "tiers": {"free": {"name": "Free"}},
            "tenants": [
                {"id": "acme", "name": "Acme", "tier": "free"},
                {
                    "id": "beta",
                    "name": "Beta",
                    "tier": "free",
                    "mappings": {
                        "cloud_tags": {"team": "beta-team"},
                        "cloud_sub_account_ids": ["sub-beta"],
                    },
                },
                {
                    "id": "gamma",
                    "name": "Gamma",
                    "tier": "free",
                    "mappings": {"cloud_resource_ids": ["i-gamma"]},
                },
            ],
        }
    )


def focus_frame(version: str, n: int = 4, **overrides: object) -> pd.DataFrame:
    """`n` valid FOCUS rows of `version` ("1.0" ... "1.3"), $1.50 effective each."""
    df = pd.DataFrame(
        {
            "BilledCost": ["1.750000000"] * n,
            "EffectiveCost": ["1.5"] * n,
            "ListCost": ["2.0"] * n,
            "ContractedCost": ["1.75"] * n,
            "BillingPeriodStart": "2026-09-01T00:00:00Z",
            "BillingPeriodEnd": "2026-10-01T00:00:00Z",
            "ChargePeriodStart": [f"2026-09-{d:02d}T00:00:00Z" for d in range(1, n + 1)],
            "ChargePeriodEnd": [f"2026-09-{d:02d}T00:00:00Z" for d in range(2, n + 2)],
            "BillingAccountId": "acct-1",
            "BillingAccountName": "Demo",
            "BillingCurrency": "USD",
            "ChargeCategory": "Usage",
            "ChargeDescription": "vm hours",
            "ProviderName": "Microsoft",
            "PublisherName": "Microsoft",
            "InvoiceIssuerName": "Microsoft",
            "ServiceCategory": "Compute",
            "ServiceName": "Virtual Machines",
            "SubAccountId": "sub-1",
            "ResourceId": "vm-1",
            "RegionId": "westeurope",
            "Tags": '{"tenant": "acme"}',
            "x_ResourceGroupName": "rg-prod",
        }
    )
    if version >= "1.1":
        df["ChargeFrequency"] = "Usage-Based"
    if version >= "1.2":
        df["InvoiceId"] = "INV-1"
    if version >= "1.3":
        df = df.rename(
            columns={"ProviderName": "ServiceProviderName", "PublisherName": "HostProviderName"}
        )
    for k, v in overrides.items():
        df[k] = v
    return df


def write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2", "1.3"])
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet"])
def test_every_version_and_format_loads(
    version: str, suffix: str, tmp_path: Path, config: CostConfig
) -> None:
    path = write(focus_frame(version), tmp_path / f"export{suffix}")
    batch = split_focus(read_focus_file(path), source_file=str(path), config=config)
    assert batch.quarantine.empty
    rows = CLOUD_COSTS.conform(batch.rows)
    assert len(rows) == 4
    assert rows["effective_cost"].sum() == pytest.approx(6.0)
    assert rows["billed_cost"].sum() == pytest.approx(7.0)
    assert set(rows["provider"]) == {"Microsoft"}
    assert list(rows["day"].astype(str)) == ["2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04"]
    assert set(rows["tenant_id"]) == {"acme"}
    # the provider's x_ columns stay available, with the raw rows and as JSON
    assert "x_ResourceGroupName" in batch.raw.columns
    assert json.loads(batch.rows["extensions"].iloc[0]) == {"x_ResourceGroupName": "rg-prod"}
    assert rows["invoice_id"].notna().all() == (version >= "1.2")


def test_bad_rows_are_quarantined_with_reasons(config: CostConfig) -> None:
    df = focus_frame("1.2", n=8)
    df.loc[0, "BilledCost"] = "12,5"
    df.loc[1, "EffectiveCost"] = None
    df.loc[2, "ChargePeriodEnd"] = "2026-08-01T00:00:00Z"
    df.loc[3, "ChargePeriodStart"] = "yesterday"
    df.loc[4, "ChargePeriodStart"] = "2026-10-05T00:00:00Z"
    df.loc[4, "ChargePeriodEnd"] = "2026-10-06T00:00:00Z"
    df.loc[5, "BillingCurrency"] = "euro"
    df.loc[6, "ChargeCategory"] = "Refund"
    batch = split_focus(df, source_file="/x/export.csv", config=config)
    assert len(batch.rows) == 1
    q = QUARANTINE.conform(batch.quarantine)
    assert set(q["source"]) == {"cloud_costs"}
    reasons = list(q["reason"])
    assert reasons[0] == "export.csv: BilledCost is not a decimal"
    assert "EffectiveCost is null" in reasons[1]
    assert "end is not after start" in reasons[2]
    assert "not an RFC 3339 datetime" in reasons[3]
    assert "outside its billing period" in reasons[4]
    assert "not ISO 4217" in reasons[5]
    assert "unknown ChargeCategory" in reasons[6]
    # the record is kept whole
    assert json.loads(q["raw"].iloc[5])["BillingCurrency"] == "euro"
    assert str(q["day"].iloc[0]) == "2026-09-01"
    # with its file and line (header = line 1)
    assert set(q["source_file"]) == {"/x/export.csv"}
    assert list(q["line"]) == [2, 3, 4, 5, 6, 7, 8]


def test_missing_mandatory_column_quarantines_every_row(config: CostConfig) -> None:
    df = focus_frame("1.2").drop(columns=["BillingCurrency"])
    batch = split_focus(df, source_file="f.csv", config=config)
    assert batch.rows.empty
    assert len(batch.quarantine) == 4
    assert "missing mandatory column(s): BillingCurrency" in batch.quarantine["reason"].iloc[0]


def test_tenant_mapping_precedence(config: CostConfig) -> None:
    df = focus_frame("1.2", n=6)
    df["Tags"] = [
        '{"user:tenant": "acme"}',  # AWS user tag
        '{"team": "beta-team"}',  # a cloud_tags pair
        '{"tenant": "nobody"}',  # unknown tenant: unmapped
        None,
        '{"tenant": "acme"}',
        "{}",
    ]
    df["SubAccountId"] = ["sub-1", "sub-1", "sub-1", "sub-beta", "sub-beta", "sub-1"]
    df["ResourceId"] = ["vm", "vm", "vm", "vm", "vm", "i-gamma"]
    rows = split_focus(df, source_file="f.csv", config=config).rows
    assert list(rows["tenant_id"]) == ["acme", "beta", None, "beta", "acme", "gamma"]


def test_parquet_map_tags_are_read_as_json(tmp_path: Path, config: CostConfig) -> None:
    df = focus_frame("1.2", n=2).drop(columns=["Tags"])
    table = pa.Table.from_pandas(df, preserve_index=False).append_column(
        "Tags",
        pa.array([[("tenant", "acme")], [("env", "prod")]], type=pa.map_(pa.string(), pa.string())),
    )
    path = tmp_path / "aws.parquet"
    pq.write_table(table, path)
    rows = split_focus(read_focus_file(path), source_file=str(path), config=config).rows
    assert json.loads(rows["tags"].iloc[0]) == {"tenant": "acme"}
    assert list(rows["tenant_id"]) == ["acme", None]
