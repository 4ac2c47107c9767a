"""The recovery ledger on the production path: a real PostgreSQL, and cases on the dev server.

The store's semantics (idempotent per case and milestone, newer facts win, the page-click join,
export, erasure, retention) as on SQLite; migrations from an empty database; whole cases run by
two workers writing the same ledger; the worker's own Prometheus endpoint."""

from __future__ import annotations

import socket
import urllib.request
import uuid

from temporalio.client import Client

from dunning.models import DunningInput, Stage
from runtime import migrations
from runtime.database import Database
from runtime.ledger import DatabaseLedger
from runtime.temporal import metrics_runtime
from tests.helpers import ledger_checks
from tests.helpers.case_harness import failure, make_policy
from tests.helpers.postgres import PostgresServer
from tests.helpers.workers import eventually, new_worker
from workflows.dunning_workflow import DunningWorkflow


def fresh(postgres: PostgresServer) -> Database:
    database = Database(postgres.create_database(f"t_{uuid.uuid4().hex[:12]}"))
    assert migrations.current(database) is None
    assert migrations.upgrade(database) == migrations.head() == "0004"
    return database


def test_store_on_postgresql(postgres: PostgresServer) -> None:
    ledger_checks.check_idempotent_and_ordered(fresh(postgres))
    ledger_checks.check_customer_page_join_and_period(fresh(postgres))
    ledger_checks.check_export_forget_and_prune(fresh(postgres))


async def test_two_workers_on_one_postgresql_record_every_case_once(postgres: PostgresServer, dev_env) -> None:
    """Cases spread over two workers sharing one task queue and one ledger: each case's row and
    milestones land once, whichever worker ran which record (and both may retry)."""
    ledger = DatabaseLedger(fresh(postgres))
    task_queue = f"ledger-{uuid.uuid4().hex[:8]}"
    policy = make_policy(retry_after=["PT1S"], grace="PT30S", cancel_after_suspension="PT30S", min_gap_between_messages="PT1S",
                         notify=[{"at": "PT0S", "channels": ["email"], "template": "payment_failed"}])  # fmt: skip
    one = new_worker(dev_env.client, task_queue=task_queue, ledger=ledger)
    # A second connection, as a second worker process would have (one client can't hold two).
    other = await Client.connect(
        dev_env.client.service_client.config.target_host, data_converter=dev_env.client.data_converter
    )
    two = new_worker(other, task_queue=task_queue, ledger=ledger)
    subscriptions = [f"sub_{uuid.uuid4().hex[:8]}" for _ in range(6)]
    async with one, two:
        handles = [
            await dev_env.client.start_workflow(
                DunningWorkflow.run,
                DunningInput(subscription_id=sub, customer_id=f"cus_{i}", policy=policy),
                id=f"dunning-{sub}",
                task_queue=task_queue,
                start_signal="payment_failed",
                start_signal_args=[failure(f"in_{i}", customer_id=f"cus_{i}", occurred_at=None)],
            )
            for i, sub in enumerate(subscriptions)
        ]
        statuses = [await h.result() for h in handles]
    assert {s.stage for s in statuses} == {Stage.RECOVERED}  # the sandbox card pays on the first retry
    rows = await ledger.report_rows()
    assert sorted(r.facts.subscription_id for r in rows) == sorted(subscriptions)
    for status in statuses:
        milestones = [e.milestone for e in await ledger.events(status.case_id)]
        assert len(milestones) == len(set(milestones))
        assert milestones.count("opened") == 1 and milestones.count("closed") == 1
    totals = await ledger.totals()
    assert totals.opened == 6 and totals.closed == {"recovered": 6}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_worker_serves_the_sdks_metrics_for_prometheus(dev_env) -> None:
    port = _free_port()
    runtime = metrics_runtime(port, host="127.0.0.1")
    assert runtime is not None and metrics_runtime(0) is None
    client = await Client.connect(dev_env.client.service_client.config.target_host, runtime=runtime)
    async with new_worker(client):
        text = await eventually(
            lambda: _scrape(port), what="the worker's metrics endpoint", retry_on=(OSError,), timeout=20
        )
    assert "temporal_" in text


async def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:  # noqa: S310
        body: str = answer.read().decode()
    return body if "temporal_" in body else ""


