"""Protects the FOCUS 1.2 export: LLM/cloud/k8s rows, source costs kept, ledger totals, checks."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.focus_export import (
    LLM_CATEGORY,
    MANDATORY,
    export_problems,
    ledger_to_focus,
    month_days,
    other_currencies,
    read_focus_export,
    validate_focus,
    write_focus_month,
)
from cost_pipeline_tests.fixtures.focus_ledger import ledger

MONTH = date(2026, 9, 1)


def summary() -> pd.DataFrame:
    rows = [
        (
            "2026-09-01",
            "acme",
            "llm",
            "openai",
            "gpt-4o-mini",
            "support",
            10,
            1000,
            200,
            0.012345678,
        ),
        ("2026-09-01", "acme", "cloud", "AWS", "Compute", None, 0, 0, 0, 1.5),
        ("2026-09-02", "beacon", "k8s", "Kubernetes", "prod-1", None, 0, 0, 0, 2.25),
        (
            "2026-09-30",
            "__unattributed__",
            "unattributed",
            "anthropic",
            "claude",
            None,
            1,
            5,
            5,
            0.1,
        ),
        ("2026-09-30", "beacon", "cloud", "Google Cloud", "Weird Category", None, 0, 0, 0, -0.5),
    ]
    cols = ["day", "tenant_id", "cost_category", "provider", "model_or_service", "agent_id",
            "requests", "input_tokens", "output_tokens", "cost_usd"]  # fmt: skip
    return DAILY_COST_SUMMARY.conform(pd.DataFrame(rows, columns=cols).assign(unpriced_requests=0))


def test_month_days() -> None:
    days = month_days(date(2026, 2, 14))
    assert days[0] == date(2026, 2, 1) and days[-1] == date(2026, 2, 28) and len(days) == 28


def test_ledger_rows_carry_focus_and_project_columns(demo_config: CostConfig) -> None:
    focus = ledger_to_focus(summary(), config=demo_config, month=MONTH)
    assert validate_focus(focus) == []
    llm = focus.iloc[0]
    assert llm["ServiceCategory"] == LLM_CATEGORY
    assert llm["ProviderName"] == llm["ServiceProviderName"] == "openai"
    assert llm["ConsumedQuantity"] == 1200 and llm["ConsumedUnit"] == "Tokens"
    assert (llm["x_TenantId"], llm["x_TenantName"], llm["x_Model"]) == (
        "acme",
        "Acme Analytics",
        "gpt-4o-mini",
    )
    assert llm["ChargePeriodStart"] == "2026-09-01T00:00:00Z"
    assert llm["BillingPeriodEnd"] == "2026-10-01T00:00:00Z"
    assert list(focus["ServiceCategory"]) == [
        LLM_CATEGORY,
        "Compute",
        "Compute",
        LLM_CATEGORY,
        "Other",
    ]
    assert focus["BilledCost"].sum() == pytest.approx(summary()["cost_usd"].sum())


def test_written_files_validate_and_sum_to_the_ledger(
    demo_config: CostConfig, tmp_path: Path
) -> None:
    focus = ledger_to_focus(summary(), config=demo_config, month=MONTH)
    csv_path, parquet_path = write_focus_month(focus, tmp_path, MONTH)
    assert csv_path.name == "focus-1.2_2026-09.csv"
    for path in (csv_path, parquet_path):
        back = read_focus_export(path)
        assert validate_focus(back) == []
        total = pd.to_numeric(back["BilledCost"]).sum()
        assert total == pytest.approx(summary()["cost_usd"].sum(), abs=1e-9)
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda f: f.drop(columns=["BilledCost"]), "missing mandatory column BilledCost"),
        (lambda f: f.assign(EffectiveCost="n/a"), "EffectiveCost: non-decimal"),
        (lambda f: f.assign(ChargePeriodStart="2026-09-01 00:00"), "not RFC 3339"),
        (lambda f: f.assign(ServiceName=None), "ServiceName: 5 null"),
        (lambda f: f.assign(TenantId="x"), "without the x_ prefix: TenantId"),
        (lambda f: f.assign(ChargeCategory="Refund"), "ChargeCategory"),
        (lambda f: f.assign(ServiceCategory="Cats"), "'Cats' is not a FOCUS service category"),
        (lambda f: f.assign(BillingCurrency="usd"), "ISO 4217"),
        (lambda f: f.assign(ChargePeriodEnd=f["ChargePeriodStart"]), "ChargePeriodEnd is not"),
    ],
)
def test_validation_catches(mutate, problem: str, demo_config: CostConfig) -> None:
    focus = ledger_to_focus(summary(), config=demo_config, month=MONTH)
    problems = validate_focus(mutate(focus))
    assert any(problem in p for p in problems), problems


def test_every_mandatory_column_is_written(demo_config: CostConfig) -> None:
    focus = ledger_to_focus(summary().iloc[0:0], config=demo_config, month=MONTH)
    assert set(MANDATORY) <= set(focus.columns)
    assert validate_focus(focus) == []


def test_cloud_rows_restate_the_source_costs(demo_config: CostConfig) -> None:
    summary, cloud_costs = ledger(demo_config)
    focus = ledger_to_focus(summary, config=demo_config, month=MONTH, cloud_costs=cloud_costs)
    assert export_problems(focus, summary, currency="USD") == []
    cloud = focus[focus["x_CostCategory"] == "cloud"]
    usd = cloud[cloud["BillingCurrency"] == "USD"]
    source = cloud_costs[cloud_costs["currency"] == "USD"]
    # every cost column keeps its own total: $20.28 billed is not exported as $14.98
    for focus_column, source_column in [
        ("BilledCost", "billed_cost"),
        ("EffectiveCost", "effective_cost"),
        ("ListCost", "list_cost"),
        ("ContractedCost", "contracted_cost"),
    ]:
        assert usd[focus_column].sum() == pytest.approx(source[source_column].sum(), abs=1e-9)
    acme_ec2 = usd[
        (usd["x_TenantId"] == "acme")
        & (usd["ChargePeriodStart"] == "2026-09-01T00:00:00Z")
        & (usd["ChargeCategory"] == "Usage")
        & (usd["ServiceName"] == "Amazon Elastic Compute Cloud")
    ]
    assert acme_ec2["BilledCost"].sum() == pytest.approx(20.28 + 0.20)
    assert acme_ec2["EffectiveCost"].sum() == pytest.approx(14.98 + 0.20)
    assert acme_ec2["ConsumedQuantity"].sum() == pytest.approx(121)
    # per tenant, the export's effective cost is the ledger's
    ledger_cloud = summary[summary["cost_category"] == "cloud"].groupby("tenant_id")["cost_usd"]
    exported = usd.groupby("x_TenantId")["EffectiveCost"].sum()
    assert exported.to_dict() == pytest.approx(ledger_cloud.sum().to_dict(), abs=1e-6)
    # credit and tax keep their category; tax has no quantity, usage always has one
    assert usd.loc[usd["ChargeCategory"] == "Credit", "BilledCost"].sum() == pytest.approx(-5)
    assert usd.loc[usd["ChargeCategory"] == "Tax", "PricingQuantity"].isna().all()
    assert focus.loc[focus["ChargeCategory"] == "Usage", "ConsumedQuantity"].notna().all()
    assert focus.loc[focus["ChargeCategory"] != "Usage", "ConsumedQuantity"].isna().all()
    # a EUR row stays in EUR, with its tenant, outside the USD total
    assert other_currencies(focus, currency="USD") == {"EUR": 6.5}
    eur = cloud[cloud["BillingCurrency"] == "EUR"]
    assert list(eur["x_TenantId"]) == ["cobalt"] and list(eur["BilledCost"]) == [7.0]


def test_llm_list_cost_differs_only_with_a_negotiated_price(demo_config: CostConfig) -> None:
    plain = ledger_to_focus(summary(), config=demo_config, month=MONTH)
    llm = plain[plain["x_CostCategory"] == "llm"]
    assert (llm["ListCost"] == llm["BilledCost"]).all()
    assert (llm["ContractedCost"] == llm["EffectiveCost"]).all()
    negotiated = summary().assign(list_cost_usd=lambda s: s["cost_usd"] * 1.25)
    focus = ledger_to_focus(negotiated, config=demo_config, month=MONTH)
    first = focus.iloc[0]
    assert first["ListCost"] == pytest.approx(0.012345678 * 1.25)
    assert first["BilledCost"] == first["ContractedCost"] == pytest.approx(0.012345678)
    k8s = focus[focus["x_CostCategory"] == "k8s"]
    assert (k8s["ConsumedQuantity"] == 24).all() and set(k8s["ConsumedUnit"]) == {"Hours"}
