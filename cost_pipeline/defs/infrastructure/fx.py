"""`fx_rates`: the ECB's euro reference rates, kept by day, for converting amounts billed in
other currencies (FOCUS rows in EUR, GBP, …) at their charge date (`lib.fx`)."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations.
import dagster as dg

from cost_pipeline.lib.fx import parse_ecb_xml
from cost_pipeline.resources.fx import EcbRatesResource
from cost_pipeline.resources.warehouse import WarehouseResource
from cost_pipeline.store.fx import store_rates


@dg.asset(
    group_name="infrastructure",
    kinds={"python", "sql"},
    description=(
        "Daily exchange rates (units per euro) from the European Central Bank's reference rates, "
        "used to convert costs billed in another currency at their charge date. Without a "
        "source, only the configured fallback rates (`fx.rates`) convert."
    ),
)
def fx_rates(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, ecb_rates: EcbRatesResource
) -> dg.MaterializeResult:
    if not ecb_rates.is_configured:
        return dg.MaterializeResult(metadata={"source": "not configured", "rows": 0})
    rates = parse_ecb_xml(ecb_rates.fetch())
    written = store_rates(warehouse.get(), rates)
    latest = rates[rates["day"] == rates["day"].max()]
    context.log.info(f"{written} rate(s) for {rates['day'].nunique()} day(s)")
    return dg.MaterializeResult(
        metadata={
            "source": ecb_rates.url or "demo twin",
            "rows": written,
            "first_day": str(rates["day"].min()),
            "last_day": str(rates["day"].max()),
            "currencies": sorted(rates["currency"].unique()),
            "latest_per_eur": dg.MetadataValue.json(
                dict(zip(latest["currency"], latest["per_eur"], strict=True))
            ),
        }
    )
