"""Protects tenant-local billing periods (month ends, DST) and the spend counted in them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from cost_pipeline.catalog import DAILY_COST_SUMMARY, PRICED_INTERACTIONS
from cost_pipeline.lib.config import parse_config
from cost_pipeline.lib.periods import COMPANY, local_period_keys, period_of, periods_overlapping_day
from cost_pipeline.store.spend import evaluate_day, evaluate_days, period_spend
from cost_pipeline.store.warehouse import Warehouse


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tz", "instant", "key", "start", "end"),
    [
        ("UTC", utc(2026, 10, 31, 23, 59), "2026-10", utc(2026, 10, 1), utc(2026, 11, 1)),
        # New York: DST starts Mar 8 2026, so March starts at -05:00 and ends at -04:00.
        (
            "America/New_York",
            utc(2026, 3, 15),
            "2026-03",
            utc(2026, 3, 1, 5),
            utc(2026, 4, 1, 4),
        ),
        # 03:30 UTC on Apr 1 is still March 31 in New York.
        (
            "America/New_York",
            utc(2026, 4, 1, 3, 30),
            "2026-03",
            utc(2026, 3, 1, 5),
            utc(2026, 4, 1, 4),
        ),
        # Berlin leaves DST on Oct 25 2026: October runs from +02:00 to +01:00.
        (
            "Europe/Berlin",
            utc(2026, 10, 31, 22, 59),
            "2026-10",
            utc(2026, 9, 30, 22),
            utc(2026, 10, 31, 23),
        ),
        (
            "Europe/Berlin",
            utc(2026, 10, 31, 23),
            "2026-11",
            utc(2026, 10, 31, 23),
            utc(2026, 11, 30, 23),
        ),
        # Tokyo is ahead: 15:00 UTC on Dec 31 is already January of the next year.
        (
            "Asia/Tokyo",
            utc(2026, 12, 31, 15),
            "2027-01",
            utc(2026, 12, 31, 15),
            utc(2027, 1, 31, 15),
        ),
    ],
)
def test_period_boundaries(
    tz: str, instant: datetime, key: str, start: datetime, end: datetime
) -> None:
    period = period_of(instant, tz)
    assert (period.key, period.start, period.end) == (key, start, end)
    assert period.contains(instant)
    assert period.next().start == period.end
    assert period.previous().end == period.start


def test_period_of_local_date_and_days() -> None:
    period = period_of(date(2026, 2, 10), "America/Los_Angeles")
    assert period.key == "2026-02"
    assert (period.first_day, period.last_day, period.days) == (
        date(2026, 2, 1),
        date(2026, 2, 28),
        28,
    )
    assert period.utc_days()[0] == date(2026, 2, 1)
    assert period.utc_days()[-1] == date(2026, 3, 1)  # LA's Feb 28 evening is Mar 1 in UTC


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        period_of(datetime(2026, 1, 1), "UTC")


def test_periods_overlapping_day() -> None:
    assert [p.key for p in periods_overlapping_day(date(2026, 10, 31), "Europe/Berlin")] == [
        "2026-10",
        "2026-11",
    ]
    assert [p.key for p in periods_overlapping_day(date(2026, 10, 30), "Europe/Berlin")] == [
        "2026-10"
    ]
    assert [p.key for p in periods_overlapping_day(date(2026, 11, 1), "America/New_York")] == [
        "2026-10",
        "2026-11",
    ]
    assert len(periods_overlapping_day(date(2026, 10, 31), "UTC")) == 1


def test_local_period_keys_vectorized() -> None:
    at = pd.Series(pd.to_datetime(["2026-11-01T03:00Z", "2026-11-01T03:00Z", "2026-10-31T23:30Z"]))
    zones = pd.Series(["America/New_York", "UTC", "Europe/Berlin"])
    assert local_period_keys(at, zones).tolist() == ["2026-10", "2026-11", "2026-11"]


CONFIG = parse_config(
    {
        "tiers": {"free": {"name": "Free", "hard_cap_usd": 5}},
        "tenants": [
            {"id": "ny", "name": "NY", "tier": "free", "timezone": "America/New_York"},
            {"id": "ber", "name": "Berlin", "tier": "free", "timezone": "Europe/Berlin"},
        ],
    }
)


def _interactions(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    at = pd.to_datetime([r[1] for r in rows], utc=True)
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "occurred_at": at,
            "day": at.date,
            "tenant_id": [r[0] for r in rows],
            "provider": "openai",
            "model": "gpt-4o",
            **{t: 0 for t in ("input_tokens", "cache_read_tokens", "cache_write_tokens")},
            **{t: 0 for t in ("cache_write_1h_tokens", "output_tokens", "reasoning_tokens")},
            "web_search_requests": 0,
            **{
                c: 0.0
                for c in (
                    "cost_input_usd",
                    "cost_cache_read_usd",
                    "cost_cache_write_usd",
                    "cost_output_usd",
                    "cost_other_usd",
                )
            },
            "cost_usd": [r[2] for r in rows],
            "pricing_status": "priced",
        }
    )


def test_period_spend_counts_exact_events_in_local_month(warehouse: Warehouse) -> None:
    wh = warehouse
    wh.append(
        PRICED_INTERACTIONS,
        _interactions(
            [
                ("ny", "2026-10-31T12:00Z", 1.0),  # October everywhere
                ("ny", "2026-11-01T03:59Z", 2.0),  # Oct 31 23:59 EDT: October for NY
                ("ny", "2026-11-01T04:00Z", 4.0),  # Nov 1 00:00 EDT: November
                ("ber", "2026-10-31T22:59Z", 8.0),  # Oct 31 23:59 CET: October
                ("ber", "2026-10-31T23:00Z", 16.0),  # Nov 1 00:00 CET: November
            ]
        ),
    )
    summary = pd.DataFrame(
        {
            "day": [date(2026, 10, 31), date(2026, 11, 1), date(2026, 10, 31)],
            "tenant_id": ["ny", "ny", "__unattributed__"],
            "cost_category": ["cloud", "k8s", "unattributed"],
            "requests": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": [0.5, 0.25, 100.0],
            "unpriced_requests": 0,
        }
    )
    wh.append(DAILY_COST_SUMMARY, summary)
    # LLM summary rows repeat the interactions and must not be counted twice.
    wh.append(DAILY_COST_SUMMARY, summary.iloc[:1].assign(cost_category="llm", cost_usd=99.0))

    october = period_spend(wh, CONFIG, as_of=utc(2026, 11, 2), period_key="2026-10")
    got = october.set_index("tenant_id")
    assert got.loc["ny", "llm_cost_usd"] == pytest.approx(3.0)
    assert got.loc["ny", "other_cost_usd"] == pytest.approx(0.5)  # by UTC day, Oct 31 only
    assert got.loc["ber", "spend_usd"] == pytest.approx(8.0)

    now = period_spend(wh, CONFIG, as_of=utc(2026, 11, 2), include_company=True)
    got = now.set_index("tenant_id")
    assert got.loc["ny", "period"] == "2026-11"
    assert got.loc["ny", "spend_usd"] == pytest.approx(4.25)
    assert got.loc["ber", "spend_usd"] == pytest.approx(16.0)
    # The company's UTC November: NY's 2 + 4 and the k8s row of Nov 1; Berlin's 16 happened
    # on Oct 31 in UTC.
    assert got.loc[COMPANY, "spend_usd"] == pytest.approx(6.25)

    # `as_of` cuts the exact events: before NY's local midnight nothing of November is counted.
    early = period_spend(wh, CONFIG, as_of=utc(2026, 11, 1, 4), tenant_ids=["ny"])
    assert early.to_dict("records")[0]["period"] == "2026-10"
    assert early.to_dict("records")[0]["spend_usd"] == pytest.approx(3.5)


def test_period_spend_on_empty_warehouse(warehouse: Warehouse) -> None:
    wh = warehouse
    out = period_spend(wh, CONFIG, as_of=utc(2026, 3, 9))
    assert out["spend_usd"].tolist() == [0.0, 0.0]
    assert out["period"].tolist() == ["2026-03", "2026-03"]


def test_a_range_of_budget_days_equals_each_day_alone(warehouse: Warehouse) -> None:
    """A backfill evaluates a month of budget days from one read; every day must equal that
    day evaluated alone — across a month end in New York, Berlin and UTC, with calls near
    each local midnight and calls of a tenant not configured."""
    wh = warehouse
    rng = np.random.default_rng(3)
    start = utc(2026, 10, 20)
    instants = [start + timedelta(minutes=int(m)) for m in rng.integers(0, 20 * 24 * 60, 400)]
    # Right around the local midnights that end October.
    instants += [utc(2026, 11, 1, 3, 59), utc(2026, 11, 1, 4), utc(2026, 10, 31, 22, 59)]
    instants += [utc(2026, 10, 31, 23), utc(2026, 10, 31, 23, 59), utc(2026, 11, 1)]
    tenants = rng.choice(["ny", "ber", "not-configured"], len(instants)).tolist()
    costs = rng.uniform(0.01, 3.0, len(instants)).round(6).tolist()
    rows = [(t, i.isoformat(), c) for t, i, c in zip(tenants, instants, costs, strict=True)]
    wh.append(PRICED_INTERACTIONS, _interactions(rows))
    days = [date(2026, 10, 25) + timedelta(days=i) for i in range(12)]
    ranged = evaluate_days(wh, CONFIG, days)
    for day in days:
        alone = evaluate_day(wh, CONFIG, day)
        pd.testing.assert_frame_equal(ranged[day], alone)
        # And the spend is what a direct count of the calls says.
        company = alone.set_index(["tenant_id", "period"]).loc[(COMPANY, "2026-" + f"{day:%m}")]
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        month = utc(day.year, day.month, 1)
        expected = sum(c for i, c in zip(instants, costs, strict=True) if month <= i < end)
        assert company["spend_usd"] == pytest.approx(expected, abs=1e-9)
