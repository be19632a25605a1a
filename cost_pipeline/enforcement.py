"""The enforcement flag an app gateway checks before calling a model: `is_allowed`.

Reads the latest `tenant_enforcement` row of the tenant. It fails open (allowed) when the
pipeline has nothing to say — no row, or the row's billing period is over (a new month starts
unblocked) — so a missing run never locks customers out; a blocked Free tenant stays blocked until
its period ends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

import pandas as pd

from cost_pipeline.store import queries
from cost_pipeline.store.warehouse import Warehouse


@cache
def _warehouse(url: str) -> Warehouse:
    return Warehouse(url)


def is_allowed(tenant_id: str, warehouse_url: str, *, now: datetime | None = None) -> bool:
    """True unless the tenant's latest enforcement row blocks it for the current period."""
    wh = _warehouse(warehouse_url)
    rows = queries.latest_enforcement(wh, tenant_id)
    if rows.empty:
        return True
    row = rows.iloc[0]
    period_end = pd.Timestamp(row["period_end"])
    period_end = period_end.tz_localize(UTC) if period_end.tzinfo is None else period_end
    if (now or datetime.now(UTC)) >= period_end:
        return True
    return bool(row["allowed"])
