"""What the fault tests share: a Stripe fake that counts real charges, the worker as a real
process (so it can be SIGKILLed), compressed policies, and signed webhooks through the API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pytest_httpserver import HTTPServer
from temporalio.client import Client, WorkflowHandle
from werkzeug import Request, Response

from dunning.models import CaseStatus
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe
from tests.helpers.policy_files import RECOVERY_LADDER, policy_text
from tests.helpers.workers import TEST_LINK_KEYS, eventually

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "whsec_test_trust_0123456789abcdef"
STRIPE_KEY = "sk_test_trust_0123456789"

# Seconds instead of days: first retry 3 s after the failure, the second 25 s, then an hour.
FAST_POLICY = policy_text(
    "fast",
    RECOVERY_LADDER,
    retry_after='["PT3S", "PT25S", "PT1H"]',
    max_attempts_per_card_30d="10",
    min_gap_between_messages='"PT1S"',
)


def write_policies(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "default.toml").write_text(
        (ROOT / "dunning" / "policies" / "default.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (folder / "fast.toml").write_text(FAST_POLICY, encoding="utf-8")
    return folder


@dataclass
class CountingStripe(FakeStripe):
    """The loopback Stripe, plus what a fault test must know: how many times money really moved.

    `slow_pay[invoice]` delays the answer to a payment (the charge is made, as on Stripe, even if
    the caller is gone by then); `stale_reads` keeps answering `open` for those invoices after they
    are paid (a lagging read), so a retried charge must rely on the idempotency key alone.
    """

    slow_pay: dict[str, float] = field(default_factory=dict)
    decline_first: dict[str, int] = field(default_factory=dict)
    stale_reads: set[str] = field(default_factory=set)
    charges: Counter = field(default_factory=Counter)
    pay_started: dict[str, threading.Event] = field(default_factory=dict)

    def pay_seen(self, invoice_id: str) -> threading.Event:
        return self.pay_started.setdefault(invoice_id, threading.Event())

    def _get_invoice(self, request: Request) -> Response:
        invoice_id = request.path.rsplit("/", 1)[1]
        if invoice_id in self.stale_reads and invoice_id in self.invoices:
            self._record(request)
            return self._json(200, {**self.invoices[invoice_id], "status": "open", "amount_remaining": 1})
        return super()._get_invoice(request)

    def _pay(self, request: Request) -> Response:
        invoice_id = request.path.split("/")[3]
        key = request.headers.get("Idempotency-Key")
        self.pay_seen(invoice_id).set()
        with self._lock:
            replay = key in self._replays
            declines_left = self.decline_first.get(invoice_id, 0)
            if not replay and declines_left:
                self.decline_first[invoice_id] = declines_left - 1
        if replay:
            return super()._pay(request)
        if declines_left:
            self._record(request)
            body = json.dumps(
                sf.card_error(code="card_declined", decline_code="insufficient_funds", invoice_id=invoice_id)
            )
            with self._lock:
                self._replays[key] = (402, body)
            return Response(body, status=402, content_type="application/json")
        time.sleep(self.slow_pay.pop(invoice_id, 0.0))
        response = super()._pay(request)
        if response.status_code == 200:
            with self._lock:
                self.charges[invoice_id] += 1
        return response


def stripe_server() -> HTTPServer:
    """A threaded loopback server: one slow payment must not hold up the other cases."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    return server


@dataclass(eq=False)
class Shop:
    """One customer, subscription and failed invoice known to the fake Stripe."""

    suffix: str
    customer: str = ""
    subscription: str = ""
    invoice: str = ""

    def __post_init__(self) -> None:
        self.customer = self.customer or f"cus_{self.suffix}"
        self.subscription = self.subscription or f"sub_{self.suffix}"
        self.invoice = self.invoice or f"in_{self.suffix}"

    @property
    def email(self) -> str:
        return f"{self.customer}@example.com"

    @property
    def workflow_id(self) -> str:
        return f"dunning-{self.subscription}"

    def add_to(self, stripe: FakeStripe, policy: str = "fast") -> dict[str, Any]:
        invoice = sf.invoice(
            self.invoice,
            customer=self.customer,
            subscription=self.subscription,
            subscription_metadata={"dunning_policy": policy},
            hosted_invoice_url=f"https://invoice.stripe.com/i/acct_test/{self.invoice}",
        )
        customer = sf.customer(self.customer, email=self.email, phone=None)
        stripe.add(invoice, customer, sf.subscription(self.subscription, customer=self.customer))
        return invoice

    def failed(self, stripe: FakeStripe, n: int = 0) -> dict[str, Any]:
        return sf.event(
            "invoice.payment_failed", stripe.invoices[self.invoice], event_id=f"evt_failed_{self.suffix}_{n}"
        )

    def paid(self, stripe: FakeStripe, n: int = 0) -> dict[str, Any]:
        paid = {**stripe.invoices[self.invoice], "status": "paid"}
        return sf.event("invoice.paid", paid, event_id=f"evt_paid_{self.suffix}_{n}")

    def card_attached(self, n: int = 0, pm: str = "pm_card_new") -> dict[str, Any]:
        return sf.event(
            "payment_method.attached",
            sf.payment_method(pm, customer=self.customer),
            event_id=f"evt_pm_{self.suffix}_{n}",
        )


