"""Command line: `cost-pipeline demo | run | migrate | summary | estimate`.

`demo` generates the demo company's data (once), then materializes every asset for every demo
day on the Dagster instance in `$DAGSTER_HOME`, so that `dagster dev` shows the same runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)


def _ensure_dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".cost_pipeline").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _days(start: date, count: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(count)]


def generate_demo_data(*, fresh: bool = False) -> list[date]:
    """Write the demo company's source files under the state folder; return the demo days."""
    from cost_pipeline import environment
    from cost_pipeline.demo.generator import DemoCompany
    from cost_pipeline.lib.config import load_config

    config = load_config(environment.config_file() or None)
    if not config.demo.enabled:
        raise SystemExit("the configuration has demo.enabled = false: refusing to write demo data")
    demo = config.demo
    days = demo.window(datetime.now(UTC).date())
    out = environment.demo_data_dir()
    log_dir = out / "interactions"
    if fresh or not (log_dir / f"interactions-{days[-1]}.jsonl.gz").exists():
        print(f"generating {len(days)} days of the demo company into {out} ...", flush=True)
        shutil.rmtree(log_dir, ignore_errors=True)  # an older window's files would linger
        started = time.perf_counter()
        summary = DemoCompany(config, seed=demo.seed).write_log(
            log_dir, start=days[0], days=len(days), events_per_day=demo.events_per_day
        )
        print(f"  {summary} ({time.perf_counter() - started:.1f} s)", flush=True)
    for extra in _demo_extras():
        extra(config, out, days, fresh=fresh)
    return days


def _demo_extras() -> list:
    """Writers of the other demo sources (speech and video calls priced by rate cards; cloud
    exports, when those domains are installed)."""
    from cost_pipeline.demo.media import write_demo_media

    writers = [write_demo_media]
    try:
        from cost_pipeline.demo.infrastructure import write_demo_sources
    except ImportError:
        return writers
    writers.append(write_demo_sources)
    return writers


PLANNED_AS_RANGE_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"

# Keep the console to one progress line per run; the full logs are in the instance (the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _run(job, *, instance, label: str, run_config: dict | None = None, **kwargs):
    """Execute a job in process, quietly; print one line with its outcome and duration."""
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={**QUIET, **(run_config or {})},
        **kwargs,
    )
    status = "ok" if result.success else "FAILED"
    print(f"{label} {status} ({time.perf_counter() - started:.1f} s)", flush=True)
    return result


def materialize_days(days: Sequence[date], *, instance=None, skip_built: bool = False) -> None:
    """Ingest, the daily job per day, today so far, the monthly jobs, then one tick of the action
    sensors.

    With `skip_built` (the demo), days whose every daily asset is already materialized and that
    this ingestion did not change are not rebuilt: a second demo only does what is new.

    The sensors are evaluated here exactly as the daemon would evaluate them, and the runs they
    request (Slack alerts, the Stripe billing run) are executed in process — so the demo shows
    the outbox and the billing ledger without a daemon running.
    """
    from cost_pipeline.definitions import defs
    from cost_pipeline.defs.partitions import monthly_partitions

    instance = instance or dg.DagsterInstance.get()
    # A ranged run announces each asset once with its range, not once per asset and day (1,210
    # events for the demo's 55 days). Dagster's documented cost: a failed run's days are not
    # marked failed in the UI; this command says which run failed and exits 1 instead.
    if PLANNED_AS_RANGE_ENV not in os.environ:
        os.environ[PLANNED_AS_RANGE_ENV] = "true"
        try:
            return materialize_days(days, instance=instance, skip_built=skip_built)
        finally:
            del os.environ[PLANNED_AS_RANGE_ENV]
    started = time.perf_counter()
    ingest = _run(defs.resolve_job_def("ingest_job"), instance=instance, label="ingest_job")
    if not ingest.success:
        raise SystemExit(1)
    if skip_built:
        todo = _days_to_build(days, ingest, instance)
        if len(todo) < len(days):
            print(f"{len(days) - len(todo)} day(s) already built and unchanged: skipped")
        days = todo
    job = defs.resolve_job_def("daily_cost_job")
    failed: list[object] = []
    # One run per contiguous stretch of days: the daily assets build a range in a single run.
    for first, last in _stretches(days):
        label = f"{first} .. {last} daily_cost_job ({(last - first).days + 1} day(s))"
        if not _run(job, instance=instance, label=label, tags=_range_tags(first, last)).success:
            failed.append(f"daily_cost_job {first} .. {last}")
    # Today so far (not a daily partition until it is over), as the hourly refresh builds it.
    if not _run(
        defs.resolve_job_def("hourly_refresh_job"), instance=instance, label="today so far"
    ).success:
        failed.append("hourly_refresh_job")
    # Monthly outputs exist for complete months only (the current one is not a partition yet).
    closed = set(monthly_partitions.get_partition_keys())
    months = sorted({d.strftime("%Y-%m-01") for d in days} & closed)
    for month in months:
        if not _run(
            defs.resolve_job_def("focus_export_job"),
            instance=instance,
            partition_key=month,
            label=f"{month[:7]} focus_export_job",
        ).success:
            failed.append(f"focus_export_job {month[:7]}")
    run_action_sensors(defs, instance)
    # Close the complete months the days cover from their first to their last day.
    for month in months:
        first = date.fromisoformat(month)
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        if (
            first in days
            and last in days
            and not _run(
                defs.resolve_job_def("billing_close_job"),
                instance=instance,
                partition_key=month,
                label=f"{month[:7]} billing_close_job",
            ).success
        ):
            failed.append(f"billing_close_job {month[:7]}")
    print(f"materialized {len(days)} day(s) in {time.perf_counter() - started:.0f} s")
    if failed:
        print(f"FAILED: {', '.join(map(str, failed))}", file=sys.stderr)
        raise SystemExit(1)


