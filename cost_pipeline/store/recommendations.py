"""The cost recommendations' reads and writes: a day's calls in chunks, a day's recommendations,
the latest day that has any, and replacing a day.

What the rows mean is told in `lib.recommendations`; the table is in `catalog.recommendations`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import COST_RECOMMENDATIONS, PRICED_INTERACTIONS
from cost_pipeline.store.warehouse import Warehouse

# Calls re-priced at once: bounds memory on a day of millions of calls.
CHUNK_ROWS = 500_000


def day_calls(
    wh: Warehouse, day: date, columns: Sequence[str], *, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pd.DataFrame]:
    """The `columns` of the priced calls of UTC day `day`, in chunks of at most `chunk_rows`."""
    yield from wh.read_chunks(
        PRICED_INTERACTIONS, days=[day], columns=list(columns), chunk_rows=chunk_rows
    )


def on_day(wh: Warehouse, day: date) -> pd.DataFrame:
    """The recommendations of `day` (empty if the day was not built)."""
    return wh.read(COST_RECOMMENDATIONS, days=[day])


def latest_day(wh: Warehouse, *, first: date, last: date) -> date | None:
    """The latest day in `first` .. `last` that has recommendations, or None."""
    table = wh.table(COST_RECOMMENDATIONS)
    stmt = sa.select(sa.func.max(table.c.day)).where(table.c.day >= first, table.c.day <= last)
    with wh.connect() as conn:
        found = conn.execute(stmt).scalar()
    if found is None:
        return None
    return found if isinstance(found, date) else date.fromisoformat(str(found)[:10])


def replace_day(wh: Warehouse, day: date, rows: pd.DataFrame) -> int:
    """Replace `day`'s recommendations with `rows`, atomically."""
    return wh.replace_partition(COST_RECOMMENDATIONS, day, rows)
