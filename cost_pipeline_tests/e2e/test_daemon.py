"""Protects unattended operation: the real `dagster-daemon` alone turns landed log files into the
ledger, a Slack alert and a Stripe meter event — each once — on SQLite and on PostgreSQL.

Nothing runs in the test process but the loopback Slack and Stripe fakes and the observation of
the stores. The test starts the schedules (`dagster schedule start --start-all`) and the daemon
on a fresh temporary `DAGSTER_HOME` (the repository's `dagster.yaml`: its run queue and run
monitoring; on PostgreSQL, storage in a fresh database through dagster-postgres) and a fresh,
unmigrated warehouse, then drops two small demo days into the landing folder. The daemon must
ingest them (`ingest_schedule`), price and summarize each day (`late_data_sensor` ->
`daily_cost_job`), alert (`budget_alert_sensor` -> `alert_delivery_job` -> Slack) and bill
(`billing_run_sensor` -> `billing_run_job` -> Stripe). The configuration makes both sinks certain
to have work: one enterprise tenant's monthly budget is a dollar, and the enterprise tier includes
no usage, so every enterprise tenant's first call is overage. The daemon is done when every
sensor has ticked after the last run ended without asking for another; then every run and tick
must have succeeded, and every alert and meter event must have been sent exactly once.

Two knobs keep it within a couple of minutes: `COST_PIPELINE_SENSOR_INTERVAL_SECONDS` (read once,
in `cost_pipeline.environment`) shortens every sensor's minimum interval, and the code location
the daemon loads, `daemon_defs` below, is the project's `build_defs()` with `ingest_schedule`
ticking every minute instead of every 15 — the project has no file sensor, so a landed file waits
for that schedule.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from cost_pipeline import environment
from cost_pipeline.catalog import (
    ALERT_OUTBOX,
    BILLING_LEDGER,
    BUDGET_STATUS,
    DAILY_COST_SUMMARY,
    OVERAGE_CHARGES,
    PRICED_INTERACTIONS,
)
from cost_pipeline.demo.generator import DemoCompany
from cost_pipeline.enforcement import Enforcer
from cost_pipeline.environment import SENSOR_INTERVAL_ENV
from cost_pipeline.lib.config import CONFIG_ENV, CostConfig, load_config, packaged_config_path
from cost_pipeline.lib.outbox import keys_in_metadata
from cost_pipeline.lib.periods import local_period_keys, period_of
from cost_pipeline.store import queries
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.conftest import throwaway_postgres_database
from cost_pipeline_tests.fakes.slack import FakeSlack
from cost_pipeline_tests.fakes.stripe import METER_EVENTS, FakeStripe

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAYS_BACK = 2  # the landed days: the two UTC days before today
EVENTS_PER_DAY = 300
SENSOR_INTERVAL_SECONDS = 3
# The sensors that turn the landed files into the ledger, alerts and meter events.
ACTION_SENSORS = {
    "late_data_sensor", "budget_alert_sensor", "anomaly_alert_sensor", "billing_run_sensor",
}  # fmt: skip
DEADLINE_SECONDS = 220
# The tenant whose budget is a dollar (it alerts) and the tier that includes no usage (billed).
ALERTED_TENANT = "beacon"
BILLED_TIER = "enterprise"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ACTIVE = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


@dg.definitions
def daemon_defs() -> dg.Definitions:
    """The project's definitions, with `ingest_schedule` every minute instead of every 15."""
    from cost_pipeline.definitions import build_defs

    defs = build_defs()
    schedules = [
        dg.ScheduleDefinition(
            name=s.name,
            job_name=s.job_name,
            cron_schedule="* * * * *",
            description=s.description,
        )
        if s.name == "ingest_schedule"
        else s
        for s in defs.schedules or []
    ]
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        schedules=schedules,
        sensors=defs.sensors,
        jobs=defs.jobs,
        resources=defs.resources,
        executor=defs.executor,
        loggers=defs.loggers,
        metadata=defs.metadata,
    )


def _days() -> list[date]:
    today = datetime.now(UTC).date()
    return [today - timedelta(days=i) for i in range(DAYS_BACK, 0, -1)]


