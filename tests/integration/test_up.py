"""The README's first command's stack: `dunning up` as a user runs it, dev server included.

Starts `python -m starter.cli.app up` (what `scripts/up` execs, minus the install) on free ports
and a temporary state dir, pushes Stripe-signed webhooks through its API, and finds the cases
through the contract's search attributes and the `status` query. Then Ctrl-C (SIGINT) must stop
everything with exit code 0 and free every port; a second `up` on the same db file (search
attributes already registered) must start and still hold the cases.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from dunning import contract as sa
from dunning.models import CaseStatus
from starter.cli import stripe_events as se
from starter.cli.devstack import DEV_WEBHOOK_SECRET
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.asyncio(loop_scope="session")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on it any more (a closed server's TIME_WAIT connections don't count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Up:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.temporal_port, self.ui_port, self.api_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        env = dict(os.environ)
        # A fresh laptop: none of the service's variables set, so `up` must bring its own defaults.
        for var in list(env):
            if var.startswith(("STRIPE_", "SENDGRID_", "TWILIO_", "DUNNING_", "TEMPORAL_")):
                del env[var]
        self.env = env

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ports(self) -> tuple[int, int, int]:
        return self.temporal_port, self.ui_port, self.api_port

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "starter.cli.app",
                "up",
                "--state-dir",
                str(self.state_dir),
                "--temporal-port",
                str(self.temporal_port),
                "--ui-port",
                str(self.ui_port),
                "--api-port",
                str(self.api_port),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    async def wait_healthy(self, timeout: float = 90) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while True:
                if self.proc.poll() is not None:
                    out, err = self.proc.communicate()
                    raise AssertionError(f"dunning up exited {self.proc.returncode}:\n{out}\n{err}\n{self.logs()}")
                try:
                    if (await http.get(f"{self.api}/healthz", timeout=2)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"no healthy API after {timeout}s\n{self.logs()}")
                await asyncio.sleep(0.5)

    def logs(self) -> str:
        logs = self.state_dir / "logs"
        return (
            "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
            if logs.exists()
            else ""
        )

    async def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> tuple[int, str, str]:
        assert self.proc is not None
        self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("dunning up did not stop")
            await asyncio.sleep(0.2)
        out, err = self.proc.communicate()
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def post_event(http: httpx.AsyncClient, api: str, event: dict, secret: str = DEV_WEBHOOK_SECRET) -> int:
    body = se.encode(event)
    response = await http.post(
        f"{api}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": se.sign(body, secret), "Content-Type": "application/json"},
    )
    return response.status_code


async def test_up_runs_the_whole_stack_and_stops_cleanly(tmp_path: Path) -> None:
    up = Up(tmp_path / "state")
    up.start()
    try:
        await up.wait_healthy()
        run = uuid.uuid4().hex[:6]
        customer, soft_sub, hard_sub = f"cus_up{run}", f"sub_up{run}soft", f"sub_up{run}hard"

        async with httpx.AsyncClient(timeout=10) as http:
            # The Web UI is served on its port.
            assert (await http.get(f"http://127.0.0.1:{up.ui_port}/")).status_code == 200
            # Two renewals of one customer fail, on the compressed demo policy.
            for sub, card, amount in (
                (soft_sub, "pm_card_chargeDeclinedInsufficientFunds", 4900),
                (hard_sub, "pm_card_chargeDeclinedExpiredCard", 12900),
            ):
                invoice = se.invoice(
                    invoice_id=f"in_{sub[4:]}",
                    customer_id=customer,
                    subscription_id=sub,
                    amount_due=amount,
                    payment_method_id=card,
                    policy="demo",
                )
                assert await post_event(http, up.api, se.event("invoice.payment_failed", invoice)) == 200
            # A webhook signed with another secret is refused.
            forged = se.event(
                "invoice.payment_failed",
                se.invoice(
                    invoice_id=f"in_forged{run}",
                    customer_id=customer,
                    subscription_id=f"sub_forged{run}",
                    amount_due=100,
                ),
            )
            assert await post_event(http, up.api, forged, secret="whsec_wrong") == 400

        client = await Client.connect(f"127.0.0.1:{up.temporal_port}", data_converter=pydantic_data_converter)

        async def both_listed() -> list:
            # the soft decline is retried; the expired card waits for a new one
            query = (
                f"WorkflowType = 'DunningWorkflow' AND CustomerId = '{customer}'"
                " AND DunningStage IN ('retrying', 'awaiting_payment_method') AND DeclineCategory IS NOT NULL"
            )
            rows = [wf async for wf in client.list_workflows(query)]
            return rows if len(rows) == 2 else []

        rows = await eventually(both_listed, timeout=30.0, interval=0.5)
        by_id = {wf.id: wf.typed_search_attributes for wf in rows}
        assert set(by_id) == {f"dunning-{soft_sub}", f"dunning-{hard_sub}"}
        assert by_id[f"dunning-{soft_sub}"].get(sa.DUNNING_STAGE) == "retrying"
        assert by_id[f"dunning-{hard_sub}"].get(sa.DUNNING_STAGE) == "awaiting_payment_method"
        assert by_id[f"dunning-{hard_sub}"].get(sa.DECLINE_CATEGORY) == "hard"
        assert by_id[f"dunning-{soft_sub}"].get(sa.SUBSCRIPTION_ID) == soft_sub
        assert by_id[f"dunning-{soft_sub}"].get(sa.AMOUNT_DUE) == 4900
        assert by_id[f"dunning-{hard_sub}"].get(sa.AMOUNT_DUE) == 12900
        assert by_id[f"dunning-{hard_sub}"].get(sa.CURRENCY) == "usd"
        assert by_id[f"dunning-{soft_sub}"].get(sa.NEXT_ACTION_AT) is not None

        status = await client.get_workflow_handle(f"dunning-{soft_sub}").query("status", result_type=CaseStatus)
        assert status.policy == "demo" and status.stage.value == "retrying" and status.customer_id == customer
        assert [i.invoice_id for i in status.outstanding_invoices] == [f"in_{soft_sub[4:]}"]

        # The customer adds a working card: both open cases charge it at once and recover.
        async with httpx.AsyncClient(timeout=10) as http:
            attached = se.event(
                "payment_method.attached", se.payment_method(payment_method_id="pm_card_visa", customer_id=customer)
            )
            assert await post_event(http, up.api, attached) == 200

        async def recovered() -> list:
            query = f"CustomerId = '{customer}' AND DunningOutcome = 'recovered' AND DunningStage = 'recovered'"
            rows = [wf async for wf in client.list_workflows(query)]
            return rows if len(rows) == 2 else []

        await eventually(recovered, timeout=30.0, interval=0.5)

        # The local mailbox shows what this customer received, from the first email to the thanks
        # (for sorting it out: they added the card), each with the link to their page.
        async with httpx.AsyncClient(timeout=10) as http:

            async def mailbox() -> str:
                page = (await http.get(f"{up.api}/dev/mailbox", params={"customer": customer})).text
                return page if page.count("Thank you for sorting this out!") >= 2 else ""

            page = await eventually(mailbox, timeout=30.0, interval=0.5)
            assert "We couldn&#39;t process your Pro payment" in page
            assert "Your card on file has expired: please add a new one" in page
            assert f"{customer}@example.com" in page and 'sandbox="allow-popups' in page

        # `dunning demo` drives its population through the same API, briefly and by itself.
        demo = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "starter.cli.app",
            "demo",
            "--api-url",
            up.api,
            "--customers",
            "8",
            "--duration",
            "25",
            "--speed",
            "5",
            "--no-live",
            cwd=ROOT,
            env={**up.env, "TEMPORAL_ADDRESS": f"127.0.0.1:{up.temporal_port}", "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(demo.communicate(), 60)
        demo_out = out.decode()
        print(demo_out)
        assert demo.returncode == 0, f"{demo_out}\n{err.decode()}"
        assert "invoice.payment_failed ×8" in demo_out and "payment_method.attached ×1" in demo_out
        assert "customer.subscription.deleted ×1" in demo_out and "extend_grace signal ×1" in demo_out
        demo_cases = [wf async for wf in client.list_workflows("SubscriptionId STARTS_WITH 'sub_demo'")]
        assert len(demo_cases) >= 8
    except BaseException:
        up.kill()
        print(up.logs())
        raise

    code, out, err = await up.stop(signal.SIGINT)
    assert code == 0, f"{out}\n{err}\n{up.logs()}"
    assert "Temporal UI" in err and f"http://127.0.0.1:{up.ui_port}" in err
    assert f"http://127.0.0.1:{up.api_port}/dev/mailbox" in err
    # Every child stopped on its own after the forwarded Ctrl-C, none had to be killed.
    assert "stopped. api exit 0, worker exit 0, temporal exit 0" in err, err
    for port in up.ports:
        assert port_is_free(port), f"port {port} still held after Ctrl-C"
    assert (tmp_path / "state" / "temporal.db").exists()

    # Again on the same db file: search attributes already registered, the cases are still there.
    again = Up(tmp_path / "state")
    again.start()
    try:
        await again.wait_healthy()
        client = await Client.connect(f"127.0.0.1:{again.temporal_port}", data_converter=pydantic_data_converter)

        async def still_there() -> list:
            rows = [wf async for wf in client.list_workflows(f"CustomerId = '{customer}'")]
            return rows if len(rows) == 2 else []

        await eventually(still_there, timeout=30.0, interval=0.5)
    except BaseException:
        again.kill()
        print(again.logs())
        raise
    code, out, err = await again.stop(signal.SIGTERM)
    assert code == 0, f"{out}\n{err}"
    for port in again.ports:
        assert port_is_free(port)


async def test_up_refuses_a_busy_port(tmp_path: Path) -> None:
    up = Up(tmp_path / "state")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        up.api_port = busy.getsockname()[1]
        up.start()
        assert up.proc is not None
        out, err = up.proc.communicate(timeout=30)
    assert up.proc.returncode == 1
    assert f"port {up.api_port}" in err and "--api-port" in err
    for port in (up.temporal_port, up.ui_port):
        assert port_is_free(port)
