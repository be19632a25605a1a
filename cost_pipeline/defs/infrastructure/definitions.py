"""The infrastructure domain: FOCUS cloud costs, Kubernetes allocations, their per-tenant
allocation, and the monthly FOCUS export of the whole ledger."""

import dagster as dg

from cost_pipeline.defs.infrastructure.assets import (
    cloud_costs,
    focus_export,
    infra_cost_allocation,
    k8s_allocations,
)
from cost_pipeline.defs.infrastructure.fx import fx_rates
from cost_pipeline.defs.partitions import monthly_partitions

focus_export_job = dg.define_asset_job(
    "focus_export_job",
    selection=[focus_export],
    partitions_def=monthly_partitions,
    description="Write the month's whole ledger as FOCUS 1.2 files.",
)

defs = dg.Definitions(
    assets=[fx_rates, cloud_costs, k8s_allocations, infra_cost_allocation, focus_export],
    jobs=[focus_export_job],
    schedules=[
        dg.build_schedule_from_partitioned_job(
            focus_export_job, name="focus_export_schedule", day_of_month=4, hour_of_day=7
        )
    ],
)
