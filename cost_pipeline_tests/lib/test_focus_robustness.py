"""Protects FOCUS ingestion from real bills: bad files and records, edges, amortization, FX."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cost_pipeline.catalog import CLOUD_COSTS, QUARANTINE
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.focus import (
    delivery_is_new,
    load_focus_file,
    split_focus,
    supersedes,
)
from cost_pipeline.lib.focus_files import RAW_MAX_CHARS
from cost_pipeline.lib.nano_split import NANO, split_nanos, to_nanos
from cost_pipeline_tests.lib.test_focus import config, focus_frame  # noqa: F401 (fixture)

NOW = datetime(2026, 10, 2, 8, 0, tzinfo=UTC)


def load(path: Path, config: CostConfig):  # noqa: F811
    batch = load_focus_file(path, config=config, detected_at=NOW)
    QUARANTINE.conform(batch.quarantine)
    CLOUD_COSTS.conform(batch.rows)
    return batch


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("junk.csv.gz", b"this is not gzip at all", "not a complete gzip stream"),
        ("truncated.csv.gz", None, "not a complete gzip stream"),
        ("junk.parquet", b"PAR1 not really", "not a readable Parquet file"),
        ("empty.csv", b"", "empty file"),
        ("export.json", b"{}", "not a FOCUS file"),
    ],
)
def test_a_file_that_cannot_be_opened_is_one_quarantine_row(
    name: str,
    content: bytes | None,
    reason: str,
    tmp_path: Path,
    config: CostConfig,  # noqa: F811
) -> None:
    path = tmp_path / name
    if content is None:  # a real gzip cut in the middle
        whole = gzip.compress(focus_frame("1.2", n=20).to_csv(index=False).encode())
        content = whole[: len(whole) // 2]
    path.write_bytes(content)
    batch = load(path, config)
    assert batch.rows.empty
    assert batch.unreadable_files == (str(path),)
    assert len(batch.quarantine) == 1
    row = batch.quarantine.iloc[0]
    assert reason in row["reason"] and row["reason"].startswith(f"{name}:")
    assert row["source_file"] == str(path) and pd.isna(row["line"])


def test_a_bad_file_does_not_stop_the_next(tmp_path: Path, config: CostConfig) -> None:  # noqa: F811
    (tmp_path / "a.csv.gz").write_bytes(b"junk")
    good = tmp_path / "b.csv"
    focus_frame("1.2").to_csv(good, index=False)
    batches = [load(p, config) for p in sorted(tmp_path.iterdir())]
    assert [len(b.rows) for b in batches] == [0, 4]


@pytest.mark.parametrize("gz", [False, True])
def test_bad_records_are_quarantined_with_their_line(
    gz: bool,
    tmp_path: Path,
    config: CostConfig,  # noqa: F811
) -> None:
    lines = focus_frame("1.2", n=4).to_csv(index=False).encode().splitlines()
    lines.insert(2, lines[1] + b",extra")  # line 3: one field too many
    lines.insert(4, b"2.0,1.5")  # line 5: too few fields
    body = b"\n".join(lines) + b"\n"
    path = tmp_path / ("f.csv.gz" if gz else "f.csv")
    path.write_bytes(gzip.compress(body) if gz else body)
    batch = load(path, config)
    assert len(batch.rows) == 4
    q = batch.quarantine.sort_values("line")
    assert list(q["line"]) == [3, 5]
    assert "field(s), the header has" in q["reason"].iloc[0]
    assert q["raw"].iloc[1] == "2.0,1.5"


def test_invalid_utf8_quarantines_the_record_not_the_file(
    tmp_path: Path,
    config: CostConfig,  # noqa: F811
) -> None:
    df = focus_frame("1.2", n=3)
    df.loc[1, "ChargeDescription"] = "MARKER"
    body = df.to_csv(index=False).encode().replace(b"MARKER", b"caf\xe9")
    path = tmp_path / "latin1.csv"
    path.write_bytes(body)
    batch = load(path, config)
    assert len(batch.rows) == 3 - 1
    assert list(batch.quarantine["line"]) == [3]
    assert "not UTF-8" in batch.quarantine["reason"].iloc[0]


def test_raw_is_bounded(config: CostConfig) -> None:  # noqa: F811
    df = focus_frame("1.2", n=1, BilledCost="x", ChargeDescription="y" * 10_000)
    q = split_focus(df, source_file="f.csv", config=config).quarantine
    assert len(q["raw"].iloc[0]) <= RAW_MAX_CHARS and "more chars" in q["raw"].iloc[0]


def test_billing_period_edge_rows_are_kept_on_the_edge_day(config: CostConfig) -> None:  # noqa: F811
    df = focus_frame("1.2", n=3)
    df.loc[0, ["ChargePeriodStart", "ChargePeriodEnd"]] = [
        "2026-08-31T22:00:00Z",
        "2026-08-31T23:00:00Z",
    ]  # two hours early (time zone)
    df.loc[1, ["ChargePeriodStart", "ChargePeriodEnd"]] = [
        "2026-10-01T03:00:00Z",
        "2026-10-01T04:00:00Z",
    ]  # three hours late
    df.loc[2, ["ChargePeriodStart", "ChargePeriodEnd"]] = [
        "2026-08-30T00:00:00Z",
        "2026-08-31T00:00:00Z",
    ]  # two days early: another period's charge
    batch = split_focus(df, source_file="f.csv", config=config)
    assert sorted(batch.rows["day"].astype(str)) == ["2026-09-01", "2026-09-30"]
    assert len(batch.quarantine) == 1
    assert "outside its billing period" in batch.quarantine["reason"].iloc[0]


def test_a_monthly_charge_is_amortized_per_day_to_the_nano(config: CostConfig) -> None:  # noqa: F811
    df = focus_frame(
        "1.2",
        n=1,
        ChargeCategory="Purchase",
        ChargeFrequency="Recurring",
        BilledCost="100.000000001",
        EffectiveCost="0",
        ListCost="120",
        ContractedCost="99.99",
        PricingQuantity="1",
        ChargePeriodStart="2026-09-01T00:00:00Z",
        ChargePeriodEnd="2026-10-01T00:00:00Z",
    )
    rows = CLOUD_COSTS.conform(split_focus(df, source_file="f.csv", config=config).rows)
    assert len(rows) == 30 and rows["day"].nunique() == 30
    for column, total in [
        ("billed_cost", "100.000000001"),
        ("effective_cost", "0"),
        ("list_cost", "120"),
        ("contracted_cost", "99.99"),
    ]:
        assert to_nanos(rows[column]).sum() == int(Fraction(total) * NANO), column
        assert np.ptp(to_nanos(rows[column])) <= 1, column
    assert rows["pricing_quantity"].sum() == pytest.approx(1.0)
    # the original charge period stays on every row
    assert set(rows["charge_period_end"].astype(str)) == {"2026-10-01 00:00:00+00:00"}


def test_a_charge_straddling_midnight_splits_by_time(config: CostConfig) -> None:  # noqa: F811
    df = focus_frame(
        "1.2",
        n=1,
        BilledCost="4",
        EffectiveCost="4",
        ListCost="4",
        ChargePeriodStart="2026-09-01T18:00:00Z",
        ChargePeriodEnd="2026-09-02T02:00:00Z",
    )
    rows = split_focus(df, source_file="f.csv", config=config).rows
    assert list(rows["billed_cost"]) == [3.0, 1.0]
    assert list(rows["day"].astype(str)) == ["2026-09-01", "2026-09-02"]


def test_non_usd_rows_are_kept_and_flagged(config: CostConfig) -> None:  # noqa: F811
    df = focus_frame("1.2", n=2)
    df.loc[1, "BillingCurrency"] = "eur"
    batch = split_focus(df, source_file="f.csv", config=config)
    rows = CLOUD_COSTS.conform(batch.rows)
    assert batch.quarantine.empty
    assert list(rows["currency"]) == ["USD", "EUR"]
    assert list(rows["needs_fx"]) == [False, True]
    assert list(rows["billed_cost"]) == [1.75, 1.75]  # original amounts, not converted


@settings(max_examples=200, deadline=None)
@given(
    totals=st.lists(st.integers(-(10**15), 10**15), min_size=1, max_size=6),
    weights=st.lists(st.integers(1, 10**6), min_size=1, max_size=40),
)
def test_split_nanos_sums_exactly_and_stays_within_a_nano(
    totals: list[int], weights: list[int]
) -> None:
    owner = np.arange(len(weights)) % len(totals)
    owner.sort()
    used = sorted(set(owner.tolist()))
    parts = split_nanos(np.array(totals), owner, np.array(weights, dtype=float))
    for whole in used:
        mine = owner == whole
        assert int(parts[mine].sum()) == totals[whole]
        w = np.array(weights)[mine]
        for part, wi in zip(parts[mine], w, strict=True):
            exact = Fraction(totals[whole]) * wi / int(w.sum())
            assert abs(Fraction(int(part)) - exact) < 1 + Fraction(1, 10**3)


@settings(max_examples=60, deadline=None)
@given(
    start_hour=st.integers(0, 24 * 29),
    hours=st.integers(1, 24 * 40),
    # Money is float64 at rest (schemas.MONEY_DECIMALS): nano-exact up to 15 significant digits,
    # i.e. charges up to $999,999.999999999 a row.
    cents=st.integers(-(10**8) + 1, 10**8 - 1),
)
def test_amortization_keeps_the_total(start_hour: int, hours: int, cents: int) -> None:
    start = pd.Timestamp("2026-09-01T00:00:00Z") + pd.Timedelta(hours=start_hour)
    end = start + pd.Timedelta(hours=hours)
    nanos = cents * 10**7 + 1
    amount = f"{Decimal(nanos).scaleb(-9):f}"
    df = pd.DataFrame(
        {
            "BilledCost": [amount],
            "EffectiveCost": [amount],
            "ListCost": [amount],
            "BillingPeriodStart": "2026-09-01T00:00:00Z",
            "BillingPeriodEnd": "2026-10-01T00:00:00Z",
            "ChargePeriodStart": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ChargePeriodEnd": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "BillingAccountId": "a",
            "BillingCurrency": "USD",
            "ChargeCategory": "Usage",
            "ProviderName": "p",
            "ServiceName": "s",
        }
    )
    rows = split_focus(df, source_file="f.csv", config=_CONFIG).rows
    assert to_nanos(rows["billed_cost"]).sum() == nanos
    days = pd.to_datetime(rows["day"])
    assert days.min() >= pd.Timestamp("2026-09-01") and days.max() <= pd.Timestamp("2026-09-30")


_CONFIG = CostConfig.model_validate({"tiers": {"free": {"name": "Free"}}, "tenants": []})


def test_the_newest_delivery_wins_even_with_older_content() -> None:
    t = datetime(2026, 10, 1, tzinfo=UTC)
    later = datetime(2026, 10, 3, tzinfo=UTC)
    assert supersedes(later, "run-3", t, "run-2")
    assert not supersedes(t, "run-1", later, "run-2")
    assert supersedes(t, "run-2", t, "run-2")  # the same delivery, files changed: reload
    assert supersedes(t, "run-1", None, None)
    # run-3 re-delivers run-1's bytes: a new delivery, not a duplicate
    ingested = {("run-1/part-0.csv.gz", "abc"), ("run-2/part-0.csv.gz", "def")}
    assert delivery_is_new({"run-3/part-0.csv.gz": "abc"}, ingested)
    assert not delivery_is_new({"run-1/part-0.csv.gz": "abc"}, ingested)
