"""Crashes on the real Temporal dev server: the worker SIGKILLed in the middle of a charge and
during a sleep, and the Temporal server itself killed and restarted on its database file.

The worker runs as its own process (`python worker.py`, the Stripe backend pointed at a
loopback fake Stripe by `STRIPE_API_BASE`, payloads encrypted with `DUNNING_ENCRYPTION_KEYS`),
cases are opened by signed webhooks through the API, and policies run in seconds. Every case
must end exactly as it would have without the crash, with exactly one real charge per invoice.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from dunning import contract as sa
from dunning.models import CaseStatus, Stage
from runtime.codec import data_converter
from runtime.settings import Settings
from starter.api.main import create_app
from tests.helpers import binary
from tests.helpers.trust_harness import (
    WEBHOOK_SECRET,
    CountingStripe,
    FakeSendGrid,
    Shop,
    WorkerProcess,
    codec_client,
    post_event,
    status_of,
    stripe_server,
    until,
    worker_env,
    write_policies,
)

KEYS = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
CONVERTER = data_converter(KEYS)

#: What a recovered case of the fast policy tells the customer, crash or no crash: once each.
RECOVERED_STORY = [
    ("payment_failed", "email", "sent"),
    ("payment_failed", "in_app", "sent"),
    ("recovered", "email", "sent"),
]


SUBJECTS = ["We couldn't process your payment", "Thank you, your subscription payment went through"]


def story(status: CaseStatus) -> list[tuple[str, str, str]]:
    return [(n.template, n.channel.value, n.status) for n in status.notifications]


def our_attempts(status: CaseStatus) -> list[tuple[int, str, str | None]]:
    return [(a.attempt, a.result.status, a.idempotency_key) for a in status.attempts if a.attempt >= 1]


def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def stripe():
    server = stripe_server()
    yield CountingStripe(server)
    server.stop()


async def test_worker_killed_mid_charge_mid_email_and_while_asleep(
    dev_env: WorkflowEnvironment, stripe, tmp_path: Path
):
    """One SIGKILL, four cases caught in different places:
    A: while Stripe processes its charge; the retried activity re-reads the invoice (paid).
    B: the same, but Stripe's reads lag: the retry pays again with the same idempotency key
       and Stripe replays its first answer.
    C: asleep until its second retry, which falls due while no worker runs.
    D: while SendGrid takes its first e-mail."""
    client = codec_client(dev_env.client, CONVERTER)
    queue = f"crash-{uid()}"
    policies = write_policies(tmp_path / "policies")
    a, b, c, d = Shop(f"a{uid()}"), Shop(f"b{uid()}"), Shop(f"c{uid()}"), Shop(f"d{uid()}")
    for shop in (a, b, c, d):
        shop.add_to(stripe)
    sendgrid = FakeSendGrid(stripe.server)
    sendgrid.slow_to[d.email] = 8.0
    stripe.slow_pay.update({a.invoice: 6.0, b.invoice: 6.0})
    stripe.stale_reads.add(b.invoice)
    stripe.decline_first[c.invoice] = 1

    worker = WorkerProcess(
        worker_env(
            temporal=dev_env.client.service_client.config.target_host,
            namespace=dev_env.client.namespace,
            queue=queue,
            stripe_base=stripe.base_url,
            policy_dir=policies,
            extra={
                "DUNNING_ENCRYPTION_KEYS": KEYS,
                "DUNNING_EMAIL": "sendgrid",
                "SENDGRID_API_KEY": "SG.test-key.crash",
                "DUNNING_EMAIL_FROM": "billing@dunning.test",
                "SENDGRID_API_HOST": stripe.base_url,
            },
        ),
        tmp_path / "worker.log",
    )
    settings = Settings(stripe_webhook_secret=WEBHOOK_SECRET, dunning_task_queue=queue, dunning_policy_dir=policies)
    app = create_app(settings, client_factory=lambda: client)
    worker.start()
    await worker.ready()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
            opened = time.monotonic()
            for shop in (a, b, c, d):
                response = await post_event(api, shop.failed(stripe))
                assert response.status_code == 200, response.text
            handles = {s: client.get_workflow_handle(s.workflow_id, result_type=CaseStatus) for s in (a, b, c, d)}

            # Both slow charges are inside Stripe, C's first retry was declined: kill the worker.
            await until(
                lambda: asyncio.sleep(
                    0,
                    stripe.pay_seen(a.invoice).is_set()
                    and stripe.pay_seen(b.invoice).is_set()
                    and sendgrid.seen(d.email).is_set(),
                ),
                30,
                "the slow charges to reach Stripe and D's e-mail SendGrid",
            )
            await until(lambda: _has_attempt(handles[c], 1), 30, "C's first retry to be declined", every=0.1)
            worker.assert_alive()
            worker.kill()
            killed_at = time.monotonic() - opened

            # C's second retry falls due (25 s) while no worker runs; restart after it.
            await asyncio.sleep(max(0.0, 27 - (time.monotonic() - opened)))
            worker.start()
            await worker.ready()
            finals = dict(
                zip(
                    (a, b, c, d),
                    await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles.values())), timeout=150),
                    strict=True,
                )
            )
    finally:
        worker.stop()

    assert worker.starts == 2 and killed_at < 25
    for shop, final in finals.items():
        # The case ends as it would have without the crash…
        assert final.stage is Stage.RECOVERED and final.outcome is Stage.RECOVERED, (shop, final.timeline)
        assert story(final) == RECOVERED_STORY, (shop, story(final))
        assert final.access.value == "active"
        # …and the money moved exactly once.
        assert stripe.charges[shop.invoice] == 1, shop
        assert stripe.invoices[shop.invoice]["status"] == "paid"

    for shop in (a, b, c):  # every e-mail once
        assert sorted(s for s, _ in sendgrid.to(shop.email)) == sorted(SUBJECTS), sendgrid.to(shop.email)
    # D: SendGrid has no idempotency key. The e-mail it accepted as the worker died is sent again
    # by the retried activity (the documented residual risk, see docs/SECURITY.md); both copies
    # carry the same key, so the case itself records it once and nothing else is repeated.
    d_mails = sendgrid.to(d.email)
    assert sorted(s for s, _ in d_mails) == sorted([SUBJECTS[0], *SUBJECTS]), d_mails
    first_key = {k for s, k in d_mails if s == SUBJECTS[0]}
    assert first_key == {f"{finals[d].case_id}/step-0/email"}
    assert our_attempts(finals[d]) == [(1, "succeeded", f"{finals[d].case_id}/{d.invoice}/1")]

    case_a, case_b, case_c = finals[a].case_id, finals[b].case_id, finals[c].case_id
    # A: one payment request; the retried activity re-read the paid invoice instead of paying.
    assert [r.idempotency_key for r in stripe.pay_requests if a.invoice in r.path] == [f"{case_a}/{a.invoice}/1"]
    assert our_attempts(finals[a]) == [(1, "already_paid", f"{case_a}/{a.invoice}/1")]
    # B: the retried activity paid again with the same key and got Stripe's stored answer.
    assert [r.idempotency_key for r in stripe.pay_requests if b.invoice in r.path] == [f"{case_b}/{b.invoice}/1"] * 2
    assert our_attempts(finals[b]) == [(1, "succeeded", f"{case_b}/{b.invoice}/1")]
    # C: declined, slept through the crash, charged once at its second slot.
    assert our_attempts(finals[c]) == [
        (1, "declined", f"{case_c}/{c.invoice}/1"),
        (2, "succeeded", f"{case_c}/{c.invoice}/2"),
    ]
    second = next(x for x in finals[c].attempts if x.attempt == 2)
    assert (second.at - finals[c].opened_at).total_seconds() >= 25  # on schedule, not early


async def _has_attempt(handle, attempt: int) -> bool:
    return any(a.attempt == attempt for a in (await status_of(handle)).attempts)


# --- the Temporal server itself restarting on its database file ---------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    """`temporal server start-dev --db-filename …`: a real server whose state survives a kill."""

    def __init__(self, db: Path, log: Path) -> None:
        self.db, self.log = db, log
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = binary("temporal")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        attributes = [
            arg for key in sa.SEARCH_ATTRIBUTES for arg in ("--search-attribute", f"{key.name}={key.indexed_value_type.name}")
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "server",
                    "start-dev",
                    "--db-filename",
                    str(self.db),
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--headless",
                    "--log-level",
                    "error",
                    *attributes,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        await until(self._ready, 30, "the dev server to answer")

    async def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
        client = await Client.connect(self.address)
        return await client.service_client.check_health()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


async def test_temporal_server_killed_and_restarted_on_its_file(stripe, tmp_path: Path):
    """The server dies (SIGKILL) while a case sleeps towards its second retry and the worker keeps
    polling; a webhook during the outage gets 503 (Stripe retries); the server restarts on its db
    file; the redelivered webhook and the sleeping case both go through, once."""
    server = DevServer(tmp_path / "temporal.db", tmp_path / "server.log")
    await server.start()
    queue = f"restart-{uid()}"
    policies = write_policies(tmp_path / "policies")
    shop, late = Shop(f"r{uid()}"), Shop(f"l{uid()}")
    shop.add_to(stripe)
    late.add_to(stripe)
    stripe.decline_first[shop.invoice] = 1
    worker = WorkerProcess(
        worker_env(
            temporal=server.address,
            namespace="default",
            queue=queue,
            stripe_base=stripe.base_url,
            policy_dir=policies,
            extra={"DUNNING_ENCRYPTION_KEYS": KEYS},
        ),
        tmp_path / "worker.log",
    )

    async def connect() -> Client:
        return await Client.connect(server.address, data_converter=CONVERTER)

    settings = Settings(stripe_webhook_secret=WEBHOOK_SECRET, dunning_task_queue=queue, dunning_policy_dir=policies)
    app = create_app(settings, client_factory=connect)
    worker.start()
    await worker.ready()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
            assert (await post_event(api, shop.failed(stripe))).status_code == 200
            client = await connect()
            handle = client.get_workflow_handle(shop.workflow_id, result_type=CaseStatus)
            await until(lambda: _has_attempt(handle, 1), 30, "the first retry to be declined", every=0.1)

            server.kill()
            during = await post_event(api, late.failed(stripe))
            assert during.status_code == 503, during.text  # not acknowledged: Stripe will redeliver
            await asyncio.sleep(2)
            await server.start()  # same file, same port

            again = await post_event(api, late.failed(stripe))  # Stripe's redelivery
            assert again.status_code == 200, again.text
            client = await connect()
            handle = client.get_workflow_handle(shop.workflow_id, result_type=CaseStatus)
            late_handle = client.get_workflow_handle(late.workflow_id, result_type=CaseStatus)
            final, late_final = await asyncio.wait_for(asyncio.gather(handle.result(), late_handle.result()), 90)
            worker.assert_alive()  # it rode out the outage without a restart
            runs = [w async for w in client.list_workflows(f'WorkflowId = "{late.workflow_id}"')]
    finally:
        worker.stop()
        server.stop()

    assert final.stage is Stage.RECOVERED and story(final) == RECOVERED_STORY
    assert our_attempts(final) == [
        (1, "declined", f"{final.case_id}/{shop.invoice}/1"),
        (2, "succeeded", f"{final.case_id}/{shop.invoice}/2"),
    ]
    assert late_final.stage is Stage.RECOVERED
    # Told and thanked; or, when the worker (reconnecting with backoff) first ran the case after its
    # retry was due, charged first and recovered silently. Never a message twice, never half a story.
    assert story(late_final) in (RECOVERED_STORY, []), story(late_final)
    assert len(runs) == 1
    assert stripe.charges == {shop.invoice: 1, late.invoice: 1}
