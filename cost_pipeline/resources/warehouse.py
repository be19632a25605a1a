"""Resources for the cost warehouse and the configuration file."""

from __future__ import annotations

from functools import cache

import dagster as dg
from pydantic import PrivateAttr

from cost_pipeline.lib.config import CostConfig, load_config
from cost_pipeline.lib.warehouse import Warehouse


@cache
def _shared_warehouse(url: str) -> Warehouse:
    # One engine (and connection pool) per URL and process.
    return Warehouse(url)


class WarehouseResource(dg.ConfigurableResource):
    """The cost warehouse at `url` (a SQLAlchemy URL)."""

    url: str

    def get(self) -> Warehouse:
        return _shared_warehouse(self.url)


class CostConfigResource(dg.ConfigurableResource):
    """The validated configuration file; `path` empty means `COST_PIPELINE_CONFIG` or the demo."""

    path: str = ""
    _config: CostConfig | None = PrivateAttr(default=None)

    def get(self) -> CostConfig:
        if self._config is None:
            self._config = load_config(self.path or None)
        return self._config
