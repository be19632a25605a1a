"""Budget periods: from a local reset day to the next, in a time zone, across DST.

A period runs from local midnight of its `reset_day` (1-28) in its time zone to local midnight of
the same day of the next month. With `reset_day` 1 it is the local calendar month of
`lib.periods` (same key "YYYY-MM", same UTC boundaries: computed by it); otherwise its key is its
first local date ("YYYY-MM-DD"). Boundaries are UTC instants from `zoneinfo`, so a period that
contains a daylight-saving change is still exactly "local midnight to local midnight" (Europe/
Berlin, reset day 15, Oct 15 2026: 22:00 UTC Oct 14 to 23:00 UTC Nov 14).

A `Window` is what a spend read covers, counted as `lib.periods` counts a period: LLM calls by
their exact instant, day-bucketed (cloud, Kubernetes, unattributed) rows by local calendar date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from cost_pipeline.lib.periods import as_utc, period_of


@dataclass(frozen=True)
class Window:
    """What a spend read covers: LLM calls with start <= occurred_at < end, and day-bucketed
    rows of the local calendar dates first_day..last_day (none when first_day > last_day)."""

    start: datetime
    end: datetime
    first_day: date
    last_day: date


@dataclass(frozen=True)
class BudgetPeriod:
    """One budget period of a time zone and reset day, with its UTC boundaries [start, end)."""

    key: str
    timezone: str
    reset_day: int
    start: datetime
    end: datetime
    first_day: date
    last_day: date

    def next(self) -> BudgetPeriod:
        return budget_period_of(self.end, self.timezone, self.reset_day)

    def previous(self) -> BudgetPeriod:
        return budget_period_of(
            self.start - timedelta(microseconds=1), self.timezone, self.reset_day
        )

    def window(self, as_of: datetime) -> Window:
        """The period's spend window up to `as_of` (calls before it, dates through its UTC day)."""
        as_of = as_utc(as_of)
        cutoff_day = (as_of - timedelta(microseconds=1)).date()
        return Window(
            self.start,
            max(self.start, min(self.end, as_of)),
            self.first_day,
            min(self.last_day, cutoff_day),
        )


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def budget_period_of(
    instant: datetime | date, tz_name: str = "UTC", reset_day: int = 1
) -> BudgetPeriod:
    """The period containing `instant` (an aware datetime) or a local calendar `date`."""
    if not 1 <= reset_day <= 28:
        raise ValueError(f"reset_day {reset_day} is not within 1..28")
    tz = ZoneInfo(tz_name)
    local = as_utc(instant).astimezone(tz).date() if isinstance(instant, datetime) else instant
    shift = timedelta(days=reset_day - 1)
    # The calendar month the period starts in: the month of the date `reset_day - 1` days back.
    month = period_of(local - shift, tz_name)
    first, following = month.first_day + shift, month.next().first_day + shift
    if reset_day == 1:
        key, start, end = month.key, month.start, month.end
    else:
        key, start, end = (
            first.isoformat(),
            _local_midnight(first, tz),
            _local_midnight(following, tz),
        )
    return BudgetPeriod(
        key=key,
        timezone=tz_name,
        reset_day=reset_day,
        start=start,
        end=end,
        first_day=first,
        last_day=following - timedelta(days=1),
    )


def budget_periods_overlapping_day(
    day: date, tz_name: str = "UTC", reset_day: int = 1
) -> list[BudgetPeriod]:
    """The periods overlapping UTC day `day`: one, or two when a period ends during it."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    first = budget_period_of(start, tz_name, reset_day)
    last = budget_period_of(start + timedelta(days=1, microseconds=-1), tz_name, reset_day)
    return [first] if first == last else [first, last]


def utc_day_window(day: date) -> Window:
    """The spend of UTC day `day` (what a daily budget is measured on)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Window(start, start + timedelta(days=1), day, day)