def _days_to_build(days: Sequence[date], ingest, instance) -> list[date]:
    """The days not yet built by every daily asset, plus those this ingestion changed."""
    from cost_pipeline.defs.ingestion.sensors import WATCHED, changed_days
    from cost_pipeline.defs.pipeline import DAILY_ASSETS

    changed: set[str] = set()
    for asset, entry in WATCHED.items():
        for mat in ingest.asset_materializations_for_node(asset):
            changed.update(changed_days(mat.metadata, entry))
    built = set.intersection(
        *(set(instance.get_materialized_partitions(dg.AssetKey(a))) for a in DAILY_ASSETS)
    )
    return [d for d in days if d.isoformat() not in built or d.isoformat() in changed]


def _stretches(days: Sequence[date]) -> list[tuple[date, date]]:
    """Contiguous (first, last) runs of the sorted days."""
    out: list[tuple[date, date]] = []
    for day in sorted(days):
        if out and day == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def _range_tags(first: date, last: date) -> dict[str, str]:
    return {
        ASSET_PARTITION_RANGE_START_TAG: first.isoformat(),
        ASSET_PARTITION_RANGE_END_TAG: last.isoformat(),
    }


ACTION_SENSORS = ("budget_alert_sensor", "anomaly_alert_sensor", "billing_run_sensor")


def run_action_sensors(defs, instance) -> None:
    """One evaluation of the alert and billing sensors, and the runs they request."""
    for name in ACTION_SENSORS:
        sensor = defs.resolve_sensor_def(name)
        with dg.build_sensor_context(
            instance=instance, resources=defs.resources, sensor_name=name
        ) as context:
            result = sensor.evaluate_tick(context)
        if not result.run_requests:
            print(f"{name}: {result.skip_message or 'nothing to do'}")
            continue
        job = defs.resolve_job_def(sensor.job_name)
        for request in result.run_requests:
            _run(
                job,
                instance=instance,
                label=f"{name} -> {job.name}",
                run_config=request.run_config or {},
                tags=request.tags,
                partition_key=request.partition_key,
            )


def print_summary(days: Sequence[date]) -> None:
    """Totals by category and the top tenants over the given days, from the warehouse."""
    from cost_pipeline import environment
    from cost_pipeline.lib.summary import top_tenants
    from cost_pipeline.store import queries
    from cost_pipeline.store.warehouse import Warehouse, redact_url

    wh = Warehouse(environment.default_warehouse_url())
    wh.migrate()
    found = queries.report(wh, days)
    totals = found["totals"]
    quarantined = int(found["quarantine"]["records"].sum())
    with pd.option_context("display.float_format", "{:,.2f}".format, "display.width", 120):
        print(f"\nwarehouse: {redact_url(wh.url)}   days: {min(days)} .. {max(days)}")
        print(f"\ncost by category (USD):\n{totals.to_string(index=False)}")
        print(f"\ntotal: ${totals['cost_usd'].sum():,.2f}   quarantined records: {quarantined}")
        if quarantined:
            print(f"\nquarantine by reason:\n{found['quarantine'].head(10).to_string(index=False)}")
        tenants = top_tenants(found["by_tenant"], n=10)
        print(f"\ntop tenants, whole cost by category (USD):\n{tenants.to_string(index=False)}")
        print(f"\nalert outbox:\n{found['outbox'].to_string(index=False)}")
        print(_alert_lines(found["alerts"]))
        print(
            "\nStripe meter events in the billing ledger:\n"
            + found["meter_events"].to_string(index=False)
        )
        if len(found["bills"]):
            print(f"\noverage billed, per tenant:\n{found['bills'].to_string(index=False)}")
        if len(found["blocked"]):
            print(f"\nblocked tenants:\n{found['blocked'].to_string(index=False)}")
        margins = found["margins"]
        print(
            "\nlowest and highest margins of the last complete month:\n"
            + pd.concat([margins.head(5), margins.tail(5)]).to_string(index=False)
        )
    wh.dispose()


