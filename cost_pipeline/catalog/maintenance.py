"""What the warehouse's upkeep did: the days retention dropped, with the evidence."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col

RETENTION_LOG = TableSchema(
    name="retention_log",
    columns=(
        col("table_name", "str", nullable=False),
        col("day", "date", nullable=False),
        col("rows_dropped", "int", nullable=False, min_value=0),
        col("dropped_at", "datetime", nullable=False),
        col("retention_days", "int", nullable=False, min_value=1),
        col("evidence", "json", doc="Why the day counted as summarized (totals compared)."),
    ),
    partition_column=None,
    unique=("table_name", "day"),
    indexes=(("table_name", "day"),),
    doc="Every day the retention job dropped from a table, when, and the evidence that the "
    "day was summarized first.",
)