def _config(path: Path, days: list[date]) -> Path:
    """The packaged tenants with only the interaction log as source, a one-dollar budget for
    `ALERTED_TENANT` and no included usage in the `BILLED_TIER` tier."""
    raw = yaml.safe_load(packaged_config_path().read_text())
    raw["demo"]["enabled"] = False  # no provider, cloud or Kubernetes twins: only the log
    raw["partitions"] = {"first_day": days[0].replace(day=1).isoformat()}
    raw["tiers"][BILLED_TIER]["included_usage_usd"] = 0
    tenant = next(t for t in raw["tenants"] if t["id"] == ALERTED_TENANT)
    assert tenant["tier"] == BILLED_TIER and tenant.get("stripe_customer_id")
    tenant["budget"] = {"monthly_usd": 1, "blocking": True}
    path.write_text(yaml.safe_dump(raw))
    return path


def _libpq(url: str) -> str:
    """dagster-postgres takes a plain libpq URL."""
    return sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)


@pytest.fixture
def stores(db_engine: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(warehouse URL, instance storage settings), both fresh and empty, on the engine: a SQLite
    file and the instance's default SQLite storage, or two new PostgreSQL databases."""
    if db_engine == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}", {}
        return
    with ExitStack() as stack:
        warehouse = stack.enter_context(throwaway_postgres_database())
        instance = stack.enter_context(throwaway_postgres_database())
        yield warehouse, {"storage": {"postgres": {"postgres_url": _libpq(instance)}}}


class Daemon:
    """`dagster-daemon run` in its own process group (its code server and runs with it)."""

    def __init__(self, env: dict[str, str], workspace: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.process = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self, lines: int = 60) -> str:
        """The last lines the daemon, its code server and its runs printed, without colours."""
        text = ANSI.sub("", self.log.read_text(errors="replace"))
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Interrupt the daemon (it stops its code server), then end what is left in its group:
        a run it was executing, or everything if it did not stop within 30 s."""
        pid = self.process.pid
        if not self.exited():
            self.process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not self.exited():
                time.sleep(0.2)
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._out.close()

    def exited(self) -> bool:
        """Has the daemon exited? Asked without reaping it: until `stop()` reaps it, its
        group id cannot be reused, so ending the group ends only what it started."""
        status = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        return status is not None


def _env(
    home: Path,
    warehouse_url: str,
    config: Path,
    landing: Path,
    slack: FakeSlack,
    stripe: FakeStripe,
) -> dict[str, str]:
    sinks_and_sources = (
        "DAGSTER_", "COST_", "INTER", "SLACK_", "STRIPE_", "OPENAI_", "ANTHROPIC_", "KUBECOST_",
        "FOCUS_",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(sinks_and_sources)}
    env.update(
        DAGSTER_HOME=str(home),
        COST_WAREHOUSE_URL=warehouse_url,
        INTERACTION_LOG_DIR=str(landing),
        SLACK_BOT_TOKEN=slack.token,
        SLACK_BASE_URL=slack.base_url,
        STRIPE_API_KEY="sk_test_daemon",
        STRIPE_API_BASE=stripe.url,
        PYTHONWARNINGS="ignore",
    )
    env[CONFIG_ENV] = str(config)
    env[SENSOR_INTERVAL_ENV] = str(SENSOR_INTERVAL_SECONDS)
    return env


def _instance_home(tmp_path: Path, storage: dict[str, Any]) -> Path:
    """A DAGSTER_HOME with the repository's dagster.yaml, plus the storage settings."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    settings = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    settings.update(storage)
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    return home


def _workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace.yaml"
    location = {
        "module_name": __name__,
        "attribute": "daemon_defs",
        "location_name": "cost_pipeline",
        "working_directory": str(ROOT),
    }
    path.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
    return path


def _land(landing: Path, staging: Path, days: list[date], config: Path) -> int:
    """Generate the demo days in `staging`, move each file into `landing` in one step, and
    return how many calls they hold."""
    written = DemoCompany(load_config(config), seed=5).write_log(
        staging, start=days[0], days=len(days), events_per_day=EVENTS_PER_DAY, fmt="jsonl"
    )
    files = sorted(staging.glob("*.jsonl"))
    assert len(files) >= len(days) and written.events > 0 and written.garbage_lines == 0
    for path in files:
        os.replace(path, landing / path.name)
    return written.events


