"""Storage of exchange rates: the days a rates file covers replace what was stored for them,
and reads of the rates a range of charge days needs."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from cost_pipeline.catalog import FX_RATES
from cost_pipeline.lib.config import CostConfig
from cost_pipeline.lib.fx import MAX_RATE_AGE_DAYS, FxRates, config_rates
from cost_pipeline.store.warehouse import Warehouse


def store_rates(warehouse: Warehouse, rates: pd.DataFrame) -> int:
    """Replace the stored rates of the days in `rates` (ECB restates nothing, but a re-read of
    the same file must not duplicate)."""
    if rates.empty:
        return 0
    return warehouse.replace_where(FX_RATES, {"day": sorted(set(rates["day"]))}, rates)


def rates_for(warehouse: Warehouse, first: date, last: date) -> pd.DataFrame:
    """The stored rates a charge on any day of [first, last] may use."""
    since = first - timedelta(days=MAX_RATE_AGE_DAYS)
    days = [since + timedelta(days=i) for i in range((last - since).days + 1)]
    return warehouse.read(FX_RATES, where={"day": days})


def fx_rates(warehouse: Warehouse, config: CostConfig, first: date, last: date) -> FxRates:
    """The rates (stored ECB rates and the configured fallbacks) for charges of [first, last]."""
    return FxRates(rates_for(warehouse, first, last), config_rates(config))
