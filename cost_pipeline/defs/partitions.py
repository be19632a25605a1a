"""The one daily partitioning of the pipeline (UTC days), and running a day's logic over ranges.

Daily assets are written for one day and decorated with `for_each_day`: a backfill or the demo
materializes a whole range of days in ONE run (`BackfillPolicy.single_run()`), and the
decorated body runs once per day of the range, oldest first, with `partition_day(context)`
naming the day being built. The first partition comes from the configuration
(`partitions.first_day`; see `lib.config.Partitions`).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd

from cost_pipeline import environment
from cost_pipeline.lib.config import load_config
from cost_pipeline.lib.reporting import markdown_table

PARTITIONS_START = load_config(environment.config_file() or None).first_partition_day(
    datetime.now(UTC).date()
)

# The last partition is yesterday: a day is a partition once it is over, so a complete ledger
# shows complete in the UI. Today so far is `budget_status_today`, rebuilt by the hourly refresh.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=PARTITIONS_START.isoformat(), timezone="UTC"
)
# Calendar months (UTC) for month-level outputs: the FOCUS export and the billing close.
monthly_partitions = dg.MonthlyPartitionsDefinition(
    start_date=PARTITIONS_START.replace(day=1).isoformat(), timezone="UTC"
)
SINGLE_RUN = dg.BackfillPolicy.single_run()

# The tag the run queue's limits key on (`dagster.yaml`: `tag_concurrency_limits`): Dagster
# tags runs with their schedule, sensor or partition, not with their job.
WAREHOUSE_LOAD_TAG = "cost_pipeline/warehouse_load"
DAILY_BUILD = {WAREHOUSE_LOAD_TAG: "daily_build"}
INGEST = {WAREHOUSE_LOAD_TAG: "ingest"}

_DAY: contextvars.ContextVar[date | None] = contextvars.ContextVar("partition_day", default=None)


def partition_days(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> list[date]:
    """Every UTC day of the run's partition (one day, or a range in a single-run backfill)."""
    keys = context.partition_key_range
    first, last = date.fromisoformat(keys.start), date.fromisoformat(keys.end)
    return not_past_retention([first + timedelta(days=i) for i in range((last - first).days + 1)])


def not_past_retention(days: list[date]) -> list[date]:
    """`days`, unless one is before the first day the ledger can still rebuild: with retention
    configured (`retention.days`), the raw rows of older days may be gone, and rebuilding a day
    from nothing would silently replace its summaries with zeros. That fails, loudly."""
    config = load_config(environment.config_file() or None)
    if config.retention.raw_days() is None or not days:
        return days
    first = config.first_partition_day(datetime.now(UTC).date())
    if days[0] < first:
        raise dg.Failure(
            f"{days[0]} is before {first}, the first day retention keeps the raw rows of "
            f"(retention.days): its summaries are final and are not rebuilt"
        )
    return days


def day_chunks(days: list[date], size: int = 31) -> list[list[date]]:
    """`days` in consecutive chunks of at most `size`: what an asset that computes a range at
    once reads and models together, so a year of backfill never reads a year at once."""
    return [days[i : i + size] for i in range(0, len(days), size)]


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    """The UTC day being materialized or checked (inside `for_each_day`, the current one)."""
    current = _DAY.get()
    if current is not None:
        return current
    return not_past_retention([date.fromisoformat(context.partition_key)])[0]


