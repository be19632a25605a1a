"""Protects the reports domain end to end, on SQLite and Postgres: monthly statements reconcile
to the cent with `daily_cost_summary` in every file, statements and FOCUS rows on demand hold
the asked tenant and days only, and a digest reaches Slack once with its chart in its thread
(even when the upload fails once) and email with the chart inline."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import time_machine
import yaml
from openpyxl import load_workbook

from cost_pipeline.catalog import ALERT_OUTBOX, DAILY_COST_SUMMARY
from cost_pipeline.defs.alerts.delivery import drain
from cost_pipeline.defs.alerts.jobs import alert_delivery_job
from cost_pipeline.defs.alerts.sensors import alert_outbox_sensor
from cost_pipeline.defs.reports.assets import tenant_statements
from cost_pipeline.defs.reports.jobs import report_digest_job, statement_job
from cost_pipeline.lib.display import cents, format_amount
from cost_pipeline.lib.outbox import Attachment, Outgoing, encode_attachments
from cost_pipeline.lib.slack_messages import digest_message
from cost_pipeline.resources.email import EmailResource
from cost_pipeline.resources.slack import SlackResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource
from cost_pipeline.resources.webhook import WebhookResource
from cost_pipeline.store import outbox
from cost_pipeline.store.warehouse import Warehouse
from cost_pipeline_tests.fakes.slack import FakeSlack
from cost_pipeline_tests.fakes.smtp import FakeSmtp

T0 = datetime(2026, 11, 4, 8, tzinfo=UTC)
DAYS = [date(2026, 9, 28) + timedelta(days=i) for i in range(34)]  # to Oct 31
OCTOBER = [d for d in DAYS if d.month == 10]


def _config(folder: Path) -> dict:
    return {
        "organization": "Example Co",
        "tiers": {"pro": {"name": "Pro", "included_usage_usd": 200}},
        "tenants": [
            {"id": "acme", "name": "Acme Labs", "tier": "pro", "slack_channel": "#acme-costs"},
            {"id": "globex", "name": "Globex", "tier": "pro"},
        ],
        "channels": {
            "email_to": ["finops@example.com"],
            "routes": [
                {"kinds": ["weekly_digest", "monthly_digest"], "channels": ["slack", "email"]}
            ],
        },
        "reports": {"output_url": str(folder)},
    }  # fmt: skip


def _ledger() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    rows = [
        {
            "day": day,
            "tenant_id": tenant,
            "cost_category": category,
            "provider": provider,
            "model_or_service": item,
            "agent_id": "support-bot" if category == "llm" else None,
            "requests": int(rng.integers(1, 400)) if category == "llm" else 0,
            "input_tokens": int(rng.integers(0, 10**6)),
            "output_tokens": int(rng.integers(0, 10**5)),
            # nano-USD amounts whose cents do not round evenly
            "cost_usd": round(float(rng.uniform(0, 9)) + 0.000000005, 9),
            "unpriced_requests": 0,
        }
        for day in DAYS
        for tenant in ("acme", "globex")
        for category, provider, item in (
            ("llm", "openai", "gpt-4o-mini"),
            ("llm", "anthropic", "claude-sonnet-4-5"),
            ("k8s", "", "payments"),
            ("cloud", "aws", "Compute"),
        )
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def fakes() -> Iterator[dict]:
    slack, smtp = FakeSlack().start(), FakeSmtp().start()
    try:
        yield {"slack": slack, "smtp": smtp}
    finally:
        slack.stop(), smtp.stop()


@pytest.fixture
def env(tmp_path: Path, fakes: dict, warehouse_url: str) -> dict:
    folder = tmp_path / "reports"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_config(folder)))
    wh = Warehouse(warehouse_url)
    wh.replace_partition(DAILY_COST_SUMMARY, DAYS, _ledger())
    smtp = fakes["smtp"]
    return {
        "warehouse": wh,
        "folder": folder,
        "resources": {
            "warehouse": WarehouseResource(url=warehouse_url),
            "cost_config": CostConfigResource(path=str(path)),
            "slack": SlackResource(
                bot_token=fakes["slack"].token, base_url=fakes["slack"].base_url, timeout_seconds=2
            ),
            "email": EmailResource(
                host=smtp.host, port=smtp.port, security="none", from_address="r@costs.example"
            ),
            "webhook": WebhookResource(),
        },
    }


def _ledger_total(wh: Warehouse, tenant: str, days: list[date]) -> Decimal:
    """The tenant's total from the warehouse, independently of the statement code."""
    rows = wh.read(DAILY_COST_SUMMARY, days=days, where={"tenant_id": [tenant]})
    return cents(sum((Decimal(repr(float(v))) for v in rows["cost_usd"]), Decimal(0)))


