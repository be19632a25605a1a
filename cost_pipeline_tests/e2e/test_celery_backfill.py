"""Protects fan-out beyond one machine: a week backfilled through Dagster's Celery executor, on
a real broker and worker processes, gives the same ledger as one process.

The test starts two `dagster-celery` workers (separate process groups, configured by
`deploy/celery.yaml`) on RabbitMQ, with a fresh `DAGSTER_HOME` whose instance is
`deploy/dagster.postgres.yaml` on a fresh PostgreSQL database, and a fresh, unmigrated PostgreSQL
warehouse. With `COST_PIPELINE_EXECUTOR=celery`, `dagster job execute` runs the ingestion and then
a backfill of seven demo days of `daily_cost_job` in separate processes; every step of both runs is
a Celery task, executed by a worker. Meanwhile the same files are ingested and the same week built
by the default in-process executor on a second warehouse and a SQLite instance. The two ledgers
must agree: `daily_cost_summary` per day and tenant (requests, tokens, cost), and the row count of
every table the daily job writes.

The week is ONE run over the partition range, as a backfill of this job is (its assets'
`BackfillPolicy.single_run()`): Celery fans out the run's steps — the ingestion's three assets, the
daily graph's independent branches (calls, provider usage, provider bills, Kubernetes) — and each
step builds the days of the range oldest first, because forecasts, anomaly scores and budgets read
the days before. Scheduled and sensor runs are one day each and fan out the same way.

A second, quick test pins how a deployment chooses the executor: `COST_PIPELINE_EXECUTOR`
(`in_process` by default, `multiprocess`, `celery` with `COST_PIPELINE_CELERY_BROKER` and
`..._BACKEND` resolved when the run starts).

The backfill test needs RabbitMQ (`COST_PIPELINE_TEST_CELERY_BROKER`, default
`pyamqp://guest:guest@127.0.0.1:5672//`) and PostgreSQL (see conftest). Without a reachable broker
it is skipped, saying how to enable it; in CI (`CI` set) it fails instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from kombu import Connection

from cost_pipeline.catalog import DAILY_COST_SUMMARY, TABLES
from cost_pipeline.definitions import build_defs
from cost_pipeline.defs.pipeline import DAILY_ASSETS
from cost_pipeline.defs.resources import build_resources
from cost_pipeline.demo.generator import DemoCompany
from cost_pipeline.environment import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    DEFAULT_CELERY_BACKEND,
    DEFAULT_CELERY_BROKER,
    EXECUTOR_ENV,
    executor_definition,
)
from cost_pipeline.lib.config import CONFIG_ENV, load_config, packaged_config_path
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.conftest import throwaway_postgres_database

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAYS = [date(2026, 9, 7) + timedelta(days=i) for i in range(7)]
EVENTS_PER_DAY = 250
WORKERS = 2
COMMAND_TIMEOUT_SECONDS = 360
BROKER_ENV = "COST_PIPELINE_TEST_CELERY_BROKER"
DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
SUMMED = ["requests", "input_tokens", "output_tokens", "unpriced_requests", "cost_usd"]


def _enable_hint(url: str) -> str:
    return (
        f"Celery test skipped: no broker at {url}. Start RabbitMQ on 127.0.0.1:5672 to enable "
        f"(e.g. `rabbitmq-server -detached`), or set {BROKER_ENV} to a broker URL."
    )


def _broker_url() -> str:
    """The broker URL, or skip (locally) / fail (in CI, where this test must run)."""
    url = os.environ.get(BROKER_ENV, DEFAULT_BROKER)
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises the transport's own errors
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Celery test ({exc}). " + _enable_hint(url))
        pytest.skip(_enable_hint(url))
    return url


def _purge(broker: str) -> int:
    """Drop tasks left on the `dagster` queue (by an interrupted earlier run), so these workers
    only execute this test's steps."""
    from dagster_celery.make_app import make_app

    app = make_app({"broker": broker, "backend": "rpc://"})
    try:
        return int(app.control.purge() or 0)
    finally:
        app.close()


def _config(path: Path) -> Path:
    """The packaged demo company (with its provider, cloud and Kubernetes twins) around the week."""
    raw = yaml.safe_load(packaged_config_path().read_text())
    raw["demo"].update(enabled=True, start_date="2026-09-01", days=14)
    raw["partitions"] = {"first_day": "2026-09-01"}
    path.write_text(yaml.safe_dump(raw))
    return path


def _env(home: Path, warehouse_url: str, config: Path, landing: Path) -> dict[str, str]:
    foreign = (
        "DAGSTER_", "COST_", "INTER", "SLACK_", "STRIPE_", "OPENAI_", "ANTHROPIC_", "KUBECOST_",
        "FOCUS_",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(foreign)}
    env.update(
        DAGSTER_HOME=str(home),
        COST_WAREHOUSE_URL=warehouse_url,
        INTERACTION_LOG_DIR=str(landing),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `celery` of this interpreter
        PYTHONWARNINGS="ignore",
    )
    env[CONFIG_ENV] = str(config)
    return env


