"""The benchmark's worker process: `python -m bench.worker_child` (started by bench/run.py).

The production worker (`worker.build_worker`: workflow, activity classes, task queue, cache), with:
- payments: `BENCH_PAYMENTS=stripe` → the Stripe backend (`STRIPE_API_KEY`, `STRIPE_API_BASE`
  pointing at bench/fake_stripe.py), else the in-memory sandbox;
- email and SMS: rendered for real by the activity, then dropped (a sink that keeps nothing, so
  the worker's memory is the cases' and the SDK's, not a growing outbox);
- consent: the production store on the default database (SQLite) in a temporary folder, migrated
  as the worker does at start.
It also runs the yardstick `BenchMinimalWorkflow`. `BENCH_MAX_CACHED` sets the sticky cache size
(the SDK's default is 1000); `BENCH_UNSANDBOXED=1` runs workflows outside the SDK's sandbox, only
to measure what the sandbox costs. It touches `BENCH_READY_FILE` once polling, and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.worker import UnsandboxedWorkflowRunner  # noqa: E402

from activities.case_activities import NotificationActivities, PaymentActivities, case_activities  # noqa: E402
from activities.ledger_activities import LedgerActivities  # noqa: E402
from activities.sandbox import SandboxPayments  # noqa: E402
from activities.stripe_backend import StripePayments  # noqa: E402
from bench.minimal_workflow import MinimalWorkflow, bench_noop  # noqa: E402
from runtime import migrations  # noqa: E402
from runtime.consent import DatabaseConsentStore  # noqa: E402
from runtime.links import CaseLinks, LinkSigner  # noqa: E402
from runtime.ledger import DatabaseLedger  # noqa: E402
from runtime.settings import Settings  # noqa: E402
from worker import build_worker  # noqa: E402


class SinkOutbox:
    """Email and SMS backend that accepts and forgets."""

    def __init__(self) -> None:
        self.sent = 0

    async def send_email(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        html: str | None,
        idempotency_key: str,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        self.sent += 1
        return f"sink-{self.sent}"

    async def send_sms(self, *, to: str, body: str, idempotency_key: str) -> str:
        self.sent += 1
        return f"sink-{self.sent}"


class NullLedger:
    async def record(self, record: CaseRecord) -> None:
        return None


async def main() -> None:
    address = os.environ["BENCH_ADDRESS"]
    for attempt in range(100):  # the dev server may still be starting
        try:
            client = await Client.connect(address, data_converter=pydantic_data_converter)
            break
        except RuntimeError:
            if attempt == 99:
                raise
            await asyncio.sleep(0.2)
    settings = Settings(
        dunning_task_queue=os.environ["BENCH_TASK_QUEUE"],
        dunning_max_cached_cases=int(os.environ.get("BENCH_MAX_CACHED", "1000")),
        dunning_state_dir=Path(tempfile.mkdtemp(prefix="dunning-bench-")),
    )
    payments = (
        StripePayments.from_settings(settings) if os.environ.get("BENCH_PAYMENTS") == "stripe" else SandboxPayments()
    )
    outbox = SinkOutbox()
    database = migrations.prepare(settings)
    consent = DatabaseConsentStore(database)
    # Real links, remembered in the database like a deployment's (their cost is part of a message's).
    links = CaseLinks(LinkSigner([b"bench-link-key-not-secret"]), settings.public_url(), database)
    # The recovery ledger on the worker's own SQLite file, as a one-host deployment has it
    # (BENCH_LEDGER=null: a ledger that discards every record, to measure what the ledger costs).
    ledger = LedgerActivities(NullLedger() if os.environ.get("BENCH_LEDGER") == "null" else DatabaseLedger(database))
    pay = PaymentActivities(payments)
    notify = NotificationActivities(payments, outbox, outbox, consent, links)
    worker = build_worker(
        client,
        settings,
        [*case_activities(pay, notify), *ledger.activities(), bench_noop],
        extra_workflows=[MinimalWorkflow],
        # Only to measure what the sandbox costs (docs/performance.md); production keeps it.
        **({"workflow_runner": UnsandboxedWorkflowRunner()} if os.environ.get("BENCH_UNSANDBOXED") else {}),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        Path(os.environ["BENCH_READY_FILE"]).touch()
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