async def post_event(api: httpx.AsyncClient, event: dict[str, Any], secret: str = WEBHOOK_SECRET) -> httpx.Response:
    body = json.dumps(event).encode()
    return await api.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sf.sign(body, secret), "Content-Type": "application/json"},
    )


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str, every: float = 0.25) -> Any:
    """Polls `check()` until it returns something truthy; any exception means "not yet"."""
    # e.g. the query while no worker is up
    return await eventually(check, timeout, every, what=what, retry_on=(Exception,))


async def status_of(handle: WorkflowHandle) -> CaseStatus:
    return await handle.query("status", result_type=CaseStatus)


def worker_env(
    *,
    temporal: str,
    namespace: str,
    queue: str,
    stripe_base: str,
    policy_dir: Path,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DUNNING_", "STRIPE_", "TEMPORAL_", "SENDGRID_", "TWILIO_"))
    }
    env.update(
        TEMPORAL_ADDRESS=temporal,
        TEMPORAL_NAMESPACE=namespace,
        DUNNING_TASK_QUEUE=queue,
        DUNNING_PAYMENTS="stripe",
        DUNNING_EMAIL="sandbox",
        DUNNING_SMS="sandbox",
        DUNNING_POLICY_DIR=str(policy_dir),
        DUNNING_LINK_KEYS=TEST_LINK_KEYS,
        DUNNING_STATE_DIR=str(policy_dir.parent / "state"),
        DUNNING_LOG_FORMAT="json",
        STRIPE_API_KEY=STRIPE_KEY,
        STRIPE_API_BASE=stripe_base,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


class WorkerProcess:
    """`python worker.py` as its own process, started and SIGKILLed at will; its logs in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"--- start {self.starts} ---\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    async def ready(self, timeout: float = 30) -> None:
        """Until this start of the worker logs that it polls its task queue."""
        marker = f"--- start {self.starts} ---"

        async def started() -> bool:
            self.assert_alive()
            return '"worker started"' in self.logs().split(marker, 1)[-1]

        await until(started, timeout, "the worker to start", every=0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no activity failure reported; Temporal finds out by timeouts."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"worker exited:\n{self.logs()[-3000:]}"


def codec_client(client: Client, data_converter) -> Client:
    config = client.config()
    config["data_converter"] = data_converter
    return Client(**config)


@dataclass
class FakeSendGrid:
    """SendGrid's Mail Send on the same loopback server: records every message it accepts.

    Like SendGrid, it has no idempotency: a message is accepted (and would be delivered) as soon
    as the request arrives, whether or not the caller lives to read the 202. `slow_to[address]`
    delays the answer to the first message for that address.
    """

    server: HTTPServer
    accepted: list[tuple[str, str, str]] = field(default_factory=list)  # (to, subject, idempotency key)
    slow_to: dict[str, float] = field(default_factory=dict)
    seen_to: dict[str, threading.Event] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        route = self.server.expect_request
        route("/v3/mail/send", method="POST").respond_with_handler(self._send)
        route(re.compile(r"^/v3/suppression/bounces/.+$"), method="GET").respond_with_json([])

    def seen(self, to: str) -> threading.Event:
        with self._lock:
            return self.seen_to.setdefault(to, threading.Event())

    def _send(self, request: Request) -> Response:
        mail = json.loads(request.get_data())
        to = mail["personalizations"][0]["to"][0]["email"]
        key = request.headers.get("X-Idempotency-Key") or (mail.get("headers") or {}).get("X-Idempotency-Key", "")
        with self._lock:
            self.accepted.append((to, mail["subject"], key))
        self.seen(to).set()
        time.sleep(self.slow_to.pop(to, 0.0))
        return Response(status=202, headers={"X-Message-Id": f"msg-{len(self.accepted)}"})

    def to(self, address: str) -> list[tuple[str, str]]:
        return [(subject, key) for to, subject, key in self.accepted if to == address]