def _postgres_instance(home: Path, instance_url: str) -> dict[str, str]:
    """`deploy/dagster.postgres.yaml` as the instance; the variables it reads."""
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    pg = sa.engine.make_url(instance_url)
    return {
        "DAGSTER_PG_USERNAME": pg.username or "",
        "DAGSTER_PG_PASSWORD": pg.password or "",
        "DAGSTER_PG_HOST": pg.host or "127.0.0.1",
        "DAGSTER_PG_DB": pg.database or "",
    }


def _execute(env: dict[str, str], log: Path, *args: str) -> str:
    """`dagster job execute ...` in its own process; its output, or fail with its tail."""
    with log.open("w") as out:
        process = subprocess.run(
            [str(BIN / "dagster"), "job", "execute", *args, "-m", "cost_pipeline.definitions"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    text = log.read_text(errors="replace")
    assert process.returncode == 0, f"{' '.join(args)} failed:\n{text[-4000:]}"
    assert "RUN_SUCCESS" in text, text[-4000:]
    return text


def _ingest_and_backfill(env: dict[str, str], logs: Path) -> float:
    """The ingestion, then the week as one run of `daily_cost_job`; the seconds both took."""
    started = time.monotonic()
    _execute(env, logs / "ingest.log", "-j", "ingest_job")
    week = {
        "dagster/asset_partition_range_start": DAYS[0].isoformat(),
        "dagster/asset_partition_range_end": DAYS[-1].isoformat(),
    }
    _execute(env, logs / "backfill.log", "-j", "daily_cost_job", "--tags", json.dumps(week))
    return time.monotonic() - started


@contextmanager
def celery_workers(env: dict[str, str], logs: Path, n: int) -> Iterator[list[str]]:
    """`n` `dagster-celery` workers, each its own process group; yields their node names."""
    names = [f"cost-test-{uuid.uuid4().hex[:6]}-{i}" for i in range(n)]
    started: list[tuple[subprocess.Popen, Path]] = []
    try:
        for name in names:
            log = logs / f"worker-{name}.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    [
                        str(BIN / "dagster-celery"), "worker", "start",
                        "-A", "dagster_celery.app",
                        "-y", str(ROOT / "deploy" / "celery.yaml"),
                        "-n", name,
                        # Imported once in the worker, before it forks its pool process.
                        "-i", "cost_pipeline.definitions",
                        "--", "--concurrency", "1",
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            started.append((process, log))
        deadline = time.monotonic() + 120
        for process, log in started:
            while "ready." not in log.read_text(errors="replace"):
                assert process.poll() is None, f"worker exited:\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"worker not ready:\n{log.read_text()[-4000:]}"
                time.sleep(0.5)
        yield [f"{name}@" for name in names]
    finally:
        for process, _ in started:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (Celery's warm shutdown) to the worker's group, then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    with suppress(ProcessLookupError):  # the pool processes, if the worker itself is gone
        os.killpg(process.pid, signal.SIGKILL)


def _celery_hosts(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The Celery worker that executed each step of the run, one entry per step."""
    hosts = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = event.engine_event_data if event is not None else None
        if data is not None and "Celery worker" in (data.metadata or {}):
            hosts.append(str(data.metadata["Celery worker"].value))
    return hosts


def _summary(url: str) -> pd.DataFrame:
    """`daily_cost_summary` of the week per day and tenant."""
    wh = Warehouse(url)
    try:
        rows = wh.read(DAILY_COST_SUMMARY, days=DAYS)
    finally:
        wh.dispose()
    rows["day"] = rows["day"].astype(str)
    rows["cost_usd"] = rows["cost_usd"].astype(float)
    return rows.groupby(["day", "tenant_id"], as_index=False)[SUMMED].sum()


def _row_counts(url: str) -> dict[str, int]:
    """Rows in every table the daily job writes."""
    wh = Warehouse(url)
    try:
        return {name: wh.count(TABLES[name]) for name in DAILY_ASSETS if name in TABLES}
    finally:
        wh.dispose()


def test_celery_backfill_of_a_week_equals_a_single_process_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _broker_url()
    started = time.monotonic()
    config = _config(tmp_path / "config.yaml")
    landing = tmp_path / "landing"
    DemoCompany(load_config(config), seed=5).write_log(
        landing, start=DAYS[0], days=len(DAYS), events_per_day=EVENTS_PER_DAY, fmt="jsonl"
    )
    celery_logs, single_logs = tmp_path / "celery_logs", tmp_path / "single_logs"
    celery_logs.mkdir()
    single_logs.mkdir()

    with ExitStack() as stack:
        celery_warehouse = stack.enter_context(throwaway_postgres_database())
        single_warehouse = stack.enter_context(throwaway_postgres_database())
        instance_db = stack.enter_context(throwaway_postgres_database())

        celery_home = tmp_path / "celery_home"
        pg_env = _postgres_instance(celery_home, instance_db)
        celery_env = _env(celery_home, celery_warehouse, config, landing)
        celery_env.update(pg_env)
        celery_env[EXECUTOR_ENV] = "celery"
        celery_env[CELERY_BROKER_ENV] = broker
        celery_env[CELERY_BACKEND_ENV] = "rpc://"

        single_home = tmp_path / "single_home"
        single_home.mkdir()
        (single_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        single_env = _env(single_home, single_warehouse, config, landing)  # in_process: default

        # The instance's schema exists before the workers start, as in production (the
        # deployment migrates it): two workers creating it at the same moment race in
        # dagster-postgres ("type run_tags already exists").
        subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"],
            env=celery_env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        _purge(broker)
        stack.callback(_purge, broker)
        with ThreadPoolExecutor(max_workers=1) as pool:
            # The single-process reference builds at the same time, on its own stores.
            single = pool.submit(_ingest_and_backfill, single_env, single_logs)
            with celery_workers(celery_env, celery_logs, WORKERS) as workers:
                celery_seconds = _ingest_and_backfill(celery_env, celery_logs)
            single_seconds = single.result()

        for name, value in pg_env.items():
            monkeypatch.setenv(name, value)
        with dg.DagsterInstance.from_config(str(celery_home)) as instance:
            runs = instance.get_runs()
            assert sorted(r.job_name for r in runs) == ["daily_cost_job", "ingest_job"]
            hosts_by_run = {}
            for run in runs:
                assert run.status == dg.DagsterRunStatus.SUCCESS, run.job_name
                steps = {
                    e.step_key
                    for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
                }
                hosts = _celery_hosts(instance, run)
                # Every step ran in one of this test's workers, none in the run's process.
                assert len(hosts) == len(steps) > 0, (run.job_name, hosts, steps)
                assert all(h.startswith(tuple(workers)) for h in hosts), hosts
                hosts_by_run[run.job_name] = hosts
        all_hosts = [h for hosts in hosts_by_run.values() for h in hosts]
        assert len(set(all_hosts)) == WORKERS, f"the steps did not fan out: {all_hosts}"

        celery_summary, single_summary = _summary(celery_warehouse), _summary(single_warehouse)
        celery_counts, single_counts = _row_counts(celery_warehouse), _row_counts(single_warehouse)

    assert set(celery_summary["day"]) == {d.isoformat() for d in DAYS}
    assert celery_summary["tenant_id"].nunique() >= 20
    pd.testing.assert_frame_equal(
        celery_summary, single_summary, check_exact=False, rtol=0, atol=1e-9
    )
    assert celery_counts == single_counts
    assert celery_counts["daily_cost_summary"] > 0 and celery_counts["priced_interactions"] > 0
    print(
        f"\ncelery: {len(celery_summary)} day-tenant rows, "
        f"${celery_summary['cost_usd'].sum():.6f}, {int(celery_summary['requests'].sum())} "
        f"requests; single process: ${single_summary['cost_usd'].sum():.6f}, "
        f"{int(single_summary['requests'].sum())} requests; steps per worker: "
        f"{ {h: all_hosts.count(h) for h in sorted(set(all_hosts))} }; "
        f"celery {celery_seconds:.0f} s, single process {single_seconds:.0f} s, "
        f"test {time.monotonic() - started:.0f} s"
    )


# -- choosing the executor per deployment ----------------------------------------------------


def _resolved_celery_config() -> dict:
    executor = executor_definition()
    assert executor.name == "celery"
    result = executor.config_schema.resolve_config({})
    assert result.success, result.errors
    return result.value["config"]


def test_the_executor_is_in_process_unless_the_deployment_chooses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (EXECUTOR_ENV, CELERY_BROKER_ENV, CELERY_BACKEND_ENV):
        monkeypatch.delenv(name, raising=False)
    assert executor_definition() is dg.in_process_executor
    monkeypatch.setenv(EXECUTOR_ENV, "multiprocess")
    assert executor_definition() is dg.multiprocess_executor
    monkeypatch.setenv(EXECUTOR_ENV, " Celery ")
    assert _resolved_celery_config() == {
        "broker": DEFAULT_CELERY_BROKER, "backend": DEFAULT_CELERY_BACKEND,
        "retries": {"enabled": {}},
    }  # fmt: skip
    # Broker and backend are read in the run (an `env` source), not frozen into the definitions.
    monkeypatch.setenv(CELERY_BROKER_ENV, "pyamqp://costs:secret@rabbitmq:5672//")
    monkeypatch.setenv(CELERY_BACKEND_ENV, "redis://redis:6379/1")
    executor = executor_definition()
    monkeypatch.setenv(CELERY_BROKER_ENV, "pyamqp://costs:rotated@rabbitmq:5672//")
    config = executor.config_schema.resolve_config({}).value["config"]
    assert config["broker"] == "pyamqp://costs:rotated@rabbitmq:5672//"
    assert config["backend"] == "redis://redis:6379/1"
    # The project's jobs take it.
    defs = build_defs(build_resources(load_config()))
    for job in ("ingest_job", "daily_cost_job"):
        assert defs.resolve_job_def(job).executor_def.name == "celery"
    monkeypatch.setenv(EXECUTOR_ENV, "kubernetes")
    with pytest.raises(ValueError, match=f"{EXECUTOR_ENV}='kubernetes'.*in_process"):
        executor_definition()
