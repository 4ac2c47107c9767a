"""Two workers and two API processes, as deployed: real `dunning worker` / `dunning api`
processes on one PostgreSQL and one dev server, nothing shared on disk.

A case opened through API A texts the customer (through whichever worker takes the step); the
customer answers STOP to API B; the next SMS of the case, taken by either worker, is not sent
(consent lives in the database, not in a process). And the ledger has every case exactly once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment
from twilio.request_validator import RequestValidator

from dunning.models import CaseStatus, Channel
from fakes import stripe_api as sf
from tests.helpers import TEST_LINK_KEYS, eventually
from tests.helpers.policy_files import policy_text
from tests.helpers.postgres import PostgresServer

pytestmark = pytest.mark.timeout(300)

SECRET = "whsec_processes_0123456789"
TWILIO_TOKEN = "twilio-token-processes"
# Two steps twenty seconds apart, each email and SMS, no quiet hours: the STOP falls between them.
LADDER = """
[[notify]]
at = "PT0S"
channels = ["email", "sms"]
template = "payment_failed"

[[notify]]
at = "PT20S"
channels = ["email", "sms"]
template = "reminder"
"""
POLICY = policy_text(
    "default",
    LADDER,
    retry_after='["PT1H"]',
    grace='"PT2H"',
    cancel_after_suspension='"PT1H"',
    quiet_hours='["00:00", "00:00"]',
    min_gap_between_messages='"PT1S"',
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_consent_and_the_ledger_are_shared_by_every_process(
    postgres: PostgresServer, dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    database_url = postgres.create_database(f"processes_{suffix}")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.toml").write_text(POLICY)
    client = dev_env.client
    ports = [free_port(), free_port()]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "STRIPE_", "SENDGRID_", "TWILIO_"))}
    env = base | {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "DUNNING_TASK_QUEUE": f"processes-{suffix}",
        "DUNNING_DATABASE_URL": database_url,
        "DUNNING_POLICY_DIR": str(tmp_path / "policies"),
        "DUNNING_LINK_KEYS": TEST_LINK_KEYS,
        "DUNNING_PAYMENTS": "sandbox",
        "DUNNING_EMAIL": "sandbox",
        "DUNNING_SMS": "sandbox",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "DUNNING_LOG_FORMAT": "json",
        "DUNNING_WORKER_METRICS_PORT": "0",  # two workers on one host: no shared metrics port
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    commands = {
        "worker-1": ["worker"],
        "worker-2": ["worker"],
        "api-a": ["api", "--host", "127.0.0.1", "--port", str(ports[0])],
        "api-b": ["api", "--host", "127.0.0.1", "--port", str(ports[1])],
    }
    children = {
        name: subprocess.Popen(
            [str(Path(sys.executable).parent / "dunning"), *argv],
            cwd=Path(__file__).resolve().parents[2],
            env=env | {"DUNNING_STATE_DIR": str(tmp_path / name)},
            stdout=(logs / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name, argv in commands.items()
    }

    def shown() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.iterdir()))

    try:
        api_a = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", timeout=5)
        api_b = httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[1]}", timeout=5)
        async with api_a, api_b:
            for api in (api_a, api_b):

                async def healthy(api: httpx.AsyncClient = api) -> bool:
                    assert all(child.poll() is None for child in children.values()), shown()
                    return (await api.get("/healthz")).status_code == 200

                await eventually(healthy, timeout=90, what="the API processes", retry_on=(httpx.HTTPError,))

            cases = [f"sub_{suffix}_{n}" for n in range(3)]
            for n, subscription in enumerate(cases):
                invoice = sf.invoice(f"in_{suffix}_{n}", customer=f"cus_{suffix}_{n}", subscription=subscription)
                body = json.dumps(sf.event("invoice.payment_failed", invoice, event_id=f"evt_{suffix}_{n}")).encode()
                response = await api_a.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, SECRET)})
                assert response.status_code == 200, response.text
            first = client.get_workflow_handle(f"dunning-{cases[0]}")

            async def texted() -> CaseStatus | None:
                status = await first.query("status", result_type=CaseStatus)
                sent = [n for n in status.notifications if n.channel is Channel.SMS and n.status == "sent"]
                return status if sent else None

            await eventually(texted, timeout=60, what="the first SMS", retry_on=(Exception,))

            # The customer answers STOP to the other API process (Twilio signs the URL it called).
            url = f"http://127.0.0.1:{ports[1]}/webhooks/twilio/sms"
            form = {"From": "+15555550100", "To": "+15005550006", "Body": "STOP", "MessageSid": f"SM{suffix}"}
            signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, form)
            response = await api_b.post("/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature})
            assert response.status_code == 200, response.text

            async def reminded() -> CaseStatus | None:
                status = await first.query("status", result_type=CaseStatus)
                sms = [n for n in status.notifications if n.channel is Channel.SMS and n.template == "reminder"]
                return status if sms else None

            status = await eventually(reminded, timeout=60, what="the reminder step", retry_on=(Exception,))
            [reminder_sms] = [n for n in status.notifications if n.channel is Channel.SMS and n.template == "reminder"]
            assert (reminder_sms.status, reminder_sms.reason) == ("skipped", "customer opted out of SMS"), status.notifications

            for subscription in cases:
                await client.get_workflow_handle(f"dunning-{subscription}").terminate("test done")

        # Every case is in the ledger once, whichever worker recorded it.
        with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as db:
            rows = db.execute("SELECT case_id FROM ledger_cases").fetchall()
        opened = [row[0] for row in rows if any(row[0].startswith(f"dunning-{s}@") for s in cases)]
        assert len(opened) == len(set(opened)) == len(cases), rows
    finally:
        for child in children.values():
            child.terminate()
        for name, child in children.items():
            code = child.wait(timeout=90)
            assert code in (0, -15), f"{name} exited {code}\n{shown()}"
