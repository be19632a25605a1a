"""Protects `llm_interactions` and the late-data sensor: idempotent, quarantining, day-precise."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from cost_pipeline.catalog import PRICED_INTERACTIONS
from cost_pipeline.defs.ingestion.assets import llm_interactions, no_quarantined_interactions
from cost_pipeline.defs.ingestion.sensors import late_data_sensor_for
from cost_pipeline.defs.partitions import daily_partitions
from cost_pipeline.defs.summaries.assets import daily_cost_summary
from cost_pipeline.resources.landing import LandingFolderResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse


def event(i: int, day: str = "2026-09-02", **changes: object) -> dict:
    record = {
        "event_id": f"ev-{day}-{i}",
        "occurred_at": f"{day}T10:00:{i % 60:02d}Z",
        "tenant_id": "acme",
        "agent_id": "support-bot",
        "provider": "openai",
        "model": "gpt-4o-mini-2024-07-18",
        "input_tokens": 1200,
        "cache_read_tokens": 200,
        "output_tokens": 300,
    }
    record.update(changes)
    return record


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    )
    return path


@pytest.fixture
def ingest(tmp_path: Path, warehouse_url: str, request: pytest.FixtureRequest):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(),
        "interaction_log": LandingFolderResource(path=str(log_dir)),
    }
    # Tests that read the instance back (sensors) ask for `dagster_instance`: same engine.
    if "dagster_instance" in request.fixturenames:
        instance = request.getfixturevalue("dagster_instance")
    else:
        instance = dg.DagsterInstance.ephemeral()

    def run() -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [llm_interactions, no_quarantined_interactions], resources=resources, instance=instance
        )

    return log_dir, run, Warehouse(warehouse_url), instance


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    mat = result.asset_materializations_for_node("llm_interactions")[0]
    return {k: v.value for k, v in mat.metadata.items()}


def test_same_file_and_duplicate_events_add_nothing(ingest) -> None:
    log_dir, run, wh, _ = ingest
    write_jsonl(log_dir / "a.jsonl", [event(i) for i in range(10)])
    assert metadata(run())["rows_loaded"] == 10
    assert metadata(run())["files_already_seen"] == 1
    # A new file repeating 4 known events and adding 2 new ones.
    write_jsonl(log_dir / "b.jsonl", [event(i) for i in range(6, 12)])
    meta = metadata(run())
    assert (meta["rows_loaded"], meta["duplicates_dropped"]) == (2, 4)
    assert wh.query("SELECT COUNT(*) AS n FROM llm_interactions")["n"].iloc[0] == 12


def test_bad_records_are_quarantined_and_good_ones_load(ingest) -> None:
    log_dir, run, wh, _ = ingest
    bad = [
        "{not json",
        event(100, tenant_id=None),
        event(101, output_tokens=-5),
        event(102, occurred_at="yesterday-ish"),
        event(103, provider="acme-llm"),
    ]
    write_jsonl(log_dir / "mixed.jsonl", [event(i) for i in range(20)] + bad)
    result = run()
    assert result.success
    meta = metadata(result)
    assert (meta["rows_loaded"], meta["rows_quarantined"]) == (20, 5)
    quarantined = wh.query("SELECT raw, reason FROM quarantine ORDER BY raw")
    assert len(quarantined) == 5
    assert "{not json" in set(quarantined["raw"])
    assert all(quarantined["reason"].str.len() > 10)
    checks = result.get_asset_check_evaluations()
    assert [(c.passed, c.severity) for c in checks] == [(False, dg.AssetCheckSeverity.WARN)]


def test_unconfigured_source_materializes_empty(tmp_path: Path, sqlite_url: str) -> None:
    result = dg.materialize(
        [llm_interactions],
        resources={
            "warehouse": WarehouseResource(url=sqlite_url),
            "cost_config": CostConfigResource(),
            "interaction_log": LandingFolderResource(path=""),
        },
    )
    assert metadata(result)["source"] == "not configured"


def test_late_sensor_requests_each_touched_day_once(ingest, dagster_instance) -> None:
    log_dir, run, _, instance = ingest
    job = dg.define_asset_job(
        "daily_cost_job", selection=[daily_cost_summary], partitions_def=daily_partitions
    )
    sensor = late_data_sensor_for(job)
    write_jsonl(log_dir / "a.jsonl", [event(1, "2026-09-02"), event(2, "2026-09-03")])
    run()
    first = sensor(dg.build_sensor_context(instance=instance))
    assert sorted(r.partition_key for r in first.run_requests) == ["2026-09-02", "2026-09-03"]
    # Same materialization, evaluated again from the new cursor: nothing more.
    again = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert not again.run_requests
    # A late event for 09-02 only.
    write_jsonl(log_dir / "late.jsonl", [event(3, "2026-09-02")])
    run()
    late = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert [r.partition_key for r in late.run_requests] == ["2026-09-02"]
    assert late.run_requests[0].run_key != first.run_requests[0].run_key


def test_one_percent_garbage_is_quarantined_and_the_rest_priced(
    tmp_path: Path, warehouse_url: str, demo_config
) -> None:
    from cost_pipeline.defs.pricing.assets import no_unknown_models, priced_interactions
    from cost_pipeline.demo.generator import DemoCompany

    log_dir = tmp_path / "log"
    written = DemoCompany(demo_config, seed=3).write_log(
        log_dir,
        start=date(2026, 9, 2),
        days=1,
        events_per_day=2000,
        garbage_fraction=0.01,
        late_fraction=0.0,
    )
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(),
        "interaction_log": LandingFolderResource(path=str(log_dir)),
    }
    instance = dg.DagsterInstance.ephemeral()
    ingest = dg.materialize(
        [llm_interactions, no_quarantined_interactions], resources=resources, instance=instance
    )
    assert ingest.success
    garbage = sum(written.garbage_by_kind.values())
    assert garbage >= 15
    meta = metadata(ingest)
    assert meta["rows_quarantined"] == garbage
    [check] = ingest.get_asset_check_evaluations()
    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.WARN)
    priced = dg.materialize(
        [priced_interactions, no_unknown_models],
        resources=resources,
        instance=instance,
        partition_key="2026-09-02",
    )
    assert priced.success
    wh = Warehouse(warehouse_url)
    counts = wh.query(
        "SELECT (SELECT COUNT(*) FROM llm_interactions) AS loaded, "
        "(SELECT COUNT(*) FROM priced_interactions "
        "WHERE pricing_status IN ('priced', 'tier_fallback', 'override')) AS priced, "
        "(SELECT COUNT(*) FROM quarantine WHERE reason <> '') AS with_reason"
    ).iloc[0]
    assert counts["loaded"] == meta["rows_loaded"] == counts["priced"]
    assert counts["with_reason"] == garbage

    # The day's summary: its aggregate SQL (SUMs of BIGINT and NUMERIC) matches on every engine.
    from cost_pipeline.defs.summaries.assets import summary_matches_priced_interactions

    summary = dg.materialize(
        [daily_cost_summary, summary_matches_priced_interactions],
        resources=resources,
        instance=instance,
        partition_key="2026-09-02",
    )
    [matches] = summary.get_asset_check_evaluations()
    assert matches.passed, matches.metadata
    llm = wh.query(
        "SELECT SUM(requests) AS n, SUM(input_tokens) AS tokens, SUM(cost_usd) AS usd "
        "FROM daily_cost_summary WHERE cost_category = 'llm'"
    ).iloc[0]
    priced_rows = wh.read(PRICED_INTERACTIONS)
    assert int(llm["n"]) == len(priced_rows) == counts["priced"]
    assert int(llm["tokens"]) == int(priced_rows["input_tokens"].sum())
    assert float(llm["usd"]) == pytest.approx(priced_rows["cost_usd"].sum(), abs=1e-6)


def test_a_later_file_restating_an_event_replaces_it_and_rebuilds_its_day(
    ingest, warehouse_url: str
) -> None:
    from cost_pipeline.defs.pricing.assets import priced_interactions

    log_dir, run, wh, instance = ingest
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(),
        "interaction_log": LandingFolderResource(path=str(log_dir)),
    }

    def summary_cost() -> float:
        for assets in ([priced_interactions], [daily_cost_summary]):
            result = dg.materialize(
                assets, resources=resources, instance=instance, partition_key="2026-09-02"
            )
            assert result.success
        return float(
            wh.query(
                "SELECT SUM(cost_usd) AS usd FROM daily_cost_summary "
                "WHERE day = :day AND cost_category = 'llm'",
                {"day": date(2026, 9, 2)},
            )["usd"].iloc[0]
        )

    write_jsonl(log_dir / "a.jsonl", [event(i) for i in range(5)])
    assert metadata(run())["rows_loaded"] == 5
    before = summary_cost()
    old_cost = float(
        wh.query("SELECT cost_usd FROM priced_interactions WHERE event_id = 'ev-2026-09-02-1'")[
            "cost_usd"
        ].iloc[0]
    )

    # A later file: event 1 restated (more output tokens), event 2 an exact repeat, 5 new.
    write_jsonl(log_dir / "b.jsonl", [event(1, output_tokens=3000), event(2), event(5)])
    meta = metadata(run())
    assert (meta["rows_loaded"], meta["restatements"], meta["duplicates_dropped"]) == (1, 1, 1)
    assert meta["restated_in_file"] == 0
    assert meta["new_rows_by_day"] == {"2026-09-02": 2}

    stored = wh.read(PRICED_INTERACTIONS).set_index("event_id")
    assert len(stored) == 6
    assert stored.loc["ev-2026-09-02-1", "output_tokens"] == 3000
    assert stored.loc["ev-2026-09-02-1", "source_file"].endswith("b.jsonl")
    new_cost = float(stored.loc["ev-2026-09-02-1", "cost_usd"])
    assert new_cost > old_cost

    [revision] = wh.query(
        "SELECT event_id, old_content, new_content, old_cost_usd, new_cost_usd, "
        "old_source_file, new_source_file FROM interaction_revisions"
    ).to_dict("records")
    assert revision["event_id"] == "ev-2026-09-02-1"
    assert json.loads(revision["old_content"])["output_tokens"] == 300
    assert json.loads(revision["new_content"])["output_tokens"] == 3000
    assert float(revision["old_cost_usd"]) == pytest.approx(old_cost, abs=1e-9)
    assert float(revision["new_cost_usd"]) == pytest.approx(new_cost, abs=1e-9)
    assert revision["old_source_file"].endswith("a.jsonl")
    assert revision["new_source_file"].endswith("b.jsonl")

    # The day rebuilt from the warehouse: the restated cost replaces the old one.
    after = summary_cost()
    new_event = float(stored.loc["ev-2026-09-02-5", "cost_usd"])
    assert after == pytest.approx(before - old_cost + new_cost + new_event, abs=1e-6)


def test_late_sensor_requests_a_day_whose_only_change_is_a_restatement(
    ingest, dagster_instance
) -> None:
    log_dir, run, _, instance = ingest
    job = dg.define_asset_job(
        "daily_cost_job", selection=[daily_cost_summary], partitions_def=daily_partitions
    )
    sensor = late_data_sensor_for(job)
    write_jsonl(log_dir / "a.jsonl", [event(1, "2026-09-02"), event(2, "2026-09-03")])
    run()
    first = sensor(dg.build_sensor_context(instance=instance))
    write_jsonl(log_dir / "fix.jsonl", [event(2, "2026-09-03", input_tokens=5000)])
    meta = metadata(run())
    assert (meta["rows_loaded"], meta["restatements"]) == (0, 1)
    late = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    assert [r.partition_key for r in late.run_requests] == ["2026-09-03"]
