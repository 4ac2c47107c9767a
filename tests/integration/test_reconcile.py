"""`dunning reconcile`: the failures whose webhook never arrived, against a loopback Stripe (its
list endpoint, paged) and the real Temporal dev server, through the installed command."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from temporalio.client import WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from dunning import contract
from dunning.models import DunningInput
from dunning.policy import load_policies
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe
from starter import cases as opening
from tests.helpers.case_harness import failure

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def dunning(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter.cli.app", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_reconcile_opens_the_cases_stripe_never_told_us_about(
    dev_env: WorkflowEnvironment, httpserver: HTTPServer
) -> None:
    client = dev_env.client
    run = uuid.uuid4().hex[:8]
    queue = f"dunning-reconcile-{run}"  # no worker: we look at what was started, not at the cases
    sub = {k: f"sub_rc{run}{k}" for k in ("missing", "open", "handled", "first", "paid", "never")}
    stripe = FakeStripe(httpserver)
    stripe.add(
        # failed yesterday, no webhook ever arrived; its subscription asks for the gentler policy
        sf.invoice(f"in_{run}missing", subscription=sub["missing"], customer=f"cus_{run}m", amount_due=12900,
                   subscription_metadata={"dunning_policy": "high_value"}),
        sf.invoice(f"in_{run}open", subscription=sub["open"], customer=f"cus_{run}o"),  # its case is open
        sf.invoice(f"in_{run}handled", subscription=sub["handled"], customer=f"cus_{run}h"),  # case closed
        # not dunning's: a sign-up's first invoice, a paid one, one never attempted, one-off invoices
        sf.invoice(f"in_{run}first", subscription=sub["first"], billing_reason="subscription_create"),
        sf.invoice(f"in_{run}paid", subscription=sub["paid"], status="paid"),
        {**sf.invoice(f"in_{run}never", subscription=sub["never"]), "attempt_count": 0},
        *(sf.invoice(f"in_{run}oneoff{i:03d}", subscription=None) for i in range(120)),  # a second page
    )
    policy = load_policies()["default"]
    for kind in ("open", "handled"):
        await opening.open_case(
            client, task_queue=queue, policy=policy, opened_by="a test webhook",
            payment=failure(f"in_{run}{kind}", customer_id=f"cus_{run}{kind[0]}", subscription_id=sub[kind]),
        )
    await client.get_workflow_handle(contract.workflow_id(sub["handled"])).terminate("recovered meanwhile")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "STRIPE_"))}
    env |= {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "DUNNING_TASK_QUEUE": queue,
        "STRIPE_API_KEY": "sk_test_reconcile",
        "STRIPE_API_BASE": stripe.base_url,
        "COLUMNS": "200",
    }

    # Dry run (the default): says what is missing, opens nothing.
    code, out, err = await dunning(env, "reconcile")
    assert code == 0, err
    assert "3 failed subscription invoice(s)" in out and "2 with a case" in out and "1 missing" in out, out
    assert f"in_{run}missing" in out and "would open" in out
    assert f"in_{run}open" in out and f"in_{run}handled" in out
    assert not any(f"in_{run}{k}" in out for k in ("first", "paid", "never", "oneoff"))
    missing_case = client.get_workflow_handle(contract.workflow_id(sub["missing"]))
    with pytest.raises(RPCError):
        await missing_case.describe()
    # It read every page of Stripe's list, asking only for open, automatically charged invoices.
    listed = stripe.seen("GET", "/v1/invoices")
    assert len(listed) == 2 and all(
        r.query["status"] == "open" and r.query["collection_method"] == "charge_automatically" for r in listed
    )

    # --apply opens the missing case the way the webhook would, with the subscription's policy.
    code, out, err = await dunning(env, "reconcile", "--apply")
    assert code == 0, err
    assert "1 opened" in out and "policy high_value" in out, out
    desc = await missing_case.describe()
    assert desc.status == WorkflowExecutionStatus.RUNNING
    assert await desc.memo_value("invoice_id") == f"in_{run}missing"
    assert desc.typed_search_attributes.get(contract.CUSTOMER_ID) == f"cus_{run}m"
    assert desc.typed_search_attributes.get(contract.AMOUNT_DUE) == 12900
    start = [e async for e in missing_case.fetch_history_events()][0]
    started = pydantic_data_converter.payload_converter.from_payloads(
        start.workflow_execution_started_event_attributes.input.payloads, [DunningInput]
    )[0]
    assert started.policy.name == "high_value" and started.subscription_id == sub["missing"]

    # Idempotent: a second run finds every case open and opens nothing.
    code, out, err = await dunning(env, "reconcile", "--apply")
    assert code == 0, err
    assert "3 with a case" in out and "0 opened" in out, out
    runs = [w async for w in client.list_workflows(f"WorkflowId = '{missing_case.id}'")]
    assert len(runs) == 1

    for kind in ("missing", "open"):
        await client.get_workflow_handle(contract.workflow_id(sub[kind])).terminate("test finished")


async def test_reconcile_without_a_stripe_key_says_so_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    code, out, err = await dunning(env, "reconcile")
    assert code == 1
    assert err.strip().count("\n") == 0 and "STRIPE_API_KEY is not set" in err and "Traceback" not in err