# -- statements --------------------------------------------------------------------------------


def test_a_monthly_statement_reconciles_to_the_cent_in_every_file(env) -> None:
    result = dg.materialize(
        [tenant_statements], partition_key="2026-10-01", resources=env["resources"]
    )
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.metadata
    wh, folder = env["warehouse"], env["folder"] / "statements" / "2026-10"
    for tenant, name in (("acme", "Acme Labs"), ("globex", "Globex")):
        total = _ledger_total(wh, tenant, OCTOBER)
        rows = list(
            csv.DictReader(
                io.StringIO((folder / tenant / f"statement_{tenant}_2026-10.csv").read_text())
            )
        )
        assert {r["tenant_id"] for r in rows} == {tenant}
        *lines, footer = rows
        assert footer["cost_category"] == "TOTAL" and Decimal(footer["amount"]) == total
        assert sum(Decimal(r["amount"]) for r in lines) == total

        sheet = load_workbook(folder / tenant / f"statement_{tenant}_2026-10.xlsx")["Statement"]
        values = list(sheet.iter_rows(values_only=True))
        header_total = next(r[1] for r in values if r[0] == "Total")
        table = values[next(i for i, r in enumerate(values) if r[0] == "Category") + 1 :]
        amounts = [cents(r[6]) for r in table if r[0] != "Total"]
        footer_total = next(r[6] for r in table if r[0] == "Total")
        assert cents(header_total) == cents(footer_total) == sum(amounts) == total

        page = (folder / tenant / f"statement_{tenant}_2026-10.html").read_text()
        assert name in page and format_amount(total) in page
        assert "data:image/png;base64," in page
        focus = pd.read_csv(folder / tenant / f"focus-1.2_{tenant}_2026-10.csv")
        assert set(focus["x_TenantId"]) == {tenant}
        assert cents(focus["EffectiveCost"].sum()) == total
    # A re-run rewrites the same files.
    assert dg.materialize(
        [tenant_statements], partition_key="2026-10-01", resources=env["resources"]
    ).success
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 8


def test_statements_on_demand_hold_the_asked_tenant_and_days_only(env) -> None:
    config = {"start": "2026-10-03", "end": "2026-10-09", "tenant_ids": ["globex"]}
    result = statement_job.execute_in_process(
        run_config={"ops": {"write_range_statements": {"config": config}}},
        resources=env["resources"],
    )
    assert result.success
    root = env["folder"]
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert written == [
        "exports/focus-1.2_2026-10-03_2026-10-09_globex.csv",
        "statements/2026-10-03_2026-10-09/globex/focus-1.2_globex_2026-10-03_2026-10-09.csv",
        "statements/2026-10-03_2026-10-09/globex/statement_globex_2026-10-03_2026-10-09.csv",
        "statements/2026-10-03_2026-10-09/globex/statement_globex_2026-10-03_2026-10-09.html",
        "statements/2026-10-03_2026-10-09/globex/statement_globex_2026-10-03_2026-10-09.xlsx",
    ]
    week = [date(2026, 10, 3) + timedelta(days=i) for i in range(7)]
    focus = pd.read_csv(root / written[0])
    assert set(focus["x_TenantId"]) == {"globex"}
    assert set(pd.to_datetime(focus["ChargePeriodStart"]).dt.date) == set(week)
    assert cents(focus["EffectiveCost"].sum()) == _ledger_total(env["warehouse"], "globex", week)


def test_an_unknown_tenant_or_an_inverted_range_fails_the_run_with_the_reason(env) -> None:
    for config, reason in (
        ({"start": "2026-10-09", "end": "2026-10-03"}, "before start"),
        ({"start": "2026-10-01", "end": "2026-10-03", "tenant_ids": ["nobody"]}, "nobody"),
    ):
        result = statement_job.execute_in_process(
            run_config={"ops": {"write_range_statements": {"config": config}}},
            resources=env["resources"],
            raise_on_error=False,
        )
        assert not result.success
        failure = result.failure_data_for_node("write_range_statements")
        assert reason in failure.error.message


# -- digests -----------------------------------------------------------------------------------


def _digest(env: dict, instance: dg.DagsterInstance, **config: object) -> None:
    run = report_digest_job.execute_in_process(
        run_config={"ops": {"enqueue_digests": {"config": {"kind": "weekly", **config}}}},
        instance=instance,
        resources=env["resources"],
    )
    assert run.success


