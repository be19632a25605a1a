"""The one Definitions object: assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

from typing import Any

import dagster as dg

from cost_pipeline import environment
from cost_pipeline.defs.alerts.jobs import alert_delivery_job
from cost_pipeline.defs.alerts.schedules import daily_close_schedule, hourly_refresh_schedule
from cost_pipeline.defs.alerts.sensors import (
    alert_outbox_sensor,
    anomaly_alert_sensor,
    budget_alert_sensor,
    pipeline_failure_sensor,
)
from cost_pipeline.defs.analytics.assets import anomaly_scores, cost_forecasts
from cost_pipeline.defs.billing.assets import (
    billing_ledger,
    billing_period_close,
    billing_reconciliation,
    overage_charges,
    tenant_unit_economics,
)
from cost_pipeline.defs.billing.jobs import (
    billing_close_job,
    billing_close_schedule,
    billing_run_job,
)
from cost_pipeline.defs.billing.sensors import billing_run_sensor
from cost_pipeline.defs.budgets.assets import budget_status, tenant_enforcement
from cost_pipeline.defs.infrastructure.assets import (
    cloud_costs,
    focus_export,
    infra_cost_allocation,
    k8s_allocations,
)
from cost_pipeline.defs.ingestion.assets import llm_interactions, no_quarantined_interactions
from cost_pipeline.defs.ingestion.provider_assets import (
    anthropic_usage,
    openai_usage,
    provider_reported_costs,
)
from cost_pipeline.defs.ingestion.sensors import late_data_sensor_for
from cost_pipeline.defs.partitions import daily_partitions, monthly_partitions
from cost_pipeline.defs.pricing.assets import model_prices, no_unknown_models, priced_interactions
from cost_pipeline.defs.pricing.provider_assets import provider_usage_priced
from cost_pipeline.defs.resources import build_resources
from cost_pipeline.defs.summaries.assets import (
    daily_cost_summary,
    summary_matches_priced_interactions,
)
from cost_pipeline.defs.summaries.reconciliation import (
    app_log_matches_provider_usage,
    llm_cost_reconciliation,
    provider_reported_costs_match_usage,
)
from cost_pipeline.lib.config import load_config

# Reference data and incremental file ingesters: not partitioned.
INGEST_ASSETS = [model_prices, llm_interactions, cloud_costs]
# Everything that is computed per UTC day, in dependency order.
DAILY_ASSETS = [
    priced_interactions,
    openai_usage,
    anthropic_usage,
    provider_reported_costs,
    provider_usage_priced,
    llm_cost_reconciliation,
    k8s_allocations,
    infra_cost_allocation,
    daily_cost_summary,
    cost_forecasts,
    anomaly_scores,
    budget_status,
    tenant_enforcement,
    overage_charges,
    tenant_unit_economics,
]
MONTHLY_ASSETS = [focus_export, billing_reconciliation, billing_period_close]
ASSETS = [*INGEST_ASSETS, *DAILY_ASSETS, *MONTHLY_ASSETS, billing_ledger]
CHECKS = [
    no_quarantined_interactions,
    no_unknown_models,
    summary_matches_priced_interactions,
    app_log_matches_provider_usage,
    provider_reported_costs_match_usage,
]


def build_defs(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The project's definitions; tests pass their own resources (tmp warehouse, fakes)."""
    daily_selection = dg.AssetSelection.assets(*DAILY_ASSETS)
    ingest_job = dg.define_asset_job(
        "ingest_job",
        selection=dg.AssetSelection.assets(*INGEST_ASSETS),
        description="Refresh the rate card and ingest new interaction-log and FOCUS files.",
    )
    daily_cost_job = dg.define_asset_job(
        "daily_cost_job",
        selection=daily_selection,
        partitions_def=daily_partitions,
        description="Materialize every daily-partitioned asset for one UTC day.",
    )
    focus_export_job = dg.define_asset_job(
        "focus_export_job",
        selection=[focus_export],
        partitions_def=monthly_partitions,
        description="Write the month's whole ledger as FOCUS 1.2 files.",
    )
    if resources is None:
        # Loading the configuration here makes an invalid file fail when the code location
        # loads, naming file, key and reason — not inside a run.
        resources = build_resources(load_config(environment.config_file() or None))
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[
            ingest_job,
            daily_cost_job,
            focus_export_job,
            alert_delivery_job,
            billing_run_job,
            billing_close_job,
        ],
        schedules=[
            dg.ScheduleDefinition(
                name="ingest_schedule",
                job=ingest_job,
                cron_schedule="*/15 * * * *",
                description="Pick up new interaction-log and FOCUS files every 15 minutes.",
            ),
            hourly_refresh_schedule(daily_selection),
            daily_close_schedule(daily_selection),
            dg.build_schedule_from_partitioned_job(
                focus_export_job, name="focus_export_schedule", day_of_month=4, hour_of_day=7
            ),
            billing_close_schedule,
        ],
        sensors=[
            late_data_sensor_for(daily_cost_job),
            budget_alert_sensor,
            anomaly_alert_sensor,
            alert_outbox_sensor,
            pipeline_failure_sensor,
            billing_run_sensor,
        ],
        resources=resources,
    )


defs = build_defs()
