"""`llm_interactions`: the incremental, idempotent ingester of the app's interaction log.

Each new file is read in Arrow chunks, validated, priced in the same pass and stored once (in
`priced_interactions`, of which `llm_interactions` is the raw-column view), in one transaction
per file together with its quarantine rows and its "seen" mark.

An `event_id` re-sent in a later file with other content (any raw column but `source_file`) on
the same day is a restatement: the latest version replaces the stored call, the previous one is
kept in `interaction_revisions`, and the day is listed in `new_rows_by_day` so the late-data
sensor rebuilds it. Exact repeats stay duplicates. A correction that moves an event to another
day is out of scope: it loads as a new call on that day (dedupe never scans other days).
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotations at
# definition time and rejects them as strings.
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import pyarrow as pa

from cost_pipeline.catalog import (
    INGESTED_FILES,
    INTERACTION_REVISIONS,
    LLM_INTERACTIONS,
    PRICED_INTERACTIONS,
    QUARANTINE,
)
from cost_pipeline.defs.ingestion.sensors import NEW_ROWS_BY_DAY
from cost_pipeline.lib.enforcement import counted_scopes
from cost_pipeline.lib.interaction_log import file_digest, iter_log_file
from cost_pipeline.lib.partition_window import split_by_window
from cost_pipeline.lib.prefetch import prefetched
from cost_pipeline.lib.pricing import PricingEngine
from cost_pipeline.lib.providers import known_providers
from cost_pipeline.resources.landing import LandingFolderResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.enforcement import refresh_counters
from cost_pipeline.store.warehouse import Restatements

SOURCE = "llm_interactions"
# What makes a re-sent event a restatement rather than a duplicate: its raw columns differ.
RESTATED_COLUMNS = tuple(c for c in LLM_INTERACTIONS.column_names if c != "source_file")
# Calls dated after tomorrow (UTC) are quarantined: a clock that far ahead is a bug, not data.
FUTURE_DAYS = 1


@dg.asset(
    group_name="ingestion",
    kinds={"python", "sql"},
    description=(
        "One row per LLM call from the app's log (INTERACTION_LOG_DIR). Files are read once by "
        "content; duplicate event ids add nothing; an event id re-sent with other content "
        "replaces the stored call (previous version in `interaction_revisions`); malformed "
        "records and calls outside the partitions go to `quarantine`. " + LLM_INTERACTIONS.doc
    ),
)
def llm_interactions(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    cost_config: CostConfigResource,
    interaction_log: LandingFolderResource,
) -> dg.MaterializeResult:
    wh = warehouse.get()
    if not interaction_log.is_configured:
        return dg.MaterializeResult(metadata={"source": "not configured", NEW_ROWS_BY_DAY: {}})

    config = cost_config.get()
    engine = PricingEngine.for_config(config)
    providers = known_providers(config.price_overrides, config.rate_cards)
    zones = {t.id: t.timezone for t in config.tenants}
    scopes = counted_scopes(config)
    today = datetime.now(UTC).date()
    window = (config.first_partition_day(today), today + timedelta(days=FUTURE_DAYS))
    seen = set(wh.read(INGESTED_FILES, where={"source": [SOURCE]}, columns=["sha256"])["sha256"])
    files = interaction_log.list_files()
    new_by_day: dict[str, int] = {}
    totals = {
        "files": 0,
        "skipped_files": 0,
        "loaded": 0,
        "duplicates": 0,
        "restated": 0,
        "restatements": 0,
        "quarantined": 0,
    }
    for i, path in enumerate(files, start=1):
        digest = file_digest(path)
        if digest in seen:
            totals["skipped_files"] += 1
            continue
        # One transaction per file: its rows, its quarantine and its "seen" mark land together.
        with wh.transaction(lock_key=f"{SOURCE}:ingest") as conn:
            # Another run may have ingested the same content while this one waited for the
            # lock: that is "already ingested", not a failure.
            if wh.exists(conn, INGESTED_FILES, {"source": SOURCE, "sha256": digest}):
                seen.add(digest)
                totals["skipped_files"] += 1
                continue
            counts = {"duplicates": 0, "restated": 0, "replaced": 0, "quarantined": 0, "staged": 0}
            quarantine: list[pd.DataFrame] = []
            # The next chunk is read and priced while the database loads the previous one.
            chunks = _priced_chunks(path, providers, engine, config, window, counts, quarantine)
            restate = Restatements(
                into=INTERACTION_REVISIONS,
                compare=RESTATED_COLUMNS,
                revised_at=datetime.now(UTC),
            )
            by_day = wh.insert_new(conn, PRICED_INTERACTIONS, prefetched(chunks), restate=restate)
            for frame in quarantine:
                wh.append(QUARANTINE, frame, conn=conn)
            # The live spend counters of every day this file touched, in the same transaction:
            # `enforcement.decide` sees the calls as soon as they are stored, never before.
            touched = sorted({date.fromisoformat(str(d)) for d in [*by_day, *restate.by_day]})
            refresh_counters(
                wh,
                conn,
                touched,
                zones,
                source=SOURCE,
                refreshed_at=restate.revised_at,
                scopes=scopes,
            )
            loaded = sum(by_day.values())
            # Rows staged but neither new nor restating a stored call: exact repeats of stored
            # calls (a re-delivered file).
            duplicates = (
                counts["duplicates"]
                + counts["staged"]
                - counts["replaced"]
                - loaded
                - restate.total
            )
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
                            "rows_duplicate": duplicates,
                            "rows_quarantined": counts["quarantined"],
                            "ingested_at": restate.revised_at,
                        }
                    ]
                ),
                conn=conn,
            )
        seen.add(digest)
        # Restated days changed too: the late-data sensor rebuilds every day listed here.
        for day, n in [*by_day.items(), *restate.by_day.items()]:
            new_by_day[day] = new_by_day.get(day, 0) + n
        totals["files"] += 1
        totals["loaded"] += loaded
        totals["duplicates"] += duplicates
        totals["restated"] += counts["restated"]
        totals["restatements"] += restate.total
        totals["quarantined"] += counts["quarantined"]
        context.log.info(
            f"[{i}/{len(files)}] {path.name}: {loaded:,} new, {restate.total:,} restated, "
            f"{duplicates:,} duplicate, {counts['quarantined']:,} quarantined"
        )
    # Nothing new is news too: the counters are current as of this run.
    with wh.transaction(lock_key=f"{SOURCE}:ingest") as conn:
        refresh_counters(wh, conn, [], zones, source=SOURCE, refreshed_at=datetime.now(UTC))

    return dg.MaterializeResult(
        metadata={
            "source": interaction_log.path,
            "files_ingested": totals["files"],
            "files_already_seen": totals["skipped_files"],
            "rows_loaded": totals["loaded"],
            "duplicates_dropped": totals["duplicates"],
            "restated_in_file": totals["restated"],
            "restatements": totals["restatements"],
            "rows_quarantined": totals["quarantined"],
            "price_version": engine.price_version,
            NEW_ROWS_BY_DAY: dg.MetadataValue.json(dict(sorted(new_by_day.items()))),
        }
    )


def _priced_chunks(
    path,
    providers,
    engine: PricingEngine,
    config,
    window: tuple[date, date],
    counts: dict[str, int],
    quarantined: list[pd.DataFrame],
) -> Iterator[tuple[pa.Table, list[str]]]:
    """The file's valid calls in range, priced, as Arrow; its quarantine rows into
    `quarantined` (written by the caller, in the file's transaction)."""
    chunks = iter_log_file(
        path,
        known_providers=providers,
        bounds=config.plausibility,
        priced_units=engine.priced_units,
    )
    for chunk in chunks:
        inside, outside = split_by_window(chunk.good, *window)
        quarantine = chunk.quarantine
        if len(outside):
            quarantine = pd.concat([quarantine, outside], ignore_index=True)
        counts["duplicates"] += chunk.duplicates
        counts["restated"] += chunk.restated_in_file + len(chunk.replaces_earlier)
        counts["replaced"] += len(chunk.replaces_earlier)
        counts["quarantined"] += len(quarantine)
        counts["staged"] += inside.num_rows
        if len(quarantine):
            quarantined.append(quarantine)
        replaces = chunk.replaces_earlier.to_pylist()
        if inside.num_rows or replaces:
            yield engine.price_arrow(inside), replaces


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
