"""Protects `llm_interactions` and the late-data sensor: idempotent, quarantining, day-precise."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
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


def _summary_matches_calls(resources: dict, instance: dg.DagsterInstance) -> None:
    """Summarize 2026-09-02; its check that the summary equals the priced calls passes."""
    from cost_pipeline.defs.summaries.assets import summary_matches_priced_interactions

    summary = dg.materialize(
        [daily_cost_summary, summary_matches_priced_interactions],
        resources=resources,
        instance=instance,
        partition_key="2026-09-02",
    )
    [matches] = summary.get_asset_check_evaluations()
    assert matches.passed, matches.metadata


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
    _summary_matches_calls(resources, instance)
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


def _config_with_cards(tmp_path: Path, name: str, cards: list) -> str:
    """The pinned test configuration plus `rate_cards`, as a file for `CostConfigResource`."""
    import os

    import yaml

    from cost_pipeline.lib.config import CONFIG_ENV

    raw = yaml.safe_load(Path(os.environ[CONFIG_ENV]).read_text())
    raw["rate_cards"] = [c.model_dump(mode="json", exclude_defaults=True) for c in cards]
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_mixed_log_of_units_prices_exactly_and_reprices_on_a_rate_card_change(
    tmp_path: Path, warehouse_url: str
) -> None:
    """Chat, embeddings, TTS by characters, transcription by seconds, images, a video vendor
    priced by a rate card and an app-reported cost: every call at its published unit price;
    a unit nothing prices is quarantined; a changed rate card re-prices the stored day."""
    from decimal import Decimal

    from cost_pipeline.defs.pricing.assets import priced_interactions
    from cost_pipeline.lib.config import RateCard, load_config
    from cost_pipeline.lib.pricing import PricingEngine
    from cost_pipeline_tests.lib.test_usage_units import CARDS, MIXED, nanos, record

    log_dir = tmp_path / "log"
    records = [record(i, fields) for i, (fields, _, _) in enumerate(MIXED)]
    records.append(record(99, {"provider": "luma", "model": "ray-2", "video_seconds": 5}))
    records.append(record(98, {"provider": "elevenlabs", "model": "eleven_v3", "characters": 9}))
    write_jsonl(log_dir / "mixed.jsonl", records)
    v1 = _config_with_cards(tmp_path, "v1.yaml", CARDS)
    resources = {
        "warehouse": WarehouseResource(url=warehouse_url),
        "cost_config": CostConfigResource(path=v1),
        "interaction_log": LandingFolderResource(path=str(log_dir)),
    }
    instance = dg.DagsterInstance.ephemeral()
    ingest = dg.materialize(
        [llm_interactions, no_quarantined_interactions], resources=resources, instance=instance
    )
    meta = metadata(ingest)
    assert (meta["rows_loaded"], meta["rows_quarantined"]) == (len(MIXED), 2)
    wh = Warehouse(warehouse_url)
    reasons = sorted(wh.query("SELECT reason FROM quarantine")["reason"])
    assert reasons[0].startswith("no price for characters (9) of elevenlabs/eleven_v3")
    assert reasons[1].startswith("provider 'luma' is unknown")

    def stored() -> pd.DataFrame:
        frame = wh.read(PRICED_INTERACTIONS, days=[date(2026, 9, 2)])
        return frame.set_index("event_id").loc[[f"u{i}" for i in range(len(MIXED))]]

    rows = stored()
    for (event_id, row), (_, expected, status) in zip(rows.iterrows(), MIXED, strict=True):
        assert row["pricing_status"] == status, event_id
        assert Decimal(f"{row['cost_usd']:.9f}") == nanos(expected), event_id
    assert rows.loc["u3", "characters"] == 1234 and rows.loc["u6", "audio_seconds"] == 95.0
    assert rows.loc["u8", "image_size"] == "1024X1024" and rows.loc["u8", "images"] == 2

    # The video vendor's price changes: the stored day is re-priced under the new version.
    cheaper = RateCard(provider="pika", model="pika-*", video_seconds={"usd": "0.05"})
    v2_cards = [CARDS[0], cheaper, CARDS[2]]
    v2 = _config_with_cards(tmp_path, "v2.yaml", v2_cards)
    resources["cost_config"] = CostConfigResource(path=v2)
    repriced = dg.materialize(
        [priced_interactions], resources=resources, instance=instance, partition_key="2026-09-02"
    )
    mat = repriced.asset_materializations_for_node("priced_interactions")[0]
    assert mat.metadata["repriced_calls"].value == len(MIXED)
    after = stored()
    version = PricingEngine.for_config(load_config(v2)).price_version
    assert set(after["price_version"]) == {version}
    pika = MIXED.index(next(m for m in MIXED if m[0].get("provider") == "pika"))
    assert after.loc[f"u{pika}", "cost_usd"] == pytest.approx(0.325, abs=1e-12)
    unchanged = after.index != f"u{pika}"
    np.testing.assert_allclose(
        after.loc[unchanged, "cost_usd"], rows.loc[unchanged, "cost_usd"], atol=1e-12
    )
    _summary_matches_calls(resources, instance)
    counts = wh.query(
        "SELECT SUM(rate_card_requests) AS cards, SUM(app_reported_requests) AS reported "
        "FROM daily_cost_summary WHERE cost_category = 'llm'"
    ).iloc[0]
    assert (int(counts["cards"]), int(counts["reported"])) == (4, 2)
    wh.dispose()