def _alert_lines(alerts: pd.DataFrame, limit: int = 40) -> str:
    """One line per alert (kind, day, tenant, the message's first line), at most `limit`."""
    if alerts.empty:
        return "\nno alert"
    lines = [
        f"  {r.kind:<16} {r.day or ''!s:<10} {r.tenant_id:<12} " + str(r.text).splitlines()[0][:90]
        for r in alerts.head(limit).itertuples()
    ]
    more = f"\n  ... and {len(alerts) - limit} more" if len(alerts) > limit else ""
    return "\nalerts:\n" + "\n".join(lines) + more


def migrate() -> None:
    """Create or migrate the warehouse's tables, views and day partitions."""
    from cost_pipeline import environment
    from cost_pipeline.lib.config import load_config
    from cost_pipeline.store.warehouse import Warehouse, redact_url

    config = load_config(environment.config_file() or None)
    wh = Warehouse(environment.default_warehouse_url())
    changes = wh.migrate(first_day=config.first_partition_day(datetime.now(UTC).date()))
    print(f"warehouse {redact_url(wh.url)}: " + ("; ".join(changes) or "up to date"))
    wh.dispose()


ENFORCEMENT_COMMANDS = ("decide", "override", "suspend", "revoke")


def _enforcement_parsers(sub: argparse._SubParsersAction) -> None:
    decide = sub.add_parser("decide", help="ask the enforcement decision for a call (exit 3: no)")
    override = sub.add_parser("override", help="let a tenant's (or scope's) calls through")
    suspend = sub.add_parser("suspend", help="deny a tenant's (or one scope's) calls")
    for p in (decide, override, suspend):
        p.add_argument("tenant")
        group = p.add_mutually_exclusive_group()
        for scope in ("agent", "model", "provider", "user"):
            group.add_argument(f"--{scope}")
    decide.add_argument("--cost", type=float, default=0.0, help="estimated cost of the call, USD")
    override.add_argument("--hours", type=float, required=True, help="overrides always expire")
    suspend.add_argument("--hours", type=float, help="default: until revoked")
    revoke = sub.add_parser("revoke", help="end an override or a suspension")
    revoke.add_argument("action_id")
    for p in (override, suspend, revoke):
        p.add_argument("--reason", required=True)
        p.add_argument("--by", required=True, help="who asks (recorded in the audit)")


def enforcement_command(args: argparse.Namespace) -> int:
    """`decide`, `override`, `suspend` and `revoke`; every change is audited."""
    from cost_pipeline import environment
    from cost_pipeline.enforcement import Enforcer
    from cost_pipeline.lib.config import load_config
    from cost_pipeline.store import enforcement as store
    from cost_pipeline.store.warehouse import Warehouse

    wh = Warehouse(environment.default_warehouse_url())
    now = datetime.now(UTC)
    if args.command == "revoke":
        done = store.revoke_action(wh, args.action_id, actor=args.by, reason=args.reason, now=now)
        print(f"revoked {args.action_id}" if done else f"no active action {args.action_id}")
        return 0 if done else 1
    scope = next((s for s in ("agent", "model", "provider", "user") if getattr(args, s)), "tenant")
    value = getattr(args, scope) if scope != "tenant" else ""
    if args.command == "decide":
        d = Enforcer(wh.url).decide(
            args.tenant, args.agent, args.model, args.provider, args.cost, user=args.user, now=now
        )
        print(f"{'ALLOW' if d.allowed else 'DENY'} ({d.state}): {d.reason}")
        if d.limit is not None:
            print(f"limit {d.limit:.2f}  spent {d.spent:.2f}  remaining {d.remaining:.2f} USD")
        return 0 if d.allowed else 3
    config = load_config(environment.config_file() or None)
    wh.migrate(first_day=config.first_partition_day(now.date()))  # the tables may be new
    action_id = store.record_action(
        wh,
        kind=args.command.replace("suspend", "suspension"),
        tenant_id=args.tenant,
        scope=scope,
        scope_value=value,
        reason=args.reason,
        actor=args.by,
        expires_at=now + timedelta(hours=args.hours) if args.hours else None,
        now=now,
    )
    print(f"{args.command} {action_id}: {args.tenant} {scope} {value}".rstrip())
    return 0


