"""Calls outside the daily partitions: kept out of the ledger and quarantined with a reason.

The pipeline keeps UTC days from the configured first day to tomorrow; a call dated before
(history nobody asked to keep) or after (a wrong clock) would otherwise be stored but never
priced or summarized — silently missing from every total.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cost_pipeline.catalog import QUARANTINE

SOURCE = "llm_interactions"
RAW_LIMIT = 2_000


def split_by_window(table: pa.Table, first: date, last: date) -> tuple[pa.Table, pd.DataFrame]:
    """(rows whose `day` is in [first, last], quarantine rows for the others)."""
    day = table["day"]
    inside = pc.and_(
        pc.greater_equal(day, pa.scalar(first, pa.date32())),
        pc.less_equal(day, pa.scalar(last, pa.date32())),
    )
    if pc.all(inside).as_py() is not False:
        return table, QUARANTINE.empty_frame()
    outside = table.filter(pc.invert(inside)).to_pylist()
    rows = [
        {
            "source": SOURCE,
            "day": r["day"],
            "source_file": r.get("source_file"),
            "line": None,
            "raw": json.dumps(r, default=str)[:RAW_LIMIT],
            "reason": (
                f"occurred_at {r['occurred_at']:%Y-%m-%dT%H:%M:%SZ} is "
                + (
                    f"before the first partition day {first}"
                    if r["day"] < first
                    else f"after {last}: the clock that logged it is ahead"
                )
                + " (outside the partitions: not priced, not in any total)"
            ),
            "detected_at": datetime.now(UTC),
        }
        for r in outside
    ]
    return table.filter(inside), QUARANTINE.conform(pd.DataFrame(rows))
