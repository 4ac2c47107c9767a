"""The operator CLI against the real Temporal dev server and the real DunningWorkflow.

Cases are opened the way the webhook API opens them (signal-with-start `payment_failed`),
a worker with the sandbox backends runs them, and every command runs as `python -m
starter.cli.app …` in its own process, so exit codes and output are exactly what an operator
(or a script) gets from the installed `dunning` command.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.sandbox import SandboxOutbox, SandboxPayments
from dunning.models import CaseStatus, DunningInput, PaymentFailed
from dunning.policy import Policy
from starter.cli import operator as ops
from tests.helpers import eventually, new_worker
from workflows.dunning_workflow import DunningWorkflow

ROOT = Path(__file__).resolve().parents[2]

# Nothing happens on its own during the test: the first retry is an hour away, no quiet hours.
POLICY = Policy.model_validate(
    {
        "name": "cli_test",
        "retry_after": ["PT1H", "PT2H"],
        "retry_local_hour": None,
        "grace": "P1D",
        "cancel_after_suspension": "P1D",
        "quiet_hours": None,
        "min_gap_between_messages": "PT1S",
        "notify": [{"at": "PT0S", "channels": ["email"], "template": "payment_failed"}],
    }
)


@dataclass
class Cases:
    client: Client
    env: dict[str, str]
    run: str
    soft: str  # subscription id: soft decline, card pays on retry; customer A, 49.00 USD
    hard: str  # subscription id: expired card; customer B, 299.00 EUR
    small: str  # subscription id: insufficient funds; customer A, 15.00 USD
    customer_a: str
    customer_b: str


async def cli(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter.cli.app",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cases(dev_env: WorkflowEnvironment) -> AsyncIterator[Cases]:
    client = dev_env.client
    run = uuid.uuid4().hex[:8]
    task_queue = f"dunning-cli-{run}"
    payments = SandboxPayments()
    outbox = SandboxOutbox()
    worker = new_worker(client, task_queue=task_queue, payments=payments, outbox=outbox)
    customer_a, customer_b = f"cus_cli{run}a", f"cus_cli{run}b"
    opened = {
        f"sub_cli{run}soft": (customer_a, 4900, "usd", "insufficient_funds", "pm_card_visa"),
        f"sub_cli{run}hard": (customer_b, 29900, "eur", "expired_card", "pm_card_chargeDeclinedExpiredCard"),
        f"sub_cli{run}small": (
            customer_a,
            1500,
            "usd",
            "insufficient_funds",
            "pm_card_chargeDeclinedInsufficientFunds",
        ),
    }
    async with worker:
        for sub, (customer, amount, currency, decline, card) in opened.items():
            await client.start_workflow(
                DunningWorkflow.run,
                DunningInput(subscription_id=sub, customer_id=customer, policy=POLICY),
                id=f"dunning-{sub}",
                task_queue=task_queue,
                start_signal="payment_failed",
                start_signal_args=[
                    PaymentFailed(
                        invoice_id=f"in_{sub[4:]}",
                        amount_due=amount,
                        currency=currency,
                        customer_id=customer,
                        subscription_id=sub,
                        failure_code="card_declined",
                        decline_code=decline,
                        payment_method_id=card,
                        event_id=f"evt_{sub}",
                    )
                ],
                static_summary=f"test case {sub}",
            )

        async def all_visible() -> bool:
            rows = await ops.list_cases(
                client,
                f"WorkflowType = 'DunningWorkflow' AND CustomerId IN "
                f"('{customer_a}', '{customer_b}') AND DunningStage IS NOT NULL",
            )
            return len(rows) == 3

        await eventually(all_visible)
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": client.namespace,
            "COLUMNS": "200",
        }
        env.pop("TEMPORAL_API_KEY", None)
        yield Cases(client, env, run, *opened, customer_a=customer_a, customer_b=customer_b)
        for sub in opened:
            try:
                await client.get_workflow_handle(f"dunning-{sub}").terminate("test finished")
            except Exception:  # noqa: BLE001 - already closed
                pass


pytestmark = pytest.mark.asyncio(loop_scope="session")


def _json_lines(text: str) -> list[dict]:
    """`list --json` prints one pretty JSON object per case."""
    decoder, rows, i = json.JSONDecoder(), [], 0
    text = text.strip()
    while i < len(text):
        obj, end = decoder.raw_decode(text, i)
        rows.append(obj)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return rows


async def test_list_filters_by_customer_stage_and_amount(cases: Cases) -> None:
    code, out, err = await cli(cases.env, "list", "--customer", cases.customer_a, "--json")
    assert code == 0, err
    rows = {r["subscription_id"]: r for r in _json_lines(out)}
    assert set(rows) == {cases.soft, cases.small}
    assert rows[cases.soft]["amount_due"] == 4900 and rows[cases.soft]["currency"] == "usd"
    assert rows[cases.soft]["stage"] == "retrying"

    code, out, err = await cli(
        cases.env, "cases", "--stage", "awaiting_payment_method", "--customer", cases.customer_b, "--json"
    )
    assert code == 0, err
    assert [r["subscription_id"] for r in _json_lines(out)] == [cases.hard]

    code, out, err = await cli(cases.env, "list", "--customer", cases.customer_a, "--min-amount", "2000", "--json")
    assert code == 0, err
    assert [r["subscription_id"] for r in _json_lines(out)] == [cases.soft]

    # The table form names the cases, the stage and the amount in money.
    code, out, err = await cli(cases.env, "list", "--customer", cases.customer_b)
    assert code == 0, err
    assert f"dunning-{cases.hard}" in out and "awaiting_payment_method" in out and "€299.00" in out


async def test_list_rejects_an_unknown_stage(cases: Cases) -> None:
    code, _, err = await cli(cases.env, "list", "--stage", "lost")
    assert code == 2 and "not a stage" in err


async def test_show_renders_the_status_query_as_a_timeline(cases: Cases) -> None:
    code, out, err = await cli(cases.env, "show", cases.hard)
    assert code == 0, err
    for expected in (
        f"dunning-{cases.hard}",
        "awaiting_payment_method",
        cases.customer_b,
        "€299.00",
        "Outstanding invoices",
        "Charge attempts",
        "expired_card",
        "Notifications",
        "payment_failed",
        "Timeline",
        "Next",
    ):
        assert expected in out, expected

    code, out, err = await cli(cases.env, "show", f"dunning-{cases.soft}", "--json")
    assert code == 0, err
    status = CaseStatus.model_validate_json(out)
    assert status.stage.value == "retrying" and status.amount_due == 4900 and status.next_action_at is not None


async def test_show_unknown_case_exits_1(cases: Cases) -> None:
    code, _, err = await cli(cases.env, "show", f"sub_nobody{cases.run}")
    assert code == 1 and "not found" in err


async def test_pause_blocks_retry_now_until_resume_then_retry_now_charges(cases: Cases) -> None:
    handle = cases.client.get_workflow_handle(f"dunning-{cases.soft}")

    code, out, err = await cli(cases.env, "pause", cases.soft, "--reason", "disputed by phone")
    assert code == 0, err
    assert "paused" in out

    async def paused() -> bool:
        status = await handle.query("status", result_type=CaseStatus)
        return status.paused and status.pause_reason == "disputed by phone"

    await eventually(paused)

    code, out, err = await cli(cases.env, "retry-now", cases.soft)
    assert code == 1
    assert "refused" in err and "paused" in err

    code, out, err = await cli(cases.env, "resume", cases.soft)
    assert code == 0, err

    async def resumed() -> bool:
        return not (await handle.query("status", result_type=CaseStatus)).paused

    await eventually(resumed)

    code, out, err = await cli(cases.env, "retry-now", cases.soft, "--reason", "customer topped up", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [r["status"] for r in result["results"]] == ["succeeded"]
    # The stage the case is in once it settled the payment, not the one it had while charging.
    assert result["stage"] == "recovered"

    async def recovered() -> bool:
        return (await handle.query("status", result_type=CaseStatus)).stage.value == "recovered"

    await eventually(recovered)

    async def listed_as_recovered() -> bool:
        code, out, _ = await cli(cases.env, "list", "--stage", "recovered", "--customer", cases.customer_a, "--json")
        return code == 0 and [r["subscription_id"] for r in _json_lines(out)] == [cases.soft]

    await eventually(listed_as_recovered)

    # Finding 9: a closed case says why it refuses (it said "not found").
    code, out, err = await cli(cases.env, "retry-now", cases.soft)
    assert code == 1
    assert "refused" in err and "closed (recovered" in err and "not found" not in err, err


async def test_retry_now_refused_on_a_hard_declined_card(cases: Cases) -> None:
    code, out, err = await cli(cases.env, "retry-now", cases.hard)
    assert code == 1
    assert "refused" in err and "card can't be retried" in err


async def test_extend_grace_moves_the_grace_end(cases: Cases) -> None:
    handle = cases.client.get_workflow_handle(f"dunning-{cases.small}")
    before = (await handle.query("status", result_type=CaseStatus)).grace_ends_at
    assert before is not None

    code, out, err = await cli(cases.env, "extend-grace", cases.small, "--days", "3", "--reason", "asked for time")
    assert code == 0, err
    assert "3 day(s)" in out

    async def extended() -> bool:
        after = (await handle.query("status", result_type=CaseStatus)).grace_ends_at
        return after is not None and (after - before).days == 3

    await eventually(extended)

    code, _, err = await cli(cases.env, "extend-grace", cases.small, "--days", "0")
    assert code == 2  # usage error: at least one day


async def test_signals_to_a_closed_or_missing_case_exit_1(cases: Cases) -> None:
    code, _, err = await cli(cases.env, "pause", f"sub_nobody{cases.run}", "--reason", "x")
    assert code == 1 and "not found" in err

    closed = f"sub_cli{cases.run}closed"
    await cases.client.start_workflow(
        "DunningWorkflow",
        id=f"dunning-{closed}",
        task_queue=f"nobody-{cases.run}",
        arg=DunningInput(subscription_id=closed, customer_id="cus_x", policy=POLICY),
    )
    await cases.client.get_workflow_handle(f"dunning-{closed}").terminate("test")
    code, _, err = await cli(cases.env, "resume", closed)
    assert code == 1 and "closed" in err


async def test_unreachable_temporal_exits_1_with_a_clear_message(cases: Cases) -> None:
    env = {**cases.env, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    code, _, err = await cli(env, "list")
    assert code == 1 and "cannot reach Temporal at 127.0.0.1:1" in err


async def test_show_without_a_worker_exits_1_and_says_why(cases: Cases) -> None:
    orphan = f"sub_cli{cases.run}orphan"
    await cases.client.start_workflow(
        "DunningWorkflow",
        id=f"dunning-{orphan}",
        task_queue=f"nobody-polls-{cases.run}",
        arg=DunningInput(subscription_id=orphan, customer_id="cus_x", policy=POLICY),
    )
    try:
        code, _, err = await cli(cases.env, "show", orphan)
        assert code == 1 and "worker" in err
    finally:
        await cases.client.get_workflow_handle(f"dunning-{orphan}").terminate("test")


@pytest.mark.parametrize("command", [["-m", "starter.cli.app", "worker"], ["worker.py"]], ids=["dunning", "python"])
async def test_worker_without_the_sendgrid_sender_stops_with_one_line(command: list[str], tmp_path: Path) -> None:
    """Before connecting to Temporal (unreachable here): the configuration is what the operator must fix."""
    env = {k: v for k, v in os.environ.items() if k not in ("DUNNING_EMAIL_FROM", "DUNNING_EMAIL")}
    env |= {"SENDGRID_API_KEY": "SG.test", "TEMPORAL_ADDRESS": "127.0.0.1:1", "DUNNING_STATE_DIR": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    errors = [line for line in err.decode().splitlines() if line.startswith("error:")]
    assert proc.returncode == 1
    assert len(errors) == 1 and "DUNNING_EMAIL_FROM is not set" in errors[0], err.decode()
    assert "Traceback" not in err.decode()


# --- finding 9: operator commands tell the truth --------------------------------------------


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


async def test_a_signal_the_case_would_ignore_is_reported_as_ignored_with_exit_3(cases: Cases) -> None:
    handle = cases.client.get_workflow_handle(f"dunning-{cases.small}")

    code, out, err = await cli(cases.env, "resume", cases.small)
    assert code == 3, (out, err)
    assert "ignored" in _one_error_line(err) and "not paused" in err

    code, out, err = await cli(cases.env, "pause", cases.small, "--reason", "disputed")
    assert code == 0, err
    assert "paused" in out
    # The command returns once the case shows it: no waiting needed.
    assert (await handle.query("status", result_type=CaseStatus)).paused

    code, out, err = await cli(cases.env, "pause", cases.small, "--reason", "again")
    assert code == 3, (out, err)
    line = _one_error_line(err)
    assert "ignored" in line and "already paused (disputed)" in line
    status = await handle.query("status", result_type=CaseStatus)
    assert status.pause_reason == "disputed"  # the second pause changed nothing
    assert [e.event for e in status.timeline].count("paused") == 1

    code, out, err = await cli(cases.env, "resume", cases.small)
    assert code == 0, err
    assert "resumed" in out and "stage retrying" in out
    assert not (await handle.query("status", result_type=CaseStatus)).paused


async def test_errors_end_in_one_line_and_exit_1(cases: Cases, tmp_path: Path) -> None:
    code, _, err = await cli({**cases.env, "TEMPORAL_ADDRESS": "notahost:abc"}, "list")
    assert code == 1
    line = _one_error_line(err)
    assert "cannot reach Temporal at notahost:abc" in line and "invalid port" in line

    code, _, err = await cli({**cases.env, "DUNNING_ENCRYPTION_KEYS": "k1:not-base64!"}, "show", cases.hard)
    assert code == 1
    assert "key 'k1' is not valid base64" in _one_error_line(err)

    code, _, err = await cli({**cases.env, "DUNNING_PAYMENTS": "bogus"}, "worker")
    assert code == 1
    assert "DUNNING_PAYMENTS" in _one_error_line(err)

    bad = tmp_path / "policies"
    bad.mkdir()
    (bad / "default.toml").write_text(
        (ROOT / "dunning" / "policies" / "default.toml").read_text().replace('grace = "P14D"', 'grace = "two weeks"')
    )
    code, _, err = await cli({**cases.env, "DUNNING_POLICY_DIR": str(bad)}, "api", "--port", "1")
    assert code == 1
    line = _one_error_line(err)
    assert "default.toml" in line and "grace" in line


async def test_list_fits_80_columns(cases: Cases) -> None:
    code, out, err = await cli({**cases.env, "COLUMNS": "80"}, "list", "--customer", cases.customer_a)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for sub in (cases.soft, cases.small):
        assert sub in out, out  # whole, not squeezed to "dunn…"
    assert "…" not in out, out
    assert "retrying" in out and "$15.00" in out, out
