"""Pins the shape of the Dagster definitions: asset keys, groups, dependencies, partitions,
backfill policies, column schemas, checks (and which block), jobs, schedules and sensors.

A change to any of them must be deliberate: regenerate the snapshot with
`UPDATE_SNAPSHOTS=1 pytest cost_pipeline_tests/architecture` and review its diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from cost_pipeline.definitions import defs

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DailyPartitionsDefinition):
        return "daily"
    if isinstance(partitions_def, dg.MonthlyPartitionsDefinition):
        return "monthly"
    return type(partitions_def).__name__


def shape(definitions: dg.Definitions) -> dict:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        policy = node.backfill_policy
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "backfill": None if policy is None else policy.policy_type.value,
            "column_schema": "dagster/column_schema" in (node.metadata or {}),
        }
    checks = {
        f"{k.asset_key.to_user_string()}:{k.name}": {"blocking": graph.get(k).blocking}
        for k in sorted(
            graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)
        )
    }
    return {
        "assets": assets,
        "checks": checks,
        "jobs": sorted(j.name for j in definitions.jobs),
        "schedules": {
            s.name: s.cron_schedule for s in sorted(definitions.schedules, key=lambda s: s.name)
        },
        "sensors": sorted(s.name for s in definitions.sensors),
    }


def test_definitions_match_the_snapshot() -> None:
    current = shape(defs)
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_table_asset_publishes_its_columns() -> None:
    from cost_pipeline.catalog import TABLES

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        table = (node.metadata or {}).get("table")
        if table is not None:
            assert str(getattr(table, "value", table)) in TABLES
