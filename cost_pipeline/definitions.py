"""The one Definitions object: every domain's definitions merged with the resources."""

from __future__ import annotations

from typing import Any

import dagster as dg

from cost_pipeline import environment
from cost_pipeline.catalog import TABLES
from cost_pipeline.defs import pipeline
from cost_pipeline.defs.alerts import definitions as alerts
from cost_pipeline.defs.analytics import definitions as analytics
from cost_pipeline.defs.billing import definitions as billing
from cost_pipeline.defs.budgets import definitions as budgets
from cost_pipeline.defs.catalog_metadata import table_metadata
from cost_pipeline.defs.enforcement import definitions as enforcement
from cost_pipeline.defs.infrastructure import definitions as infrastructure
from cost_pipeline.defs.ingestion import definitions as ingestion
from cost_pipeline.defs.maintenance import definitions as maintenance
from cost_pipeline.defs.pricing import definitions as pricing
from cost_pipeline.defs.recommendations import definitions as recommendations
from cost_pipeline.defs.reports import definitions as reports
from cost_pipeline.defs.resources import build_resources
from cost_pipeline.defs.rollups import definitions as rollups
from cost_pipeline.defs.summaries import definitions as summaries
from cost_pipeline.lib.config import load_config

# Each domain module exports its own `defs`; only the merged one lives at this module's scope.
DOMAINS = (
    ingestion,
    pricing,
    infrastructure,
    summaries,
    rollups,
    recommendations,
    analytics,
    budgets,
    enforcement,
    billing,
    alerts,
    reports,
    maintenance,
)


def build_defs(resources: dict[str, Any] | None = None) -> dg.Definitions:
    """The project's definitions; tests pass their own resources (tmp warehouse, fakes)."""
    if resources is None:
        # Loading the configuration here makes an invalid file fail when the code location
        # loads, naming file, key and reason — not inside a run.
        resources = build_resources(load_config(environment.config_file() or None))
    merged = dg.Definitions.merge(
        *(d.defs for d in DOMAINS),
        pipeline.defs,
        # By default a run's steps execute in the run's own process: they take well under a
        # second each, while a process per step (Dagster's default) spends ~4 s importing the
        # code. Runs still each get their own process from the run launcher; a deployment picks
        # `multiprocess` or `celery` (fan-out to Celery workers) with COST_PIPELINE_EXECUTOR
        # (see docs/production.md).
        dg.Definitions(resources=resources, executor=environment.executor_definition()),
    )
    return merged.map_asset_specs(func=_with_table_contract)


def _with_table_contract(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The asset's table from the catalogue: its columns (with docs) as the column schema."""
    table = TABLES.get(spec.key.path[-1])
    if table is None:
        return spec
    return spec.merge_attributes(metadata=table_metadata(table))


defs = build_defs()
