"""Benchmark: wall time and peak memory to ingest, price and summarize one demo day.

    python -m cost_pipeline_tests.benchmarks.bench_pipeline --events 1000000,10000000

For each size, one generated day is run through the project's three assets on PostgreSQL and on
SQLite, and through a DuckDB reference of the same computation (`duckdb_reference`), in the same
run on the same file; the ratios to the reference and between sizes are printed.

Each engine runs in its own child process, so its peak RSS is its own. The day's JSON Lines file is
generated once (not timed). PostgreSQL uses a throw-away database on
COST_PIPELINE_TEST_POSTGRES_URL (default: the local server).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import sqlalchemy as sa

DAY = date(2026, 10, 6)
MODULE = "cost_pipeline_tests.benchmarks.bench_pipeline"
ADMIN_URL = os.environ.get(
    "COST_PIPELINE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def generate(out: Path, events: int) -> Path:
    from cost_pipeline.demo.generator import DemoCompany
    from cost_pipeline.lib.config import load_config

    log_dir = out / "interactions"
    if not any(log_dir.glob("*")):
        DemoCompany(load_config(), seed=11).write_log(
            log_dir, start=DAY, days=1, events_per_day=events, fmt="jsonl", late_fraction=0.0
        )
    return log_dir


def peak_rss_kib() -> int:
    """This process's own peak resident memory (VmHWM).

    Not `getrusage().ru_maxrss`: on Linux that survives fork and exec, so a child would report
    the parent's peak (the generator's) instead of its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(url: str, log_dir: str) -> None:
    """Run the three assets for DAY on `url` and print timings and peak RSS as JSON."""
    import dagster as dg

    from cost_pipeline.defs.ingestion.assets import llm_interactions
    from cost_pipeline.defs.pricing.assets import priced_interactions
    from cost_pipeline.defs.summaries.assets import daily_cost_summary
    from cost_pipeline.resources.landing import LandingFolderResource
    from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource

    resources = {
        "warehouse": WarehouseResource(url=url),
        "cost_config": CostConfigResource(),
        "interaction_log": LandingFolderResource(path=log_dir),
    }
    instance = dg.DagsterInstance.ephemeral()
    timings = {}
    for name, asset, partition in (
        ("ingest", llm_interactions, None),
        ("price", priced_interactions, DAY.isoformat()),
        ("summarize", daily_cost_summary, DAY.isoformat()),
    ):
        started = time.perf_counter()
        result = dg.materialize(
            [asset], resources=resources, instance=instance, partition_key=partition
        )
        assert result.success, name
        timings[name] = round(time.perf_counter() - started, 2)
    timings["total"] = round(sum(timings.values()), 2)
    timings["peak_rss_mb"] = round(peak_rss_kib() / 1024)
    print(json.dumps(timings))


def run_engine(engine: str, log_dir: Path, work: Path) -> dict:
    admin = None
    if engine == "sqlite":
        url = f"sqlite:///{work / f'bench-{uuid.uuid4().hex[:6]}.db'}"
    else:
        name = f"cost_pipeline_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(False)
    try:
        out = subprocess.run(
            [sys.executable, "-m", MODULE, "--child", url, str(log_dir)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"{engine} run failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", default="1000000", help="comma-separated day sizes")
    parser.add_argument("--engines", default="postgres,sqlite")
    parser.add_argument("--child", nargs=2, metavar=("URL", "LOG_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from cost_pipeline_tests.benchmarks import duckdb_reference

    totals: dict[tuple[str, int], float] = {}
    for events in (int(n) for n in args.events.split(",")):
        with tempfile.TemporaryDirectory(prefix="cost-bench-") as tmp:
            work = Path(tmp)
            started = time.perf_counter()
            log_dir = generate(work, events)
            size = sum(p.stat().st_size for p in log_dir.glob("*")) / 1e6
            print(
                f"\n{events:,} events ({size:,.0f} MB JSON Lines), generated in "
                f"{time.perf_counter() - started:.1f} s (not timed below)"
            )
            reference = duckdb_reference.run(log_dir)
            header = ("engine", "ingest s", "price s", "summ. s", "total s", "peak MB", "x DuckDB")
            print(f"{header[0]:<10} " + " ".join(f"{h:>9}" for h in header[1:]))
            print(
                f"{'duckdb':<10} {'':>9} {'':>9} {'':>9} {reference['seconds']:>9} {'':>9} {1:>9}"
            )
            for engine in args.engines.split(","):
                t = run_engine(engine, log_dir, work)
                cells = " ".join(f"{t[k]:>9}" for k in ("ingest", "price", "summarize", "total"))
                ratio = t["total"] / reference["seconds"]
                print(f"{engine:<10} {cells} {t['peak_rss_mb']:>9} {ratio:>9.1f}", flush=True)
                totals[(engine, events)] = t["total"]
    sizes = sorted({n for _, n in totals})
    for engine in args.engines.split(","):
        for small, large in itertools.pairwise(sizes):
            if (engine, small) in totals and (engine, large) in totals:
                growth = totals[(engine, large)] / totals[(engine, small)]
                print(f"{engine}: {large:,} / {small:,} events took {growth:.1f}x the time")


if __name__ == "__main__":
    main()
