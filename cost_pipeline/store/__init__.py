"""The store: the only code that speaks SQL or opens a connection to the cost warehouse.

- `warehouse.Warehouse`: engine and connection discipline, table creation and migration from
  the catalogue (`cost_pipeline.catalog`), partition replacement, bulk load and bulk read.
- `queries`: the named queries (summary, checks, period spend, forecasts, printed reports).
- `outbox`, `billing`: the alert outbox and the billing ledger's storage.
"""

from cost_pipeline.store.warehouse import Warehouse, redact_url

__all__ = ["Warehouse", "redact_url"]
