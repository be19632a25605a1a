"""`llm_interactions`: the incremental, idempotent ingester of the app's interaction log."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from cost_pipeline.catalog import INGESTED_FILES, LLM_INTERACTIONS, QUARANTINE
from cost_pipeline.defs.ingestion.sensors import NEW_ROWS_BY_DAY
from cost_pipeline.lib.interaction_log import file_digest, iter_log_file
from cost_pipeline.lib.providers import known_providers
from cost_pipeline.resources.landing import LandingFolderResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource

SOURCE = "llm_interactions"


@dg.asset(
    group_name="ingestion",
    kinds={"python", "sql"},
    description=(
        "One row per LLM call from the app's log (INTERACTION_LOG_DIR). Files are read once by "
        "content; duplicate event ids add nothing; malformed records go to `quarantine`."
    ),
)
def llm_interactions(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    interaction_log: LandingFolderResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    wh.ensure_tables([LLM_INTERACTIONS, QUARANTINE, INGESTED_FILES])
    if not interaction_log.is_configured:
        return dg.MaterializeResult(metadata={"source": "not configured", NEW_ROWS_BY_DAY: {}})

    providers = known_providers(cost_config.get().price_overrides)
    seen = set(wh.read(INGESTED_FILES, where={"source": [SOURCE]}, columns=["sha256"])["sha256"])
    files = interaction_log.list_files()
    new_by_day: dict[str, int] = {}
    totals = {"files": 0, "skipped_files": 0, "loaded": 0, "duplicates": 0, "quarantined": 0}
    for i, path in enumerate(files, start=1):
        digest = file_digest(path)
        if digest in seen:
            totals["skipped_files"] += 1
            continue
        counts = {"duplicates": 0, "quarantined": 0, "staged": 0}

        def good_chunks(path=path, counts=counts):
            for chunk in iter_log_file(path, known_providers=providers):
                counts["duplicates"] += chunk.duplicates
                counts["quarantined"] += len(chunk.quarantine)
                counts["staged"] += len(chunk.good)
                if len(chunk.quarantine):
                    wh.append(QUARANTINE, chunk.quarantine, conn=conn)
                yield chunk.good

        # One transaction per file: its rows, its quarantine and its "seen" mark land together.
        with wh.transaction(lock_key=f"{SOURCE}:ingest") as conn:
            by_day = wh.insert_new(conn, LLM_INTERACTIONS, good_chunks(), conformed=True)
            loaded = sum(by_day.values())
            wh.append(
                INGESTED_FILES,
                pd.DataFrame(
                    [
                        {
                            "source": SOURCE,
                            "path": str(path),
                            "sha256": digest,
                            "size_bytes": path.stat().st_size,
                            "rows_loaded": loaded,
                            "rows_duplicate": counts["duplicates"] + counts["staged"] - loaded,
                            "rows_quarantined": counts["quarantined"],
                            "ingested_at": datetime.now(UTC),
                        }
                    ]
                ),
                conn=conn,
            )
        seen.add(digest)
        for day, n in by_day.items():
            new_by_day[day] = new_by_day.get(day, 0) + n
        totals["files"] += 1
        totals["loaded"] += loaded
        totals["duplicates"] += counts["duplicates"] + counts["staged"] - loaded
        totals["quarantined"] += counts["quarantined"]
        context.log.info(
            f"[{i}/{len(files)}] {path.name}: {loaded:,} new, "
            f"{counts['duplicates'] + counts['staged'] - loaded:,} duplicate, "
            f"{counts['quarantined']:,} quarantined"
        )

    return dg.MaterializeResult(
        metadata={
            "source": interaction_log.path,
            "files_ingested": totals["files"],
            "files_already_seen": totals["skipped_files"],
            "rows_loaded": totals["loaded"],
            "duplicates_dropped": totals["duplicates"],
            "rows_quarantined": totals["quarantined"],
            NEW_ROWS_BY_DAY: dg.MetadataValue.json(dict(sorted(new_by_day.items()))),
        }
    )


@dg.asset_check(asset=llm_interactions, description="Warns when an ingestion quarantined rows.")
def no_quarantined_interactions(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(llm_interactions.key)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    quarantined = int(metadata["rows_quarantined"].value) if "rows_quarantined" in metadata else 0
    loaded = int(metadata["rows_loaded"].value) if "rows_loaded" in metadata else 0
    return dg.AssetCheckResult(
        passed=quarantined == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{quarantined:,} record(s) quarantined beside {loaded:,} loaded; see table quarantine"
            if quarantined
            else "no record quarantined"
        ),
        metadata={"rows_quarantined": quarantined, "rows_loaded": loaded},
    )