def test_a_weekly_digest_reaches_slack_once_with_its_chart_and_email_inline(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    slack, smtp = fakes["slack"], fakes["smtp"]
    with time_machine.travel(T0, tick=True):
        for _ in range(2):  # the schedule firing twice, or a re-run, sends nothing more
            _digest(env, dagster_instance, period="2026-W41")
    top = [m for m in slack.messages if m.thread_ts is None]
    assert sorted((m.channel, m.text.split(",")[0]) for m in top) == [
        ("#acme-costs", "Weekly cost digest for Acme Labs"),
        ("#cost-alerts", "Weekly cost digest for Example Co"),
        ("#cost-alerts", "Weekly cost digest for Globex"),
    ]
    for message in top:
        (reply,) = slack.thread(message.ts)
        assert len(reply.files) == 1 and reply.files[0]["name"].endswith("_2026-W41.png")
        assert message.metadata["event_payload"]["alert_key"].endswith("weekly_digest:2026-W41")
    assert len(slack.files) == 3 and all(f.data.startswith(b"\x89PNG") for f in slack.files)
    assert "Globex" not in next(m for m in top if m.channel == "#acme-costs").text

    assert len(smtp.messages) == 3
    for received in smtp.messages:
        assert received.rcpt_tos == ["finops@example.com"]
        _, related = received.message.get_payload()
        page, image = related.get_payload()
        assert related.get_content_type() == "multipart/related"
        cid = image["Content-ID"].strip().strip("<>")
        assert f"cid:{cid}" in page.get_content() and image.get_content().startswith(b"\x89PNG")
    rows = env["warehouse"].read(ALERT_OUTBOX)
    assert len(rows) == 6 and set(rows["status"]) == {"sent"}
    assert set(rows["kind"]) == {"weekly_digest"} and set(rows["period"]) == {"2026-W41"}


def test_a_failed_chart_upload_is_completed_once_without_a_second_message(
    env, fakes: dict, dagster_instance: dg.DagsterInstance
) -> None:
    slack, wh = fakes["slack"], env["warehouse"]
    env["resources"]["email"] = EmailResource()  # dry run: Slack only matters here
    slack.fail_next("files.completeUploadExternal", 1)
    with time_machine.travel(T0, tick=True) as clock:
        _digest(env, dagster_instance, period="2026-W41", tenant_ids=["acme"])
        key = "acme:2026-W41:weekly_digest:2026-W41"
        row = wh.read(ALERT_OUTBOX, where={"alert_key": [key]}).iloc[0]
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert slack.files == []
        clock.move_to(T0 + timedelta(minutes=2))
        context = dg.build_sensor_context(
            instance=dagster_instance, resources={"warehouse": env["resources"]["warehouse"]}
        )
        (request,) = alert_outbox_sensor(context).run_requests
        run = alert_delivery_job.execute_in_process(
            run_config=request.run_config, instance=dagster_instance, resources=env["resources"]
        )
        assert run.success
    (message,) = [m for m in slack.messages if m.thread_ts is None]
    (reply,) = slack.thread(message.ts)
    assert len(reply.files) == 1 and len(slack.files) == 1
    row = wh.read(ALERT_OUTBOX, where={"alert_key": [key]}).iloc[0]
    assert (row["status"], row["slack_ts"]) == ("sent", message.ts)


def test_a_row_with_files_is_never_bundled_into_an_alert_digest(warehouse: Warehouse) -> None:
    chart = Attachment("c.png", "image/png", b"\x89PNG-c", "Chart")
    alerts = pd.DataFrame(
        [
            {"tenant_id": f"t{i}", "period": "2026-10", "kind": "anomaly", "ref": f"a{i}",
             "day": date(2026, 10, 5), "channel": "#cost-alerts", "text": f"alert {i}",
             "blocks": "[]", "attachments": None}
            for i in range(12)
        ]
        + [
            {"tenant_id": "acme", "period": "2026-W41", "kind": "weekly_digest",
             "ref": "2026-W41", "day": date(2026, 10, 11), "channel": "#cost-alerts",
             "text": "Weekly cost digest", "blocks": "[]",
             "attachments": encode_attachments([chart])}
        ]
    )  # fmt: skip
    outbox.enqueue(warehouse, alerts, now=T0)
    sent: list[Outgoing] = []

    def send(message: Outgoing) -> str:
        sent.append(message)
        return f"{len(sent)}.0"

    result = drain(
        warehouse,
        send,
        now=T0,
        dry_run=False,
        digest_after=10,
        build_digest=digest_message,
    )
    assert (result.messages, result.digests, len(result.sent)) == (2, 1, 13)
    bundled, solo = sent
    assert len(bundled.keys) == 12 and bundled.attachments == ()
    assert solo.text == "Weekly cost digest" and solo.attachments == (chart,)
