"""How the CLI shows cases, without Temporal: render.py is plain functions over the models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console, RenderableType

from dunning.models import (
    AccessState,
    AttemptRecord,
    CaseStatus,
    ChargeResult,
    DeclineCategory,
    InvoiceState,
    RetryNowResult,
    Stage,
)
from starter.cli import render
from starter.cli.operator import CaseRow

NOW = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)


def text(renderable: RenderableType) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def case() -> CaseStatus:
    invoice = InvoiceState(invoice_id="in_1", amount_due=4900, currency="usd", failed_at=NOW)
    declined = ChargeResult(
        invoice_id="in_1", status="declined", category=DeclineCategory.SOFT, decline_code="insufficient_funds"
    )
    return CaseStatus(
        case_id="dunning-sub_1",
        subscription_id="sub_1",
        customer_id="cus_1",
        policy="default",
        stage=Stage.RETRYING,
        outcome=None,
        access=AccessState.GRACE,
        opened_at=NOW,
        amount_due=4900,
        currency="usd",
        outstanding_invoices=[invoice],
        invoices=[invoice],
        decline_category=DeclineCategory.SOFT,
        attempts=[AttemptRecord(at=NOW, invoice_id="in_1", attempt=1, trigger="scheduled", result=declined)],
        notifications=[],
        timeline=[],
        paused=False,
        pause_reason=None,
        grace_ends_at=NOW + timedelta(days=14),
        next_action="retry the charge (2/6)",
        next_action_at=NOW + timedelta(days=1),
    )


def test_a_case_reads_top_to_bottom() -> None:
    shown = text(render.render_case(case(), now=NOW))
    for expected in (
        "dunning-sub_1",
        "retrying",
        "$49.00",
        "Grace ends",
        "2026-12-05 07:00:00 UTC (in 14d 0h)",
        "retry the charge (2/6)",
        "declined (insufficient_funds, soft)",
        "none yet",  # no notifications
    ):
        assert expected in shown, shown


def test_the_cases_table_shows_the_query_it_answers() -> None:
    row = CaseRow(
        "dunning-sub_1", None, "RUNNING", "suspended", "cus_1", "sub_1", 29900, "eur", "hard", 2, None, None, None
    )
    shown = text(render.cases_table([row], "WorkflowType = 'DunningWorkflow'"))
    assert "1 case(s)" in shown and "€299.00" in shown and "suspended" in shown and "running" in shown
    assert "WorkflowType = 'DunningWorkflow'" in shown


def test_retry_now_result() -> None:
    result = RetryNowResult(results=[ChargeResult(invoice_id="in_1", status="succeeded")], stage=Stage.RECOVERED)
    shown = text(render.retry_result_table(result))
    assert "stage recovered" in shown and "succeeded" in shown


def test_amounts_times_and_colours_degrade_gracefully() -> None:
    assert render.money(None, "usd") == "—" and render.money(1234, None) == "1234"
    assert render.when(None) == "—"
    assert render.when(NOW - timedelta(seconds=90), now=NOW).endswith("(1m 30s ago)")
    assert render.when(NOW + timedelta(hours=2), now=NOW, short=True) == "in 2h 00m (09:00)"
    assert render.stage_style("pending", "dim") == "dim"
    assert render.stage_style(Stage.SUSPENDED.value) == "bold red"
