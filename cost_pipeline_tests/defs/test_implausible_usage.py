"""Protects the ledger from numbers that cannot be right: absurd token counts never get priced."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from cost_pipeline.catalog import PRICED_INTERACTIONS, QUARANTINE
from cost_pipeline.defs.ingestion.assets import llm_interactions
from cost_pipeline.resources.landing import LandingFolderResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse

BASE = {
    "occurred_at": "2026-09-02T10:00:00Z",
    "tenant_id": "acme",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "input_tokens": 1000,
    "output_tokens": 100,
}


def test_1e15_and_1e17_token_calls_are_quarantined_not_priced(
    tmp_path: Path, warehouse_url: str
) -> None:
    log = tmp_path / "log"
    log.mkdir()
    records = [
        {**BASE, "event_id": "good"},
        {**BASE, "event_id": "e15", "input_tokens": 10**15},
        {**BASE, "event_id": "e17", "output_tokens": 10**17},
    ]
    (log / "calls.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    result = dg.materialize(
        [llm_interactions],
        resources={
            "warehouse": WarehouseResource(url=warehouse_url),
            "cost_config": CostConfigResource(),
            "interaction_log": LandingFolderResource(path=str(log)),
        },
    )
    assert result.success
    wh = Warehouse(warehouse_url)
    priced = wh.read(PRICED_INTERACTIONS)
    assert priced["event_id"].tolist() == ["good"]
    assert priced["cost_usd"].max() < 0.01
    quarantined = wh.read(QUARANTINE)
    assert len(quarantined) == 2
    assert quarantined["reason"].str.startswith("implausible_usage").all()
    assert sorted(quarantined["line"].tolist()) == [2, 3]
    assert set(quarantined["source_file"]) == {"calls.jsonl"}
    wh.dispose()
