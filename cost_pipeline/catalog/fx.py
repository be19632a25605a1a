"""Exchange rates: the ECB's daily euro reference rates as the ledger read them."""

from __future__ import annotations

from cost_pipeline.lib.schemas import TableSchema, col

FX_RATES = TableSchema(
    name="fx_rates",
    columns=(
        col("day", "date", nullable=False, doc="The ECB publication day."),
        col("currency", "str", nullable=False),
        col("per_eur", "float", nullable=False, doc="Units of the currency per euro."),
        col("source", "str", nullable=False, doc="ecb, or the file the rates came from."),
    ),
    partition_column=None,
    unique=("day", "currency"),
    indexes=(("currency", "day"),),
    doc="Dated exchange rates (units per euro) used to convert amounts billed in other "
    "currencies at their charge date.",
)
