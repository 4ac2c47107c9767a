"""Finding 8: encryption switched off (or a key dropped) by mistake.

Cases encrypted earlier can't be read by a worker without their key. Before, their workflow tasks
failed with "Failed decoding arguments", nothing said why, and the worker started as if all was
well. Now the task failure the UI shows and the worker's log name the key id, and a worker that
can't read the newest open cases of its queue refuses to start, in one line naming the key.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.case_activities import NotificationActivities, PaymentActivities, case_activities
from activities.sandbox import MemoryConsentStore, SandboxLinks, SandboxOutbox, SandboxPayments
from dunning.models import DunningInput
from runtime.codec import data_converter
from runtime.preflight import check_open_cases_decodable
from activities.ledger_activities import LedgerActivities
from runtime.ledger import MemoryLedger
from tests.helpers.case_harness import failure
from tests.helpers.case_harness import make_policy as policy
from tests.helpers.trust_harness import codec_client
from tests.helpers.workers import TEST_LINK_KEYS
from workflows.card_expiry_workflow import CardExpiryWorkflow
from workflows.dunning_workflow import DunningWorkflow

ROOT = Path(__file__).resolve().parents[2]
KEYS_2019 = f"k2019:{base64.b64encode(os.urandom(32)).decode()}"
KEYS_2026 = f"k2026:{base64.b64encode(os.urandom(32)).decode()}"

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _worker(client: Client, task_queue: str) -> Worker:
    payments, outbox = SandboxPayments(), SandboxOutbox()
    pay = PaymentActivities(payments)
    notify = NotificationActivities(payments, outbox, outbox, MemoryConsentStore(), SandboxLinks())
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[DunningWorkflow, CardExpiryWorkflow],
        activities=[*case_activities(pay, notify), *LedgerActivities(MemoryLedger()).activities()],
    )


async def _open_encrypted(dev_env: WorkflowEnvironment, keys: str, task_queue: str) -> WorkflowHandle:
    """A case opened the way the API opens it, by an API that had encryption on."""
    client = codec_client(dev_env.client, data_converter(keys))
    sub = f"sub_enc{uuid.uuid4().hex[:8]}"
    return await client.start_workflow(
        "DunningWorkflow",
        DunningInput(subscription_id=sub, customer_id=f"cus_{sub}", policy=policy()),
        id=f"dunning-{sub}",
        task_queue=task_queue,
        start_signal="payment_failed",
        start_signal_args=[failure(f"in_{sub}")],
    )


async def _first_task_failure(handle: WorkflowHandle, keys: str | None, timeout: float = 30) -> str:
    """The task failure's message as the UI shows it: with keys set, failure messages are stored
    encrypted and the UI reads them through the codec server, which holds the worker's keys."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                failure = event.workflow_task_failed_event_attributes.failure
                return str(await data_converter(keys).decode_failure(failure))
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("no workflow task failed")
        await asyncio.sleep(0.3)


@pytest.mark.parametrize(
    "worker_keys, expected",
    [(None, "encryption is off"), (KEYS_2026, "DUNNING_ENCRYPTION_KEYS does not hold")],
    ids=["encryption-off", "key-dropped"],
)
async def test_the_stuck_case_and_the_worker_log_name_the_missing_key(
    dev_env: WorkflowEnvironment, caplog: pytest.LogCaptureFixture, worker_keys: str | None, expected: str
) -> None:
    task_queue = f"dunning-enc-{uuid.uuid4().hex[:8]}"
    handle = await _open_encrypted(dev_env, KEYS_2019, task_queue)
    try:
        with capture_logs() as logs:
            async with _worker(codec_client(dev_env.client, data_converter(worker_keys)), task_queue):
                message = await _first_task_failure(handle, worker_keys)
        # What the Temporal UI shows on the case: which key, and why it is missing.
        assert "'k2019'" in message and expected in message, message
        assert "Failed decoding arguments" not in message
        # What the worker's log says.
        refused = [e for e in logs if e.get("event") == "payload cannot be decrypted"]
        assert refused and refused[0]["key_id"] == "k2019" and expected in refused[0]["reason"]
    finally:
        await dev_env.client.get_workflow_handle(handle.id).terminate("test finished")


@pytest.mark.parametrize("command", [["-m", "starter.cli.app", "worker"], ["worker.py"]], ids=["dunning", "python"])
async def test_a_worker_that_cannot_read_the_open_cases_refuses_to_start(
    dev_env: WorkflowEnvironment, command: list[str], tmp_path: Path
) -> None:
    task_queue = f"dunning-enc-{uuid.uuid4().hex[:8]}"
    handle = await _open_encrypted(dev_env, KEYS_2019, task_queue)
    try:
        # Visibility lags a start by a moment: the worker samples what is listed.
        async def listed() -> bool:
            query = f"WorkflowId = '{handle.id}'"
            return bool([w async for w in dev_env.client.list_workflows(query)])

        for _ in range(50):
            if await listed():
                break
            await asyncio.sleep(0.2)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "STRIPE_", "SENDGRID_", "TWILIO_"))}
        env |= {
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": dev_env.client.namespace,
            "DUNNING_TASK_QUEUE": task_queue,
            "DUNNING_STATE_DIR": str(tmp_path),
            "DUNNING_LOG_FORMAT": "json",
            "DUNNING_LINK_KEYS": TEST_LINK_KEYS,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *command, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("the worker started although it cannot read the open cases") from None
        errors = [line for line in err.decode().splitlines() if "error:" in line]
        assert proc.returncode == 1, err.decode()
        assert len(errors) == 1 and "'k2019'" in errors[0] and handle.id in errors[0], err.decode()
        assert "Traceback" not in err.decode()
    finally:
        await dev_env.client.get_workflow_handle(handle.id).terminate("test finished")


async def test_the_sample_passes_with_the_key_and_on_an_empty_queue(dev_env: WorkflowEnvironment) -> None:
    task_queue = f"dunning-enc-{uuid.uuid4().hex[:8]}"
    handle = await _open_encrypted(dev_env, KEYS_2019, task_queue)
    try:
        rotated = codec_client(dev_env.client, data_converter(f"{KEYS_2026},{KEYS_2019}"))
        for _ in range(50):
            if await check_open_cases_decodable(rotated, task_queue):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the case never showed up in visibility")
        assert await check_open_cases_decodable(rotated, f"empty-{task_queue}") == 0
    finally:
        await dev_env.client.get_workflow_handle(handle.id).terminate("test finished")


async def test_the_cli_without_the_key_says_so_in_one_line(dev_env: WorkflowEnvironment) -> None:
    """The worker holds the key, the operator's shell does not: `dunning show` names the key."""
    task_queue = f"dunning-enc-{uuid.uuid4().hex[:8]}"
    handle = await _open_encrypted(dev_env, KEYS_2019, task_queue)
    env = {k: v for k, v in os.environ.items() if k != "DUNNING_ENCRYPTION_KEYS"}
    env |= {
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
    }
    try:
        async with _worker(codec_client(dev_env.client, data_converter(KEYS_2019)), task_queue):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "starter.cli.app", "show", handle.id, cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), 60)
        text = err.decode()
        assert proc.returncode == 1, text
        assert len(text.strip().splitlines()) == 1 and "Traceback" not in text, text
        assert "'k2019'" in text and "encryption is off" in text, text
    finally:
        await dev_env.client.get_workflow_handle(handle.id).terminate("test finished")
