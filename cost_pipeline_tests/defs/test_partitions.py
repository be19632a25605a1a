"""Protects ranged runs: a one-day asset body run over a range keeps every day's facts."""

# No `from __future__ import annotations`: Dagster reads the `context` annotations.
from datetime import date

import dagster as dg

from cost_pipeline.defs.partitions import (
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


def test_each_day_of_a_ranged_check_is_its_own_partition_result() -> None:
    """A backfill checks a range in one run: each day's result must belong to its day, on a
    check function and on a check an asset body yields, so the UI says which day failed."""
    daily = dg.DailyPartitionsDefinition(start_date="2026-09-01")

    @dg.asset(
        partitions_def=daily,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=[dg.AssetCheckSpec("inline", asset="per_day", partitions_def=daily)],
    )
    @for_each_day
    def per_day(context: dg.AssetExecutionContext):
        day = partition_day(context)
        yield dg.MaterializeResult(metadata={"n": 1})
        yield dg.AssetCheckResult(check_name="inline", passed=day != date(2026, 9, 2))

    @dg.asset_check(asset=per_day, partitions_def=daily)
    @for_each_day
    def separate(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        day = partition_day(context)
        return dg.AssetCheckResult(passed=day != date(2026, 9, 3), description=str(day))

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [per_day, separate],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-09-01",
            "dagster/asset_partition_range_end": "2026-09-03",
        },
    )
    assert result.success
    got = {(e.check_name, e.partition): e.passed for e in result.get_asset_check_evaluations()}
    assert got == {
        ("inline", "2026-09-01"): True,
        ("inline", "2026-09-02"): False,
        ("inline", "2026-09-03"): True,
        ("separate", "2026-09-01"): True,
        ("separate", "2026-09-02"): True,
        ("separate", "2026-09-03"): False,
    }
    # A one-day run (what schedules and sensors launch) records its day too.
    one = dg.materialize([per_day, separate], instance=instance, partition_key="2026-09-03")
    assert {(e.check_name, e.partition) for e in one.get_asset_check_evaluations()} == {
        ("inline", "2026-09-03"),
        ("separate", "2026-09-03"),
    }


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
