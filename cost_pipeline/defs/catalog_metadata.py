"""The catalogue as Dagster metadata: each asset shows its table's columns and their docs."""

from __future__ import annotations

import dagster as dg

from cost_pipeline.lib.schemas import TableSchema

_TYPES = {
    "str": "string",
    "json": "json",
    "int": "int",
    "float": "float",
    "money": "decimal(20,9)",
    "bool": "bool",
    "date": "date",
    "datetime": "timestamptz",
}


def column_schema(schema: TableSchema) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=_TYPES[c.kind],
                description=c.doc or None,
                constraints=dg.TableColumnConstraints(
                    nullable=c.nullable,
                    other=[f">= {c.min_value:g}"] if c.min_value is not None else [],
                ),
            )
            for c in schema.columns
        ]
    )


def table_metadata(schema: TableSchema) -> dict[str, object]:
    """Definition metadata of the asset that materializes `schema`'s table."""
    return {"dagster/column_schema": column_schema(schema), "table": schema.name}