def _runs(instance: dg.DagsterInstance) -> list[dg.RunRecord]:
    return list(instance.get_run_records(ascending=True))


def _describe_runs(instance: dg.DagsterInstance, since: float) -> str:
    """One line per run: id, job, partition, status, seconds from `since` to its creation and
    its start and end; the failure messages of a failed run."""
    lines = []
    for record in _runs(instance):
        run = record.dagster_run
        partition = run.tags.get("dagster/partition", "")
        moments = [record.create_timestamp.timestamp(), record.start_time, record.end_time]
        at = " ".join(f"{m - since:6.1f}" if m else "     -" for m in moments)
        lines.append(
            f"{run.run_id[:8]} {run.job_name:<20} {partition:<10} {run.status.value:<8} {at}"
        )
        if run.status == dg.DagsterRunStatus.FAILURE:
            for entry in instance.all_logs(run.run_id):
                if entry.is_dagster_event and entry.dagster_event.is_failure:
                    lines.append(f"    {entry.dagster_event.message or entry.user_message}"[:600])
    return "\n".join(lines) or "(no runs)"


def _sensor_states(instance: dg.DagsterInstance) -> dict[str, Any]:
    """The instance's state of every sensor the daemon has evaluated, by name."""
    return {
        s.instigator_name: s
        for s in instance.all_instigator_state()
        if s.instigator_type.value == "SENSOR"
    }


def _describe_sensors(instance: dg.DagsterInstance) -> str:
    """One line per sensor: how many ticks ended how; the first failure's root cause."""
    lines = []
    for name, state in sorted(_sensor_states(instance).items()):
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        counts = Counter(t.status.value for t in ticks)
        lines.append(f"{name:<24} {dict(counts)}")
        failed = [t for t in ticks if t.status.value == "FAILURE" and t.error is not None]
        if failed:  # the root cause, where it was raised
            error = failed[-1].error
            while error.cause is not None:
                error = error.cause
            lines.append(f"    {error.message.strip()}"[:600])
            lines += [f"    {frame.strip()}"[:300] for frame in error.stack[-2:]]
    return "\n".join(lines) or "(no sensor evaluated yet)"


def _settled(instance: dg.DagsterInstance) -> list[dg.RunRecord] | None:
    """Every run, once the ingest ran, no run is in flight, and every sensor has finished a
    tick that began after the last run ended without requesting another — the daemon has
    nothing left to do until `ingest_schedule` ticks again; else None."""
    runs = _runs(instance)
    if not any(r.dagster_run.job_name == "ingest_job" for r in runs):
        return None
    if any(r.dagster_run.status in ACTIVE for r in runs):
        return None
    last_end = max((r.end_time or r.create_timestamp.timestamp()) for r in runs)
    states = _sensor_states(instance)
    if not set(states) >= ACTION_SENSORS:
        return None
    for state in states.values():
        latest = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if not latest or latest[0].timestamp <= last_end or latest[0].status.value == "STARTED":
            return None
    if len(_runs(instance)) != len(runs):  # a run appeared while the ticks were read
        return None
    return runs


def _sinks_fed(wh: Warehouse, days: list[date], slack: FakeSlack, stripe: FakeStripe) -> bool:
    if not slack.messages or not stripe.live_events():
        return False
    return all(queries.priced_and_summary_totals(wh, d)["summary_requests"] > 0 for d in days)