def for_each_day(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a one-day asset or check body for each day of the run's partition range.

    One day: the body's own result. Several: one materialization whose metadata has the range,
    a table of every day's numeric figures and the last day's full metadata; and each check's
    result of each day as its own evaluation of that day's partition (checks are declared with
    the daily partitions), so the UI says which day failed.
    """

    def each_day(context: Any, args: Any, kwargs: Any) -> Iterator[tuple[date, Any]]:
        for day in partition_days(context):
            token = _DAY.set(day)
            try:
                yield day, fn(context, *args, **kwargs)
            finally:
                _DAY.reset(token)

    if inspect.isgeneratorfunction(fn):
        # A body that yields its materialization and/or its checks' results: each day's events
        # are collected; the materializations merged, the check results kept per day.
        @functools.wraps(fn)
        def run_yielding(context: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            per_day = [(day, list(events)) for day, events in each_day(context, args, kwargs)]
            if len(per_day) == 1:
                yield from per_day[0][1]
                return
            days = [day for day, _ in per_day]
            materialized = [
                [e for e in events if isinstance(e, dg.MaterializeResult)] for _, events in per_day
            ]
            if materialized[0]:
                yield _merge_materializations(days, [m[0] for m in materialized])
            names = [e.check_name for e in per_day[0][1] if isinstance(e, dg.AssetCheckResult)]
            for name in names:
                results = [
                    next(
                        e
                        for e in events
                        if isinstance(e, dg.AssetCheckResult) and e.check_name == name
                    )
                    for _, events in per_day
                ]
                yield from _per_day_evaluations(context, days, results, name)

        return run_yielding

    if _is_check(fn):

        @functools.wraps(fn)
        def run_check(context: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            per_day = list(each_day(context, args, kwargs))
            if len(per_day) == 1:
                yield per_day[0][1]
                return
            days, results = [d for d, _ in per_day], [r for _, r in per_day]
            yield from _per_day_evaluations(context, days, results, None)

        return run_check

    @functools.wraps(fn)
    def run(context: Any, *args: Any, **kwargs: Any) -> Any:
        per_day = list(each_day(context, args, kwargs))
        return merge_days([d for d, _ in per_day], [r for _, r in per_day])

    return run


def _is_check(fn: Callable[..., Any]) -> bool:
    first = next(iter(inspect.signature(fn).parameters.values()), None)
    return first is not None and first.annotation in (
        dg.AssetCheckExecutionContext,
        "dg.AssetCheckExecutionContext",
    )


def _per_day_evaluations(
    context: Any, days: list[date], results: list[dg.AssetCheckResult], name: str | None
) -> Iterator[Any]:
    """Each day's result of check `name` (the op's only check when None) as an evaluation of
    that day's partition, then the check's output (what a ranged run of a check yields)."""
    assets_def = context.op_execution_context.assets_def
    specs = list(assets_def.check_specs)
    spec = next(s for s in specs if name is None or s.name == name)
    for day, result in zip(days, results, strict=True):
        yield dg.AssetCheckEvaluation(
            asset_key=spec.asset_key,
            check_name=spec.name,
            passed=result.passed,
            metadata=dict(result.metadata or {}),
            target_materialization_data=None,
            severity=result.severity,
            description=result.description,
            blocking=spec.blocking,
            partition=day.isoformat(),
        )
    yield dg.Output(None, output_name=assets_def.get_output_name_for_asset_check_key(spec.key))


def merge_days(days: list[date], results: list[Any]) -> Any:
    """One result for a run over `days` from each day's own (see `for_each_day`).

    For assets that compute a whole range at once (one read, one model pass) and then write
    and describe each day: the same metadata a `for_each_day` asset shows.
    """
    if len(results) == 1:
        return results[0]
    return _merge_materializations(days, results)


def _scalars(metadata: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(raw, bool):
            continue
        if isinstance(raw, int | float):
            out[key] = raw
    return out


def _merge_materializations(
    days: list[date], results: list[dg.MaterializeResult]
) -> dg.MaterializeResult:
    table = pd.DataFrame(
        [
            {"day": day, **_scalars(dict(r.metadata or {}))}
            for day, r in zip(days, results, strict=True)
        ]
    )
    last = dict(results[-1].metadata or {})
    return dg.MaterializeResult(
        metadata={
            **{f"last_day_{k}": v for k, v in last.items()},
            # Lists of facts (what sensors act on) are kept whole: every day's, each with its day.
            **_concatenated_lists(days, results),
            "days": len(days),
            "first_day": str(days[0]),
            "last_day": str(days[-1]),
            "per_day": dg.MetadataValue.md(markdown_table(table, max_rows=len(days))),
        }
    )


def _concatenated_lists(
    days: list[date], results: list[dg.MaterializeResult]
) -> dict[str, dg.MetadataValue]:
    merged: dict[str, list] = {}
    for day, result in zip(days, results, strict=True):
        for key, value in (result.metadata or {}).items():
            raw = getattr(value, "value", None) if isinstance(value, dg.JsonMetadataValue) else None
            if isinstance(raw, list):
                items = [
                    {"day": str(day), **item} if isinstance(item, dict) else item for item in raw
                ]
                merged.setdefault(key, []).extend(items)
    return {key: dg.MetadataValue.json(items) for key, items in merged.items()}