def _estimate_parser(sub: argparse._SubParsersAction) -> None:
    est = sub.add_parser("estimate", help="the price range of a call before it is made")
    est.add_argument("provider")
    est.add_argument("model")
    size = est.add_mutually_exclusive_group()
    size.add_argument("--input-tokens", type=int, help="total input tokens, if known")
    size.add_argument("--text", help="the prompt: sized offline (a range), or characters (TTS)")
    size.add_argument("--text-file", type=Path, help="read the prompt from a file")
    est.add_argument("--max-output-tokens", type=int, default=0)
    est.add_argument("--cached-input-tokens", type=int, default=0)
    est.add_argument("--service-tier")
    est.add_argument("--batch", action="store_true")
    est.add_argument("--web-searches", type=int, default=0)
    for unit, kind in (
        ("characters", int),
        ("audio-seconds", float),
        ("video-seconds", float),
        ("images", int),
        ("requests", int),
    ):
        est.add_argument(f"--{unit}", type=kind)
    est.add_argument("--image-size")
    est.add_argument("--image-quality")
    est.add_argument("--at", type=datetime.fromisoformat, help="an instant with an offset")


def estimate_command(args: argparse.Namespace) -> int:
    """Print an estimate (`cost_pipeline.estimate`); exit 1 when nothing prices the call."""
    from cost_pipeline import environment
    from cost_pipeline.estimate import estimate_cost
    from cost_pipeline.lib.config import load_config

    text = args.text_file.read_text(encoding="utf-8") if args.text_file else args.text
    e = estimate_cost(
        args.provider,
        args.model,
        args.input_tokens,
        args.max_output_tokens,
        text=text,
        cached_input_tokens=args.cached_input_tokens,
        service_tier=args.service_tier,
        batch=args.batch,
        web_searches=args.web_searches,
        characters=args.characters,
        audio_seconds=args.audio_seconds,
        video_seconds=args.video_seconds,
        images=args.images,
        image_size=args.image_size,
        image_quality=args.image_quality,
        requests=args.requests,
        at=args.at,
        config=load_config(environment.config_file() or None),
    )
    if e.priced:
        print(f"${e.low_usd} .. ${e.high_usd}  ({e.pricing_status}, price {e.price_version})")
    else:
        print(f"no estimate: {e.pricing_status} (price {e.price_version})")
    for line in e.assumptions:
        print(f"  - {line}")
    return 0 if e.priced else 1


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cost-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate the demo company and materialize every day")
    demo.add_argument("--fresh", action="store_true", help="regenerate the demo data")
    demo.add_argument("--days", type=int, help="materialize only the first N demo days")
    run = sub.add_parser("run", help="ingest, then materialize the daily job for a day range")
    run.add_argument("--start", type=date.fromisoformat, required=True)
    run.add_argument("--end", type=date.fromisoformat, required=True)
    sub.add_parser("migrate", help="create or migrate the warehouse tables (idempotent)")
    summ = sub.add_parser("summary", help="print totals and top tenants for a day range")
    summ.add_argument("--start", type=date.fromisoformat, required=True)
    summ.add_argument("--end", type=date.fromisoformat, required=True)
    _enforcement_parsers(sub)
    _estimate_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "estimate":  # no instance, no warehouse: the rate card only
        raise SystemExit(estimate_command(args))
    # Dagster's beta/preview notices are for the code's authors, not for the person running it.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    home = _ensure_dagster_home()
    if args.command == "demo":
        days = generate_demo_data(fresh=args.fresh)
        if args.days:
            days = days[: args.days]
        materialize_days(days, skip_built=True)
        print_summary(days)
        print(f"\nopen the UI on this instance: make ui   (DAGSTER_HOME={home})")
    elif args.command == "run":
        days = _days(args.start, (args.end - args.start).days + 1)
        materialize_days(days)
        print_summary(days)
    elif args.command == "migrate":
        migrate()
    elif args.command in ENFORCEMENT_COMMANDS:
        raise SystemExit(enforcement_command(args))
    else:
        print_summary(_days(args.start, (args.end - args.start).days + 1))


if __name__ == "__main__":
    main()
