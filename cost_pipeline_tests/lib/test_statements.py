"""Protects tenant statements: they reconcile to the cent with the ledger, their files say so,
the FOCUS rows can be cut to a tenant and a range, and files land in any fsspec folder."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cost_pipeline.lib.config import parse_config
from cost_pipeline.lib.display import cents, format_amount, format_change, to_decimal
from cost_pipeline.lib.focus_export import (
    filter_focus,
    ledger_to_focus_range,
    validate_focus,
)
from cost_pipeline.lib.report_files import ReportFolder, ReportFolderError, output_url
from cost_pipeline.lib.statements import (
    build_statement,
    csv_total,
    split_cents,
    statement_bundle,
    statement_csv,
    statement_html,
    statement_xlsx,
    xlsx_totals,
)

CONFIG = parse_config(
    {
        "organization": "Example Co",
        "tiers": {"pro": {"name": "Pro"}},
        "tenants": [
            {"id": "acme", "name": "Acme <Labs>", "tier": "pro"},
            {"id": "globex", "name": "Globex", "tier": "pro"},
        ],
    }
)


def ledger(days: list[date], seed: int = 1) -> pd.DataFrame:
    """`daily_cost_summary` rows with nano-precision costs, credits among them."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in days:
        for tenant in ("acme", "globex"):
            for category, provider, item in (
                ("llm", "openai", "gpt-4o-mini"),
                ("llm", "anthropic", "claude-sonnet-4-5"),
                ("cloud", "aws", "Compute"),
                ("k8s", "", "payments"),
            ):
                rows.append(
                    {
                        "day": day,
                        "tenant_id": tenant,
                        "cost_category": category,
                        "provider": provider,
                        "model_or_service": item,
                        "agent_id": None,
                        "requests": int(rng.integers(0, 500)),
                        "input_tokens": int(rng.integers(0, 10**6)),
                        "output_tokens": int(rng.integers(0, 10**5)),
                        "cost_usd": round(float(rng.normal(3, 4)), 9),
                        "unpriced_requests": 0,
                    }
                )
    return pd.DataFrame(rows)


OCTOBER = [date(2026, 10, 1) + timedelta(days=i) for i in range(31)]


def _ledger_total(summary: pd.DataFrame, tenant: str) -> Decimal:
    mine = summary[summary["tenant_id"] == tenant]["cost_usd"]
    return cents(sum((Decimal(repr(float(v))) for v in mine), Decimal(0)))


@given(
    amounts=st.lists(
        st.decimals(min_value=-1000, max_value=1000, places=9, allow_nan=False), max_size=40
    )
)
@settings(max_examples=200, deadline=None)
def test_split_cents_adds_up_to_the_rounded_total_and_moves_each_by_under_a_cent(
    amounts: list[Decimal],
) -> None:
    total = cents(sum(amounts, Decimal(0)))
    split = split_cents(amounts, total)
    assert sum(split, Decimal(0)) == (total if amounts else 0)
    assert all(abs(s - a) < Decimal("0.01") for s, a in zip(split, amounts, strict=True))


def test_a_monthly_statement_reconciles_to_the_cent_with_the_ledger() -> None:
    summary = ledger(OCTOBER)
    s = build_statement(
        summary,
        tenant_id="acme",
        tenant_name="Acme",
        organization="Example Co",
        start=OCTOBER[0],
        end=OCTOBER[-1],
    )
    assert s.total == _ledger_total(summary, "acme")
    assert sum(line.amount for line in s.lines) == s.total
    assert sum(amount for _, amount in s.days) == s.total
    assert [d for d, _ in s.days] == OCTOBER and s.label == "2026-10"
    assert {line.cost_category for line in s.lines} == {"llm", "cloud", "k8s"}
    assert (
        sum(line.requests for line in s.lines)
        == summary.query("tenant_id == 'acme'")["requests"].sum()
    )


def test_a_statement_holds_its_tenant_and_its_days_only() -> None:
    summary = ledger(OCTOBER)
    s = build_statement(
        summary,
        tenant_id="globex",
        tenant_name="Globex",
        organization="Example Co",
        start=date(2026, 10, 3),
        end=date(2026, 10, 9),
    )
    week = summary[
        (summary["tenant_id"] == "globex")
        & summary["day"].between(date(2026, 10, 3), date(2026, 10, 9))
    ]
    assert s.total == _ledger_total(week, "globex") and s.label == "2026-10-03_2026-10-09"
    assert len(s.days) == 7