def test_daemon_runs_the_ledger_unattended(
    stores: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    warehouse_url, storage = stores
    days = _days()
    config = _config(tmp_path / "config.yaml", days)
    landing, staging = tmp_path / "landing", tmp_path / "staging"
    landing.mkdir()
    home = _instance_home(tmp_path, storage)
    workspace = _workspace(tmp_path)
    slack, stripe = FakeSlack().start(), FakeStripe().start()
    env = _env(home, warehouse_url, config, landing, slack, stripe)
    daemon: Daemon | None = None
    instance: dg.DagsterInstance | None = None
    wh: Warehouse | None = None
    started, wall = time.monotonic(), time.time()
    try:
        # Before the daemon, so that one process creates the instance's storage.
        start = subprocess.run(
            [str(BIN / "dagster"), "schedule", "start", "--start-all", "-w", str(workspace)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert start.returncode == 0, start.stdout + start.stderr
        daemon = Daemon(env, workspace, tmp_path / "daemon.log")
        calls = _land(landing, staging, days, config)
        instance = dg.DagsterInstance.from_config(str(home))

        def diagnostics(why: str) -> str:
            assert daemon is not None and instance is not None
            return (
                f"{why} after {time.monotonic() - started:.0f} s\n--- runs ---\n"
                f"{_describe_runs(instance, wall)}\n--- sensor ticks ---\n"
                f"{_describe_sensors(instance)}\n--- Slack: {len(slack.messages)} message(s); "
                f"Stripe: {len(stripe.live_events())} meter event(s)\n--- daemon output ---\n"
                f"{daemon.tail()}"
            )

        while True:
            assert not daemon.exited(), diagnostics("the daemon exited")
            records = _settled(instance)
            if records is not None:
                # The warehouse exists once the ingest ran (the runs migrate it themselves).
                wh = wh or Warehouse(warehouse_url)
                if _sinks_fed(wh, days, slack, stripe):
                    break
            assert time.monotonic() - started < DEADLINE_SECONDS, diagnostics("not done")
            time.sleep(2)

        # Shown by pytest if an assertion below fails (with -s, always).
        print(f"\n[{warehouse_url.split(':')[0]}] {diagnostics('settled')}")
        failed = [r for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
        assert not failed, diagnostics("runs did not succeed")
        assert "FAILURE" not in _describe_sensors(instance), diagnostics("a sensor tick failed")
        jobs = Counter(r.dagster_run.job_name for r in records)
        for job in ("ingest_job", "daily_cost_job", "alert_delivery_job", "billing_run_job"):
            assert jobs[job] >= 1, diagnostics(f"no {job} run")
        built = {
            r.dagster_run.tags.get("dagster/partition")
            for r in records
            if r.dagster_run.job_name == "daily_cost_job"
        }
        assert {d.isoformat() for d in days} <= built, diagnostics("a landed day was not built")

        _assert_ledger(wh, days, calls)
        _assert_decided_on_ingested_calls(warehouse_url, load_config(config), wh, days[-1])
        _assert_slack_once(wh, slack)
        _assert_stripe_once(wh, stripe, load_config(config))
    finally:
        if daemon is not None:
            daemon.stop()
        if instance is not None:
            instance.dispose()
        if wh is not None:
            wh.dispose()
        slack.stop()
        stripe.stop()


def _assert_ledger(wh: Warehouse, days: list[date], calls: int) -> None:
    """Every landed call is priced once, in its day, and each day's summary equals its calls."""
    priced = 0
    for day in days:
        totals = queries.priced_and_summary_totals(wh, day)
        assert totals["priced_calls"] > 0, (day, totals)
        assert totals["priced_calls"] == totals["summary_requests"], (day, totals)
        assert abs(totals["priced_cost_usd"] - totals["summary_llm_cost_usd"]) < 1e-6, totals
        assert queries.duplicate_event_ids(wh, day) == 0
        priced += totals["priced_calls"]
    assert priced == calls == wh.count(PRICED_INTERACTIONS)
    assert wh.count(DAILY_COST_SUMMARY, days=days) > 0


def _assert_decided_on_ingested_calls(
    url: str, config: CostConfig, wh: Warehouse, day: date
) -> None:
    """`decide` counts exactly the calls the daemon's ingestions stored (its counters moved in
    their transactions) and denies the tenant whose blocking one-dollar budget they reached."""
    now = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    zone = config.tenants_by_id[ALERTED_TENANT].timezone
    period = period_of(now, zone).key
    calls = wh.read(PRICED_INTERACTIONS, where={"tenant_id": [ALERTED_TENANT]})
    in_period = local_period_keys(calls["occurred_at"], pd.Series(zone, index=calls.index))
    llm = float(calls.loc[in_period.eq(period), "cost_usd"].sum())
    status = wh.read(BUDGET_STATUS, where={"tenant_id": [ALERTED_TENANT], "period": [period]})
    other = float(status.sort_values("day")["other_cost_usd"].iloc[-1]) if len(status) else 0.0
    d = Enforcer(url, config).decide(ALERTED_TENANT, now=now)
    assert d.state != "unknown", d
    # The live counters hold exactly the stored calls; the other cost comes from the close.
    assert d.spent == pytest.approx(llm + other, abs=1e-6), (d, llm, other)
    if d.spent >= 1:
        assert not d.allowed and "budget reached" in d.reason, d


def _assert_slack_once(wh: Warehouse, slack: FakeSlack) -> None:
    """Every alert the outbox holds as sent reached Slack exactly once, and no other did; the
    rest were superseded before sending (a higher threshold of the same tenant and period
    arrived first, as when two alert runs overlap); the budget alert is among those sent."""
    delivered = Counter(key for m in slack.messages for key in keys_in_metadata(m.metadata))
    twice = {k: n for k, n in delivered.items() if n > 1}
    assert not twice, f"alerts posted more than once: {twice}"
    outbox = wh.read(ALERT_OUTBOX)
    states = outbox[["alert_key", "kind", "status", "attempts", "last_error"]]
    assert set(outbox["status"]) <= {"sent", "superseded"}, states
    sent = outbox[outbox["status"].eq("sent")]
    assert set(sent["alert_key"]) == set(delivered), (states, delivered)
    budget = sent[
        sent["tenant_id"].eq(ALERTED_TENANT)
        & sent["kind"].isin(["budget_threshold", "forecast_breach"])
    ]
    assert not budget.empty, states


def _assert_stripe_once(wh: Warehouse, stripe: FakeStripe, config: CostConfig) -> None:
    """Each meter event was posted once, Stripe holds exactly what the ledger says it sent, and
    that is each customer's computed overage — every enterprise tenant's."""
    posted = Counter(
        r["params"].get("identifier") for r in stripe.state.requests if r["path"] == METER_EVENTS
    )
    twice = {k: n for k, n in posted.items() if n > 1}
    assert not twice, f"meter events posted more than once: {twice}"
    ledger = wh.read(BILLING_LEDGER)
    events = ledger[ledger["kind"].eq("meter_event")]
    assert set(ledger["kind"]) == {"meter_event"}, ledger  # no hold, no pending credit
    assert set(events["mode"]) == {"live"} and set(events["status"]) == {"sent"}, events
    live = stripe.live_events()
    assert sorted(e["identifier"] for e in live) == sorted(events["identifier"])
    sent = events.groupby("stripe_customer_id")["value_cents"].sum().astype(int).to_dict()
    assert stripe.totals_by_customer() == sent
    charges = wh.read(OVERAGE_CHARGES)
    due = charges[charges["amount_cents"].gt(0)]
    assert due["stripe_customer_id"].notna().all(), due
    assert sent == due.groupby("stripe_customer_id")["amount_cents"].sum().astype(int).to_dict()
    enterprise = {t.stripe_customer_id for t in config.tenants if t.tier == BILLED_TIER}
    assert enterprise and enterprise <= set(sent), (enterprise, sent)


@pytest.mark.parametrize(("raw", "seconds"), [(None, 60), ("", 60), ("3", 3), (" 45 ", 45)])
def test_sensor_interval_comes_from_the_environment(
    raw: str | None, seconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if raw is None:
        monkeypatch.delenv(SENSOR_INTERVAL_ENV, raising=False)
    else:
        monkeypatch.setenv(SENSOR_INTERVAL_ENV, raw)
    assert environment.sensor_interval_seconds() == seconds


@pytest.mark.parametrize("raw", ["0", "-5", "1.5", "soon"])
def test_a_bad_sensor_interval_fails_naming_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SENSOR_INTERVAL_ENV, raw)
    with pytest.raises(ValueError, match=SENSOR_INTERVAL_ENV):
        environment.sensor_interval_seconds()
