"""Protects ranged runs: a one-day asset body run over a range keeps every day's facts."""

from __future__ import annotations

from datetime import date

import dagster as dg

from cost_pipeline.defs.partitions import (
    _merge_checks,
    _merge_materializations,
    for_each_day,
    partition_day,
)

DAYS = [date(2026, 9, 1), date(2026, 9, 2)]


def test_facts_of_every_day_survive_the_merge_with_their_day() -> None:
    results = [
        dg.MaterializeResult(
            metadata={"rows": 3, "alert_facts": dg.MetadataValue.json([{"tenant_id": "a"}])}
        ),
        dg.MaterializeResult(
            metadata={"rows": 4, "alert_facts": dg.MetadataValue.json([{"tenant_id": "b"}])}
        ),
    ]
    merged = _merge_materializations(DAYS, results).metadata
    assert merged["alert_facts"].value == [
        {"day": "2026-09-01", "tenant_id": "a"},
        {"day": "2026-09-02", "tenant_id": "b"},
    ]
    assert merged["days"] == 2 and "2026-09-02" in merged["per_day"].value


def test_a_check_over_a_range_fails_if_any_day_fails_and_names_it() -> None:
    ok = dg.AssetCheckResult(passed=True)
    bad = dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description="x")
    merged = _merge_checks(DAYS, [ok, bad])
    assert not merged.passed and merged.severity == dg.AssetCheckSeverity.ERROR
    assert merged.metadata["failed_days"].value == ["2026-09-02"]


def test_each_day_of_a_range_is_materialized_in_order(tmp_path) -> None:
    seen: list[date] = []

    @dg.asset(
        partitions_def=dg.DailyPartitionsDefinition(start_date="2026-09-01"),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    @for_each_day
    def per_day(context) -> dg.MaterializeResult:
        seen.append(partition_day(context))
        return dg.MaterializeResult(metadata={"n": 1})

    result = dg.materialize(
        [per_day],
        tags={
            "dagster/asset_partition_range_start": "2026-09-01",
            "dagster/asset_partition_range_end": "2026-09-03",
        },
    )
    assert result.success
    assert seen == [date(2026, 9, 1), date(2026, 9, 2), date(2026, 9, 3)]
