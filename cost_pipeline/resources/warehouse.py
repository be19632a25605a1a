"""Resources for the cost warehouse and the configuration file."""

from __future__ import annotations

from datetime import date
from functools import cache

import dagster as dg
from pydantic import PrivateAttr

from cost_pipeline.lib.config import CostConfig, load_config
from cost_pipeline.store.warehouse import Warehouse


@cache
def _shared_warehouse(url: str) -> Warehouse:
    # One engine (and connection pool) per URL and process.
    return Warehouse(url)


_MIGRATED: set[tuple[str, str]] = set()


class WarehouseResource(dg.ConfigurableResource):
    """The cost warehouse at `url` (a SQLAlchemy URL).

    Every run migrates it once per process before its first step (`setup_for_execution`):
    tables, added columns and day partitions exist before any asset reads or writes.
    `first_day` is the first daily partition (ISO date; empty: a year back).
    """

    url: str
    first_day: str = ""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.migrate()

    def migrate(self) -> list[str]:
        """Create or migrate the warehouse once per process (idempotent)."""
        key = (self.url, self.first_day)
        if key in _MIGRATED:
            return []
        first = date.fromisoformat(self.first_day) if self.first_day else None
        changes = _shared_warehouse(self.url).migrate(first_day=first)
        _MIGRATED.add(key)
        return changes

    def get(self) -> Warehouse:
        self.migrate()
        return _shared_warehouse(self.url)


class CostConfigResource(dg.ConfigurableResource):
    """The validated configuration file; `path` empty means `COST_PIPELINE_CONFIG` or the demo."""

    path: str = ""
    _config: CostConfig | None = PrivateAttr(default=None)

    def get(self) -> CostConfig:
        if self._config is None:
            self._config = load_config(self.path or None)
        return self._config
