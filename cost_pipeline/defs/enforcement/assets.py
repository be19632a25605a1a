"""`config_audit`: every change of tiers, budgets, limits, rate cards and enforcement settings
between runs, recorded with old and new value, next to the overrides and suspensions people made
(`cost-pipeline override|suspend|revoke`) in the same audit table."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations.
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from cost_pipeline.lib.config import config_path
from cost_pipeline.lib.config_audit import audited_settings, changes
from cost_pipeline.lib.reporting import markdown_table
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store import enforcement as store


@dg.asset(
    group_name="budgets",
    kinds={"python", "sql"},
    description=(
        "The audit of enforcement: each change of the configuration's tiers, budgets, scope "
        "limits, rate cards and enforcement settings since the previous run (old, new, when), "
        "and every override, suspension and revocation. Runs with each ingestion."
    ),
)
def config_audit(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    path = cost_config.path or str(config_path())
    settings = audited_settings(cost_config.get())
    previous = store.last_config_settings(wh)
    changed = changes(previous, settings)
    if previous is None or not changed.empty:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        store.record_config(wh, settings, changed, path=path, sha256=digest, now=datetime.now(UTC))
    if not changed.empty:
        context.log.warning(
            f"{len(changed)} audited setting(s) changed: {', '.join(changed['subject'])}"
        )
    recent = store.audit_rows(wh).head(20)
    return dg.MaterializeResult(
        metadata={
            "changes": len(changed),
            "baseline": previous is None,
            "changed_settings": dg.MetadataValue.md(markdown_table(changed)),
            "recent_audit": dg.MetadataValue.md(
                markdown_table(recent[["at", "actor", "action", "tenant_id", "subject", "reason"]])
            ),
        }
    )
