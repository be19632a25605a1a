"""`retention_log`: drops the days of each table past its retention (`retention.days`), only
days that are summarized and that the daily partitions no longer cover, and records each drop.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotations.
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import RETENTION_LOG, TABLES
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import retention


def retention_cutoff(today: date, days: int) -> date:
    """Days before this are past a retention of `days` (today and the `days - 1` before it are
    kept). The daily assets refuse to rebuild them (`defs.partitions.not_past_retention`)."""
    return today - timedelta(days=days - 1)


@dg.asset(
    group_name="maintenance",
    kinds={"python", "sql"},
    description=(
        "Retention: for each table in `retention.days`, the days past the limit are dropped once "
        "summarized (a day of calls only when the daily summary holds exactly its calls and "
        "cost); each drop is a row of this table. Days not summarized are kept and named."
    ),
)
def retention_log(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    limits = cost_config.get().retention.days
    by_day = sorted(t for t, s in TABLES.items() if "day" in s.column_names and not s.view_of)
    bad = sorted(set(limits) - set(by_day))
    if bad:
        raise dg.Failure(
            f"retention.days names {bad}: not tables kept by day (known: {', '.join(by_day)})"
        )
    now = datetime.now(UTC)
    dropped, kept = [], []
    for table, days in sorted(limits.items()):
        schema = TABLES[table]
        cutoff = retention_cutoff(now.date(), days)
        for row in retention.days_before(wh, schema, cutoff).itertuples():
            ok, evidence = retention.summarized(wh, table, row.day)
            if not ok:
                kept.append({"table": table, "day": row.day, "rows": row.rows, **evidence})
                continue
            n = retention.drop_day(
                wh, schema, row.day, retention_days=days, evidence=evidence, now=now
            )
            dropped.append({"table": table, "day": row.day, "rows": n})
        context.log.info(f"{table}: days before {cutoff} checked")
    if kept:
        context.log.warning(f"{len(kept)} day(s) past retention kept: not summarized")
    done = pd.DataFrame(dropped, columns=["table", "day", "rows"])
    return dg.MaterializeResult(
        metadata={
            "days_dropped": len(done),
            "rows_dropped": int(done["rows"].sum()) if len(done) else 0,
            "dropped": dg.MetadataValue.md(markdown_table(done)),
            "days_kept_unsummarized": len(kept),
            "kept": dg.MetadataValue.md(markdown_table(pd.DataFrame(kept))),
            "log_rows": wh.count(RETENTION_LOG),
        }
    )
