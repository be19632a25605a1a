"""Protects the run queue's limits: each `tag_concurrency_limits` entry of the instance files
names a tag that the pipeline's jobs really carry (Dagster does not tag runs with their job, so
a limit keyed on a job name never applied)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cost_pipeline.definitions import defs

ROOT = Path(__file__).resolve().parents[2]


def _limits(path: Path) -> list[dict]:
    raw = yaml.safe_load(path.read_text())
    if path.name == "values.yaml":
        raw = raw["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
        return raw["tagConcurrencyLimits"]
    return raw["run_queue"]["tag_concurrency_limits"]


@pytest.mark.parametrize(
    "path", ["dagster.yaml", "deploy/dagster.postgres.yaml", "deploy/values.yaml"]
)
def test_every_queue_limit_matches_tags_the_jobs_carry(path: str) -> None:
    jobs = defs.get_repository_def().get_all_jobs()
    tagged = {(k, v) for job in jobs for k, v in (job.tags or {}).items()}
    limits = _limits(ROOT / path)
    assert limits
    for limit in limits:
        assert (limit["key"], limit["value"]) in tagged, limit
    names = {job.name for job in jobs if (job.tags or {}).get(limits[0]["key"]) == "daily_build"}
    assert {"daily_cost_job", "hourly_refresh_job", "daily_close_job"} <= names
