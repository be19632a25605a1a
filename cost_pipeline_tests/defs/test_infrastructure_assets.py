"""Protects the infra assets: re-deliveries replace, allocation conserves, export validates."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import time_machine

from cost_pipeline.catalog import (
    CLOUD_COSTS,
    DAILY_COST_SUMMARY,
    INFRA_COST_ALLOCATION,
    K8S_ALLOCATIONS,
    QUARANTINE,
)
from cost_pipeline.defs.infrastructure.assets import (
    cloud_costs,
    focus_export,
    infra_cost_allocation,
    k8s_allocations,
)
from cost_pipeline.defs.summaries.assets import daily_cost_summary
from cost_pipeline.demo.infrastructure import focus_rows
from cost_pipeline.lib.allocation import infra_summary_rows
from cost_pipeline.lib.config import load_config
from cost_pipeline.lib.focus_export import export_paths, read_focus_export
from cost_pipeline.resources.focus_exports import FocusExports, FocusExportsTwin
from cost_pipeline.resources.kubecost import KubecostResource, KubecostTwin
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes.kubecost import FakeKubecost, allocation
from cost_pipeline_tests.lib.test_focus import focus_frame

DAY = "2026-09-02"


@pytest.fixture
def url(warehouse_url: str) -> str:
    """The warehouse on each engine (SQLite and Postgres)."""
    return warehouse_url


def resources(url: str, **extra: object) -> dict[str, object]:
    return {"warehouse": WarehouseResource(url=url), "cost_config": CostConfigResource(), **extra}


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    mats = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mats[-1].metadata.items()}


def deliver(root: Path, name: str, df: pd.DataFrame, at: datetime, suffix: str = ".csv") -> Path:
    path = root / name / f"part-1{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, compression="infer")
    os.utime(path, (at.timestamp(), at.timestamp()))
    return path


def test_redelivery_replaces_and_stale_delivery_is_ignored(tmp_path: Path, url: str) -> None:
    root = tmp_path / "exports"
    focus = FocusExports(path=str(root))
    wh = Warehouse(url)

    def run() -> dict:
        result = dg.materialize([cloud_costs], resources=resources(url, focus_exports=focus))
        return metadata(result, "cloud_costs")

    mid = focus_frame("1.2", n=3)
    mid.loc[2, "BilledCost"] = "bad"
    deliver(root, "2026-09/run-a", mid, datetime(2026, 9, 16, tzinfo=UTC))
    deliver(root, "gcp/2026-09", focus_frame("1.0", n=2, ProviderName="Google Cloud"),
            datetime(2026, 9, 16, tzinfo=UTC), ".parquet")  # fmt: skip
    first = run()
    assert first["rows_loaded"] == 4 and first["rows_quarantined"] == 1
    assert wh.read(CLOUD_COSTS)["effective_cost"].sum() == pytest.approx(4 * 1.5)
    assert len(wh.read(QUARANTINE, where={"source": ["cloud_costs"]})) == 1

    final = focus_frame("1.2", n=10, EffectiveCost="2.0")
    deliver(root, "2026-09/run-b", final, datetime(2026, 10, 3, tzinfo=UTC), ".csv.gz")
    second = run()
    rows = wh.read(CLOUD_COSTS)
    by_provider = rows.groupby("provider")["effective_cost"].sum().to_dict()
    # Microsoft's September is the final delivery only (not added to run-a); GCP's is untouched
    assert by_provider == pytest.approx({"Microsoft": 20.0, "Google Cloud": 3.0})
    assert second["rows_replaced"] == 2
    assert set(second["changed_days"]) == {f"2026-09-{d:02d}" for d in range(1, 11)}

    # the same files again add nothing; an older delivery arriving late is not loaded
    assert run()["deliveries_loaded"] == 0
    deliver(root, "2026-09/run-0", focus_frame("1.2", n=1, EffectiveCost="99"),
            datetime(2026, 9, 5, tzinfo=UTC))  # fmt: skip
    late = run()
    assert late["stale_scopes_skipped"] == 1
    assert wh.read(CLOUD_COSTS)["effective_cost"].sum() == pytest.approx(23.0)

    # A newer delivery with a file that cannot be read is not loaded, and the check says so.
    broken = deliver(root, "2026-09/run-c", final, datetime(2026, 10, 9, tzinfo=UTC), ".parquet")
    broken.write_bytes(b"PAR1 not really parquet")
    os.utime(broken, (datetime(2026, 10, 9, tzinfo=UTC).timestamp(),) * 2)
    result = dg.materialize([cloud_costs], resources=resources(url, focus_exports=focus))
    (check,) = [
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "focus_deliveries_complete"
    ]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "run-c" in check.description
    assert wh.read(CLOUD_COSTS)["effective_cost"].sum() == pytest.approx(23.0)


def test_a_provider_whose_export_stopped_is_named_stale(tmp_path: Path, url: str) -> None:
    root = tmp_path / "exports"
    focus = FocusExports(path=str(root))
    # Microsoft's rows reach 2026-09-10, Google Cloud's stop on 2026-09-02.
    deliver(root, "azure/2026-09", focus_frame("1.2", n=10), datetime(2026, 9, 11, tzinfo=UTC))
    deliver(root, "gcp/2026-09", focus_frame("1.0", n=2, ProviderName="Google Cloud"),
            datetime(2026, 9, 3, tzinfo=UTC))  # fmt: skip

    def freshness(now: datetime) -> dg.AssetCheckEvaluation:
        with time_machine.travel(now):
            result = dg.materialize([cloud_costs], resources=resources(url, focus_exports=focus))
        (check,) = [
            c for c in result.get_asset_check_evaluations() if c.check_name == "focus_data_fresh"
        ]
        return check

    on_time = freshness(datetime(2026, 9, 5, 6, tzinfo=UTC))
    assert on_time.passed
    late = freshness(datetime(2026, 9, 12, 6, tzinfo=UTC))
    assert not late.passed and late.severity == dg.AssetCheckSeverity.WARN
    assert "Google Cloud ends on 2026-09-02 (10 days ago)" in late.description
    assert "Microsoft" not in late.description
    assert late.metadata["days_behind"].value == {"Google Cloud": 10, "Microsoft": 2}


def test_unconfigured_sources_materialize_empty(url: str) -> None:
    result = dg.materialize(
        [cloud_costs, k8s_allocations],
        partition_key=DAY,
        resources=resources(url, focus_exports=FocusExports(), kubecost=KubecostResource()),
    )
    assert metadata(result, "cloud_costs")["source"] == "not configured"
    assert metadata(result, "k8s_allocations")["source"] == "not configured"
    assert Warehouse(url).count(K8S_ALLOCATIONS) == 0


def test_k8s_allocations_from_opencost_server(url: str) -> None:
    with FakeKubecost("opencost") as fake:
        window = "2026-09-02T00:00:00Z,2026-09-03T00:00:00Z"
        fake.sets[window] = {
            "tenant-acme/acme": allocation(
                "tenant-acme/acme", namespace="tenant-acme", total=5.0, labels={"tenant": "acme"}
            ),
            "__idle__": allocation("__idle__", namespace="__idle__", total=1.0),
        }
        fake.fail_next("500")
        kube = KubecostResource(url=fake.url, flavor="opencost", backoff_seconds=0.01)
        for _ in range(2):  # re-running the day replaces it
            dg.materialize(
                [k8s_allocations], partition_key=DAY, resources=resources(url, kubecost=kube)
            )
    rows = Warehouse(url).read(K8S_ALLOCATIONS, days=[date(2026, 9, 2)])
    assert dict(zip(rows["allocation_name"], rows["tenant_id"], strict=True)) == {
        "tenant-acme/acme": "acme",
        "__idle__": None,
    }


WINDOW = "2026-09-02T00:00:00Z,2026-09-03T00:00:00Z"


def _acme(total: float) -> dict:
    return allocation(
        "tenant-acme/acme", namespace="tenant-acme", total=total, labels={"tenant": "acme"}
    )


def test_an_empty_or_failed_answer_for_a_recent_day_keeps_the_stored_day(url: str) -> None:
    with FakeKubecost() as fake, time_machine.travel(datetime(2026, 9, 3, 6, tzinfo=UTC)):
        kube = KubecostResource(url=fake.url, backoff_seconds=0.01, max_retries=1)
        res = resources(url, kubecost=kube)
        fake.sets[WINDOW] = {"tenant-acme/acme": _acme(5.0)}
        assert dg.materialize([k8s_allocations], partition_key=DAY, resources=res).success
        fake.sets[WINDOW] = {}  # the source lost the day (retention, restart, a bad query)
        empty = dg.materialize([k8s_allocations], partition_key=DAY, resources=res)
        fake.fail_next("500", times=5)
        instance = dg.DagsterInstance.ephemeral()
        failed = dg.materialize(
            [k8s_allocations], partition_key=DAY, resources=res, instance=instance
        )
        # The day's summary still builds on the stored rows and names the missing source.
        summary = dg.materialize(
            [daily_cost_summary], partition_key=DAY, resources=res, instance=instance
        )
    for result in (empty, failed):
        assert result.success
        check = next(
            c for c in result.get_asset_check_evaluations() if c.check_name == "k8s_source_answered"
        )
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.partition == DAY
        assert metadata(result, "k8s_allocations")["source_status"] == "missing"
    rows = Warehouse(url).read(K8S_ALLOCATIONS, days=[date(2026, 9, 2)])
    assert rows["total_cost"].sum() == pytest.approx(5.0)
    assert summary.success
    (missing,) = metadata(summary, "daily_cost_summary")["missing_sources"]
    assert missing.startswith("k8s:")


def test_an_empty_answer_for_a_settled_day_is_believed(url: str) -> None:
    with FakeKubecost() as fake:
        kube = KubecostResource(url=fake.url, backoff_seconds=0.01)
        res = resources(url, kubecost=kube)
        fake.sets[WINDOW] = {"tenant-acme/acme": _acme(5.0)}
        dg.materialize([k8s_allocations], partition_key=DAY, resources=res)
        fake.sets[WINDOW] = {}
        dg.materialize([k8s_allocations], partition_key=DAY, resources=res)
    assert Warehouse(url).count(K8S_ALLOCATIONS, days=[date(2026, 9, 2)]) == 0


def test_signed_idle_per_cluster_is_kept_and_conserved(url: str) -> None:
    with FakeKubecost() as fake:
        fake.sets[WINDOW] = {
            "tenant-acme/acme": _acme(5.0),
            "prod-1/__idle__": allocation("prod-1/__idle__", namespace="", total=-1.25),
        }
        kube = KubecostResource(url=fake.url, backoff_seconds=0.01)
        result = dg.materialize(
            [k8s_allocations], partition_key=DAY, resources=resources(url, kubecost=kube)
        )
    meta = metadata(result, "k8s_allocations")
    assert meta["rows_quarantined"] == 0
    assert meta["idle_cost_usd"] == pytest.approx(-1.25)
    assert meta["total_cost_usd"] == pytest.approx(meta["source_total_usd"]) == pytest.approx(3.75)
    rows = (
        Warehouse(url).read(K8S_ALLOCATIONS, days=[date(2026, 9, 2)]).set_index("allocation_name")
    )
    assert rows.loc["__idle__", "cluster"] == "prod-1"


def test_stored_and_quarantined_k8s_cost_add_up_to_the_answer(url: str) -> None:
    """The answer's total is checked against what the warehouse holds afterwards (read back),
    with a quarantined negative allocation accounted for, not silently dropped."""
    with FakeKubecost() as fake:
        fake.sets[WINDOW] = {
            "tenant-acme/acme": _acme(5.0),
            "tenant-acme/broken": allocation("tenant-acme/broken", namespace="x", total=-2.0),
            "prod-1/__idle__": allocation("prod-1/__idle__", namespace="", total=-1.25),
        }
        kube = KubecostResource(url=fake.url, backoff_seconds=0.01)
        result = dg.materialize(
            [k8s_allocations], partition_key=DAY, resources=resources(url, kubecost=kube)
        )
    check = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "k8s_stored_equals_response"
    )
    assert check.passed and check.partition == DAY
    meta = {k: v.value for k, v in check.metadata.items()}
    assert meta["source_total_usd"] == pytest.approx(1.75)
    assert meta["stored_total_usd"] == pytest.approx(3.75)
    assert meta["quarantined_total_usd"] == pytest.approx(-2.0)


def test_demo_day_allocates_conserves_and_exports(tmp_path: Path, url: str) -> None:
    focus = FocusExportsTwin(path=str(tmp_path / "demo"), output_dir=str(tmp_path / "out"))
    res = resources(url, focus_exports=focus, kubecost=KubecostTwin())
    # The day after DAY: the demo's exports are as fresh as a real one's.
    with time_machine.travel(datetime(2026, 9, 3, 6, tzinfo=UTC)):
        result = dg.materialize(
            [cloud_costs, k8s_allocations, infra_cost_allocation], partition_key=DAY, resources=res
        )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert sorted((c.check_name, c.passed) for c in checks) == [
        ("focus_data_fresh", True),
        ("focus_deliveries_complete", True),
        ("foreign_currency_converted", True),
        ("infra_cost_is_conserved", True),
        ("k8s_source_answered", True),
        ("k8s_stored_equals_response", True),
    ]
    wh = Warehouse(url)
    day = date.fromisoformat(DAY)
    cloud = wh.read(CLOUD_COSTS, days=[day])
    k8s = wh.read(K8S_ALLOCATIONS, days=[day])
    alloc = wh.read(INFRA_COST_ALLOCATION, days=[day])
    for source, total in (
        ("cloud", cloud["effective_cost"].sum()),
        ("k8s", k8s["total_cost"].sum()),
    ):
        assert alloc.loc[alloc["source"] == source, "cost_usd"].sum() == pytest.approx(
            total, abs=1e-6
        )
    # September's final delivery replaced the mid-month one: each row once, at its final value
    assert cloud["source_file"].str.contains("20261003T").all()
    expected = [focus_rows(load_config(), [day], flavor=f) for f in ("aws", "gcp")]
    assert len(cloud) == sum(len(e) for e in expected)
    assert cloud["effective_cost"].sum() == pytest.approx(
        sum(pd.to_numeric(e["EffectiveCost"]).sum() for e in expected)
    )

    # the integrator's summary appends infra_summary_rows beside the LLM rows; export the month
    llm = pd.DataFrame(
        {"day": [day], "tenant_id": ["acme"], "cost_category": ["llm"], "provider": ["openai"],
         "model_or_service": ["gpt-4o-mini"], "requests": [3], "input_tokens": [10],
         "output_tokens": [5], "cost_usd": [0.25], "unpriced_requests": [0]}
    )  # fmt: skip
    summary = pd.concat([llm, infra_summary_rows(alloc)], ignore_index=True)
    wh.replace_partition(DAILY_COST_SUMMARY, day, summary)
    exported = dg.materialize([focus_export], partition_key="2026-09-01", resources=res)
    (check,) = exported.get_asset_check_evaluations()
    assert check.passed, check.metadata
    csv_path, parquet_path = export_paths(tmp_path / "out", date(2026, 9, 1))
    for path in (csv_path, parquet_path):
        written = read_focus_export(path)
        # The ledger is effective cost; billed cost is the source's own, kept distinct.
        effective = pd.to_numeric(written["EffectiveCost"]).sum()
        assert effective == pytest.approx(summary["cost_usd"].sum(), abs=1e-6)
        cloud_billed = pd.to_numeric(
            written.loc[written["x_CostCategory"] == "cloud", "BilledCost"]
        )
        assert cloud_billed.sum() == pytest.approx(cloud["billed_cost"].sum(), abs=1e-6)
    assert set(read_focus_export(parquet_path)["x_CostCategory"]) == {"llm", "cloud", "k8s"}
