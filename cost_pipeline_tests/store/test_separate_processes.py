"""Protects what every schedule, sensor and UI launch does: runs in their own processes.

Ingest in one process, then price and build the day in fresh processes (`dagster job execute`,
`dagster asset materialize`), then two processes materializing the same day at once — on SQLite
and on Postgres. The landed code deadlocked SQLite here (`database is locked`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

from cost_pipeline.catalog import DAILY_COST_SUMMARY, PRICED_INTERACTIONS
from cost_pipeline.demo.generator import DemoCompany
from cost_pipeline.lib.config import load_config, packaged_config_path
from cost_pipeline.store import queries
from cost_pipeline.store.warehouse import Warehouse

DAYS = [date(2026, 9, 2), date(2026, 9, 3)]
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def _env(tmp_path: Path, warehouse_url: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    raw = yaml.safe_load(packaged_config_path().read_text())
    raw["demo"]["enabled"] = False  # only the interaction log is configured
    raw["partitions"] = {"first_day": "2026-01-01"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    logs = tmp_path / "landing"
    DemoCompany(load_config(config), seed=5).write_log(
        logs, start=DAYS[0], days=len(DAYS), events_per_day=400, fmt="jsonl"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "COST_", "INTER"))}
    env.update(
        DAGSTER_HOME=str(home),
        COST_WAREHOUSE_URL=warehouse_url,
        COST_PIPELINE_CONFIG=str(config),
        INTERACTION_LOG_DIR=str(logs),
        PYTHONWARNINGS="ignore",
    )
    return env


def _dagster(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [DAGSTER, *args, "-m", "cost_pipeline.definitions"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _ok(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out[-4000:]
    return out


def test_runs_in_separate_processes_share_the_warehouse(warehouse_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path, warehouse_url)
    _ok(_dagster(env, "job", "execute", "-j", "ingest_job"))
    day = DAYS[0].isoformat()
    _ok(
        _dagster(env, "asset", "materialize", "--select", "priced_interactions", "--partition", day)
    )
    _ok(
        _dagster(
            env, "job", "execute", "-j", "daily_cost_job", "--tags",
            json.dumps({"dagster/partition": day}),
        )
    )  # fmt: skip
    # Two processes building the same days at once (a retry racing the schedule, say).
    both = [
        _dagster(
            env, "asset", "materialize", "--select", "priced_interactions,daily_cost_summary",
            "--partition-range", f"{DAYS[0]}...{DAYS[-1]}",
        )
        for _ in range(2)
    ]  # fmt: skip
    for process in both:
        _ok(process)

    wh = Warehouse(warehouse_url)
    for d in DAYS:
        totals = queries.priced_and_summary_totals(wh, d)
        assert totals["priced_calls"] > 300
        assert totals["priced_calls"] == totals["summary_requests"]
        assert abs(totals["priced_cost_usd"] - totals["summary_llm_cost_usd"]) < 1e-6
        assert queries.duplicate_event_ids(wh, d) == 0
    assert wh.count(PRICED_INTERACTIONS) == sum(
        queries.priced_and_summary_totals(wh, d)["priced_calls"] for d in DAYS
    )
    assert wh.count(DAILY_COST_SUMMARY, days=DAYS) > 0
    wh.dispose()
