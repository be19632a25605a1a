"""Reads the reports need beyond the catalogue's own tables: a table that may not exist yet.

`cost_recommendations` is built by another part of the pipeline; a digest shows its savings
when the table is both declared in the catalogue and present in the warehouse, and nothing (not
an error) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from cost_pipeline.catalog import TABLES
from cost_pipeline.store.warehouse import Warehouse


def read_optional(
    warehouse: Warehouse, name: str, *, where: dict[str, Sequence[Any]] | None = None
) -> pd.DataFrame | None:
    """The rows of table `name`, or None when the catalogue or the warehouse lacks it."""
    schema = TABLES.get(name)
    if schema is None or not sa.inspect(warehouse.engine).has_table(name):
        return None
    filters = {k: v for k, v in (where or {}).items() if k in schema.column_names}
    return warehouse.read(schema, where=filters or None)