def test_the_files_state_the_total_and_name_the_tenant() -> None:
    s = build_statement(
        ledger(OCTOBER),
        tenant_id="acme",
        tenant_name="Acme <Labs>",
        organization="Example Co",
        start=OCTOBER[0],
        end=OCTOBER[-1],
    )
    assert csv_total(statement_csv(s)) == s.total
    rows = pd.read_csv(pd.io.common.BytesIO(statement_csv(s)), dtype={"amount": str})
    assert sum(Decimal(a) for a in rows["amount"][:-1]) == s.total
    assert set(rows["tenant_id"]) == {"acme"}
    assert xlsx_totals(statement_xlsx(s)) == (s.total, s.total, s.total)
    page = statement_html(s, b"\x89PNG-chart")
    assert "Acme &lt;Labs&gt;" in page and "<Labs>" not in page  # escaped
    assert format_amount(s.total) in page
    assert "data:image/png;base64," in page


def test_an_empty_range_is_a_zero_statement() -> None:
    s = build_statement(
        ledger(OCTOBER[:2]),
        tenant_id="nobody",
        tenant_name="Nobody",
        organization="Example Co",
        start=date(2026, 11, 1),
        end=date(2026, 11, 30),
    )
    assert s.total == 0 and s.lines == [] and len(s.days) == 30
    assert csv_total(statement_csv(s)) == 0
    assert xlsx_totals(statement_xlsx(s)) == (0, 0, 0)


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (1234.565, "$1,234.56"),  # half-even
        (Decimal("0.135"), "$0.14"),
        (-3.1, "-$3.10"),
        (None, "n/a"),
        (float("nan"), "n/a"),
        (np.float64(2.5), "$2.50"),
    ],
)
def test_format_amount(amount: object, shown: str) -> None:
    assert format_amount(amount) == shown


def test_format_amount_of_other_currencies_and_changes() -> None:
    assert format_amount(2, "EUR") == "€2.00" and format_amount(2, "CHF") == "2.00 CHF"
    assert format_change(110, 100) == "+10.0%" and format_change(5, 0) == "new"
    assert format_change(0, 0) == "n/a" and to_decimal("1.5") == Decimal("1.500000000")


def test_focus_rows_cut_to_a_tenant_and_a_range_across_months() -> None:
    days = [date(2026, 9, 28) + timedelta(days=i) for i in range(8)]
    summary = ledger(days)
    focus = ledger_to_focus_range(
        summary, config=CONFIG, start=days[1], end=days[-2], tenant_ids=["acme"]
    )
    assert validate_focus(focus) == []
    assert set(focus["x_TenantId"]) == {"acme"}
    starts = pd.to_datetime(focus["ChargePeriodStart"]).dt.date
    assert starts.min() == days[1] and starts.max() == days[-2]
    assert set(focus["BillingPeriodStart"]) == {"2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z"}
    inside = summary[(summary["tenant_id"] == "acme") & summary["day"].between(days[1], days[-2])]
    assert focus["EffectiveCost"].sum() == pytest.approx(inside["cost_usd"].sum(), abs=1e-6)
    assert filter_focus(focus, tenant_ids=["globex"]).empty


def test_the_bundle_writes_each_tenants_files_to_a_folder(tmp_path) -> None:
    bundles = statement_bundle(
        ledger(OCTOBER), config=CONFIG, start=OCTOBER[0], end=OCTOBER[-1], tenant_ids=["acme"]
    )
    (bundle,) = bundles
    assert sorted(p.rsplit("/", 1)[1] for p in bundle.files) == [
        "focus-1.2_acme_2026-10.csv",
        "statement_acme_2026-10.csv",
        "statement_acme_2026-10.html",
        "statement_acme_2026-10.xlsx",
    ]
    folder = ReportFolder(str(tmp_path / "reports"))
    for path, data in bundle.files.items():
        assert folder.write(path, data) == str(tmp_path / "reports" / path)
    written = sorted(p.name for p in (tmp_path / "reports").rglob("*") if p.is_file())
    assert len(written) == 4 and not any(n.endswith(".tmp") for n in written)


def test_a_report_folder_is_any_fsspec_url_or_says_what_to_install(tmp_path) -> None:
    memory = ReportFolder("memory://cost-reports/test")
    assert memory.write("a/b.csv", b"x,y\n") == "memory:///cost-reports/test/a/b.csv"
    assert memory.read("a/b.csv") == b"x,y\n"
    with pytest.raises(ReportFolderError, match="nosuchproto"):
        ReportFolder("nosuchproto://bucket/reports")
    assert output_url("", tmp_path) == str(tmp_path / "reports")
    assert output_url(" s3://b/r ", tmp_path) == "s3://b/r"
