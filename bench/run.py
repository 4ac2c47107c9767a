#!/usr/bin/env python
"""How many cases, how fast, at what cost: `.venv/bin/python bench/run.py [--quick]`.

A benchmark, not a test. It starts everything itself on loopback, on free ports:
- the Temporal dev server (`temporal server start-dev`, in memory, headless, with the contract's
  search attributes);
- a loopback Stripe (bench/fake_stripe.py) that stamps when each charge arrives;
- the HTTP API (`starter.api:app`) under real uvicorn, one process, HTTP/1.1 on 127.0.0.1;
- worker processes (bench/worker_child.py): the production workflow and activities;
and prints six sections:
  1. webhook ingestion   signed invoice.payment_failed → started cases, vs bare start_workflow
  2. reaction time       payment_method.attached webhook → charge reaching Stripe
  3. case throughput     whole cases on a compressed policy, vs a minimal workflow with the same
                         timers and activities (bench/minimal_workflow.py)
  4. cost per case       history events, payload bytes per full ladder, by invoices per case
  5. open sleeping cases worker memory per cached case, by number of cases and invoices
  6. recovery ledger     its record_case events per case, one SQLite write, whole cases/s with and without
Figures are noisy on a shared machine: rates and latencies are medians of `--repeat` runs.
`--json FILE` also writes every figure as JSON. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from activities.stripe_backend import StripePayments  # noqa: E402
from dunning import contract  # noqa: E402
from dunning.models import CaseStatus, DunningInput, PaymentFailed, Stage  # noqa: E402
from dunning.policy import Policy, load_policies  # noqa: E402
from fakes import stripe_api as sf  # noqa: E402

SECRET = "whsec_bench_0123456789abcdef"
STRIPE_KEY = "sk_test_bench_0123456789"
SECTIONS = (
    "1. Webhook ingestion",
    "2. Reaction time (card update -> charge)",
    "3. Whole-case throughput",
    "4. Cost per case",
    "5. Open sleeping cases",
    "6. The recovery ledger",
)


@dataclass
class Config:
    quick: bool
    repeat: int
    ingest_events: int
    ingest_concurrency: int
    reaction_cases: int
    throughput_cases: int
    time_scale: float  # 1.0: the compressed policy's seconds; smaller in --quick
    invoice_counts: tuple[int, ...]
    sleeping_points: list[tuple[int, int, bool]]  # (open cases, invoices per case, in the SDK's sandbox)
    settle: float = 1.0  # seconds to let a worker go quiet before reading its memory


def config(args: argparse.Namespace) -> Config:
    if args.quick:
        return Config(True, 1, 12, 4, 2, 3, 0.05, (1, 3), [(10, 1, True)], settle=0.2)
    points = [(1000, 1, True), (10_000, 1, True), (1000, 3, True), (1000, 10, True), (1000, 1, False)]
    if args.with_50k:
        points.append((50_000, 1, True))
    return Config(False, args.repeat, 1000, 32, 60, 200, 1.0, (1, 3, 10), points)


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def binary(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        sys.exit(f"`{name}` is not on PATH: install the project (pip install -e .)")
    return path


class Procs:
    """Every process this run started, stopped (by its own handle) on the way out."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs = Path(tempfile.mkdtemp(prefix="dunning-bench-logs-"))

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


@dataclass
class DevServer:
    proc: subprocess.Popen
    address: str
    client: Client


async def start_dev_server(procs: Procs) -> DevServer:
    port = free_port()
    argv = [binary("temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port)]
    argv += ["--http-port", str(free_port()), "--metrics-port", str(free_port()), "--log-level", "error"]
    proc = procs.start(f"temporal-{port}", argv + contract.dev_server_flags())
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            client = await Client.connect(address, data_converter=pydantic_data_converter)
            await client.count_workflows()
            return DevServer(proc, address, client)
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dev server did not start; see {procs.logs}") from None
            await asyncio.sleep(0.2)


async def start_worker(
    procs: Procs,
    server: DevServer,
    task_queue: str,
    *,
    payments: str = "sandbox",
    max_cached: int = 1000,
    stripe_base: str | None = None,
    sandboxed: bool = True,
    ledger: str = "sqlite",
) -> subprocess.Popen:
    ready = procs.logs / f"worker-{task_queue}.ready"
    env = {
        "BENCH_ADDRESS": server.address,
        "BENCH_TASK_QUEUE": task_queue,
        "BENCH_PAYMENTS": payments,
        "BENCH_MAX_CACHED": str(max_cached),
        "BENCH_READY_FILE": str(ready),
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_API_BASE": stripe_base or "",
        "BENCH_UNSANDBOXED": "" if sandboxed else "1",
        "BENCH_LEDGER": ledger,
    }
    proc = procs.start(f"worker-{task_queue}", [sys.executable, "-m", "bench.worker_child"], env)
    await _until(lambda: ready.exists(), proc, procs, f"worker {task_queue}")
    return proc


async def start_fake_stripe(procs: Procs) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = procs.start("fake-stripe", [sys.executable, "-m", "bench.fake_stripe", str(port)])
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{base}/_bench/stats")).status_code == 200
        except httpx.HTTPError:
            return False

    await _until(up, proc, procs, "fake Stripe")
    return proc, base


async def start_api(procs: Procs, server: DevServer, stripe_base: str, task_queue: str) -> str:
    port = free_port()
    env = {
        "TEMPORAL_ADDRESS": server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_API_KEY": STRIPE_KEY,
        "STRIPE_API_BASE": stripe_base,
        "DUNNING_TASK_QUEUE": task_queue,
        "DUNNING_STATE_DIR": str(procs.logs / f"api-{port}-state"),
    }
    argv = [sys.executable, "-m", "uvicorn", "starter.api:app", "--host", "127.0.0.1", "--port", str(port)]
    proc = procs.start(f"api-{port}", argv + ["--log-level", "warning", "--no-access-log"], env)
    base = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{base}/healthz", timeout=5)).status_code == 200
        except httpx.HTTPError:
            return False

    await _until(up, proc, procs, "API")
    return base


async def _until(check: Callable[[], Any], proc: subprocess.Popen, procs: Procs, what: str, timeout=90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start; see {procs.logs}")
        await asyncio.sleep(0.1)


# --- figures -------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def section(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def _walk_payload_bytes(msg: Any) -> int:
    if msg.DESCRIPTOR.full_name == "temporal.api.common.v1.Payload":
        return msg.ByteSize()
    total = 0
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        if fd.message_type.GetOptions().map_entry:
            if fd.message_type.fields_by_name["value"].type != fd.TYPE_MESSAGE:
                continue
            values = list(value.values())
        elif not hasattr(value, "DESCRIPTOR"):  # a repeated field
            values = list(value)
        else:
            values = [value]
        total += sum(_walk_payload_bytes(v) for v in values)
    return total


@dataclass
class HistoryCost:
    events: int
    payload_bytes: int
    history_bytes: int
    activities: int
    timers: int
    upserts: int
    workflow_tasks: int
    plan: list[float | None] = field(repr=False)


async def history_cost(handle: WorkflowHandle) -> HistoryCost:
    history = await handle.fetch_history()
    plan: list[float | None] = []  # timers as "fires N s after the start", activities as None
    kinds: dict[int, int] = {}
    opened = history.events[0].event_time.ToDatetime()
    for event in history.events:
        kinds[event.event_type] = kinds.get(event.event_type, 0) + 1
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            fires = (
                event.event_time.ToDatetime() + event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
            )
            plan.append((fires - opened).total_seconds())
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            plan.append(None)
    return HistoryCost(
        events=len(history.events),
        payload_bytes=sum(_walk_payload_bytes(e) for e in history.events),
        history_bytes=sum(e.ByteSize() for e in history.events),
        activities=kinds.get(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, 0),
        timers=kinds.get(EventType.EVENT_TYPE_TIMER_STARTED, 0),
        upserts=kinds.get(EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, 0),
        workflow_tasks=kinds.get(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 0),
        plan=plan,
    )


# --- what cases are made of ----------------------------------------------------------


def compressed_policy(scale: float) -> Policy:
    """The default policy's shape (six retries, three ladder steps, suspension, cancellation),
    with seconds instead of days."""

    def s(seconds: float) -> timedelta:
        return timedelta(seconds=seconds * scale)

    return Policy(
        name="bench_compressed",
        retry_after=[s(1), s(2), s(3), s(4), s(5), s(6)],
        retry_local_hour=None,
        max_attempts_per_card_30d=10,
        grace=s(7),
        cancel_after_suspension=s(2),
        quiet_hours=None,
        min_gap_between_messages=timedelta(0),
        notify=[
            {"at": s(0), "channels": ["email", "in_app"], "template": "payment_failed"},
            {"at": s(3), "channels": ["email", "sms"], "template": "reminder"},
            {"at": s(5), "channels": ["email", "sms", "in_app"], "template": "final_notice"},
            {"on": "suspended", "channels": ["email", "in_app"], "template": "suspended"},
            {"on": "recovered", "channels": ["email"], "template": "recovered"},
            {"on": "canceled", "channels": ["email"], "template": "canceled"},
        ],
    )


def failure(invoice_id: str, customer_id: str, subscription_id: str, amount: int = 4900) -> PaymentFailed:
    """A soft decline on a card that keeps declining softly (the sandbox's test card)."""
    return PaymentFailed(
        invoice_id=invoice_id,
        amount_due=amount,
        currency="eur",
        customer_id=customer_id,
        subscription_id=subscription_id,
        failure_code="card_declined",
        decline_code="insufficient_funds",
        payment_method_id="pm_card_chargeDeclinedInsufficientFunds",
        event_id=f"evt_{invoice_id}",
    )


async def open_case(
    client: Client, task_queue: str, key: str, policy: Policy, invoices: int = 1, *, bare: bool = False
) -> WorkflowHandle:
    """Starts a case the way the webhook does (signal-with-start, search attributes, memo,
    summary); further invoices of the subscription arrive as `payment_failed` signals."""
    sub, cus = f"sub_{key}", f"cus_{key}"
    first = failure(f"in_{key}_0", cus, sub)
    if bare:
        return await client.start_workflow("BenchBare", id=f"bare-{key}", task_queue=task_queue)
    handle = await client.start_workflow(
        contract.WORKFLOW_TYPE,
        DunningInput(subscription_id=sub, customer_id=cus, policy=policy),
        id=contract.workflow_id(sub),
        task_queue=task_queue,
        start_signal=contract.Signal.PAYMENT_FAILED.value,
        start_signal_args=[first],
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(contract.CUSTOMER_ID, cus),
                SearchAttributePair(contract.SUBSCRIPTION_ID, sub),
                SearchAttributePair(contract.AMOUNT_DUE, first.amount_due),
                SearchAttributePair(contract.CURRENCY, "eur"),
            ]
        ),
        memo={"invoice_id": first.invoice_id, "opened_by_event": first.event_id},
        static_summary=f"{cus} · €49.00 · {sub}",
        static_details=f"Opened by Stripe event `{first.event_id}`: invoice `{first.invoice_id}` failed.",
        result_type=CaseStatus,
    )
    for n in range(1, invoices):
        await handle.signal(contract.Signal.PAYMENT_FAILED.value, failure(f"in_{key}_{n}", cus, sub))
    return handle


def cases(
    client: Client, task_queue: str, prefix: str, count: int, policy: Policy, invoices: int = 1
) -> list[Callable[[], Awaitable[WorkflowHandle]]]:
    """`count` jobs, each opening one case when called."""
    return [functools.partial(open_case, client, task_queue, f"{prefix}_{i}", policy, invoices) for i in range(count)]


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(j) for j in jobs))


def cases_in(task_queue: str, stage: str) -> str:
    """The contract's visibility filter for cases in `stage`, narrowed to this run's task queue."""
    return f"TaskQueue = {contract.quote(task_queue)} AND {contract.cases_query(stage=stage)}"


async def wait_count(client: Client, query: str, expected: int, timeout: float) -> float:
    """Polls visibility until `query` counts `expected`; returns the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while True:
        count = (await client.count_workflows(query)).count
        if count >= expected:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count}/{expected} workflows match {query!r} after {timeout:.0f}s")
        await asyncio.sleep(0.25)


def signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Stripe-Signature": sf.sign(body, SECRET), "Content-Type": "application/json"}


def failed_event(key: str, *, hard: bool = False) -> dict[str, Any]:
    invoice_id = f"in_hard_{key}" if hard else f"in_{key}"
    invoice = sf.invoice(invoice_id, customer=f"cus_{key}", subscription=f"sub_{key}", hosted_invoice_url=None)
    return sf.event("invoice.payment_failed", invoice, event_id=f"evt_failed_{key}")


# --- 1. ingestion ----------------------------------------------------------------------


async def bench_ingestion(cfg: Config, server: DevServer, api: str, stripe: str, task_queue: str) -> dict[str, Any]:
    section(SECTIONS[0])
    client = server.client
    lookup = StripePayments(STRIPE_KEY, api_base=stripe)
    policy = load_policies()["default"]
    n, conc = cfg.ingest_events, cfg.ingest_concurrency
    runs: dict[str, list[tuple[float, list[float]]]] = {
        "webhook": [],
        "lookup": [],
        "describe+start": [],
        "start": [],
        "bare": [],
    }

    async with httpx.AsyncClient(base_url=api, timeout=30, limits=httpx.Limits(max_connections=conc)) as http:
        for i in range(min(10, n)):  # warm up: the API's Temporal client connects on first use
            body, headers = signed(failed_event(f"warm{uuid.uuid4().hex[:6]}{i}"))
            assert (await http.post("/webhooks/stripe", content=body, headers=headers)).status_code == 200

        async def timed(jobs: list[Callable[[], Awaitable[Any]]]) -> tuple[float, list[float]]:
            latencies: list[float] = []

            def wrap(job: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
                async def run() -> Any:
                    t = time.perf_counter()
                    await job()
                    latencies.append(time.perf_counter() - t)

                return run

            t0 = time.perf_counter()
            await bounded(conc, [wrap(j) for j in jobs])
            return n / (time.perf_counter() - t0), latencies

        for rep in range(cfg.repeat):
            tag = f"r{rep}{uuid.uuid4().hex[:4]}"
            events = [failed_event(f"w{tag}_{i}") for i in range(n)]

            def post(event: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
                async def go() -> None:
                    body, headers = signed(event)
                    response = await http.post("/webhooks/stripe", content=body, headers=headers)
                    if response.status_code != 200 or response.json()["action"] != "signal_with_start":
                        raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:200]}")

                return go

            runs["webhook"].append(await timed([post(e) for e in events]))

            def start(key: str, describe: bool = False, bare: bool = False) -> Callable[[], Awaitable[Any]]:
                async def go() -> None:
                    if describe:
                        try:
                            await client.get_workflow_handle(contract.workflow_id(f"sub_{key}")).describe()
                        except Exception:  # noqa: BLE001 - not found, as for a new case
                            pass
                    await open_case(client, task_queue, key, policy, bare=bare)

                return go

            runs["describe+start"].append(await timed([start(f"d{tag}_{i}", describe=True) for i in range(n)]))
            runs["start"].append(await timed([start(f"s{tag}_{i}") for i in range(n)]))
            runs["bare"].append(await timed([start(f"b{tag}_{i}", bare=True) for i in range(n)]))
            runs["lookup"].append(
                await timed([functools.partial(lookup.failure_details, f"in_l{tag}_{i}") for i in range(n)])
            )

    # Every accepted webhook is a started case (visibility lags a little behind).
    expected = cfg.repeat * n
    webhook_cases = f"TaskQueue = {contract.quote(task_queue)} AND {contract.CUSTOMER_ID.name} STARTS_WITH 'cus_w'"
    started = await client.count_workflows(webhook_cases)
    if started.count < expected:
        await wait_count(client, webhook_cases, expected, timeout=30)

    ceiling = med([r for r, _ in runs["start"]])
    labels = {
        "webhook": "POST /webhooks/stripe (uvicorn, loopback)",
        "describe+start": "describe + start_workflow (the API's Temporal calls)",
        "start": "start_workflow, same arguments (ceiling)",
        "bare": "start_workflow, bare (no input, no signal)",
        "lookup": "the API's Stripe failure lookup alone (loopback fake)",
    }
    rows, figures = [], {}
    for name, label in labels.items():
        rate = med([r for r, _ in runs[name]])
        p50 = med([pct(lat, 50) for _, lat in runs[name]]) * 1000
        p99 = med([pct(lat, 99) for _, lat in runs[name]]) * 1000
        rows.append([label, rate, p50, p99, rate / ceiling])
        figures[name] = {"per_second": rate, "p50_ms": p50, "p99_ms": p99, "vs_ceiling": rate / ceiling}
    print(f"{n} events per run, {conc} concurrent, median of {cfg.repeat} run(s); no worker polls these cases")
    print(table(["path", "cases/s", "p50 ms", "p99 ms", "ratio"], rows))
    print(f"started cases found in visibility: {expected}/{expected}")
    await lookup.aclose()
    return figures


# --- 2. reaction -----------------------------------------------------------------------


async def bench_reaction(cfg: Config, server: DevServer, api: str, stripe: str, task_queue: str) -> dict[str, Any]:
    section(SECTIONS[1])
    client, k = server.client, cfg.reaction_cases
    tag = uuid.uuid4().hex[:6]
    keys = [f"r{tag}_{i}" for i in range(k)]
    async with httpx.AsyncClient(base_url=api, timeout=30) as http, httpx.AsyncClient(base_url=stripe) as fake:
        # Cases opened by a hard decline: they wait for a new card, no retry is scheduled.
        for key in keys:
            body, headers = signed(failed_event(key, hard=True))
            response = await http.post("/webhooks/stripe", content=body, headers=headers)
            assert response.status_code == 200, response.text
        query = cases_in(task_queue, stage=Stage.AWAITING_PAYMENT_METHOD.value)
        await wait_count(client, query, k, timeout=60 + k)
        await asyncio.sleep(cfg.settle)
        stats_before = (await fake.get("/_bench/stats")).json()

        reactions, acks = [], []
        for key in keys:
            pm = sf.payment_method(f"pm_new_{key}", customer=f"cus_{key}")
            body, headers = signed(sf.event("payment_method.attached", pm, event_id=f"evt_pm_{key}"))
            sent = time.time()
            response = await http.post("/webhooks/stripe", content=body, headers=headers)
            acks.append(time.time() - sent)
            assert response.status_code == 200 and response.json()["cases"], response.text
            deadline = time.monotonic() + 30
            while True:
                arrived = (await fake.get("/_bench/arrivals")).json()["pay"].get(f"in_hard_{key}")
                if arrived:
                    reactions.append(arrived - sent)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no charge reached Stripe for {key}")
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)
        stats_after = (await fake.get("/_bench/stats")).json()
    calls = {name: (stats_after.get(name, 0) - stats_before.get(name, 0)) / k for name in stats_after}
    rows = [
        ["webhook answered (list cases by CustomerId + signal)", pct(acks, 50) * 1000, pct(acks, 99) * 1000],
        ["charge request reached Stripe", pct(reactions, 50) * 1000, pct(reactions, 99) * 1000],
    ]
    print(f"{k} cases, one card update at a time; worker on the Stripe backend; API under uvicorn")
    print(table(["from the signed payment_method.attached POST to", "p50 ms", "p99 ms"], rows))
    print("Stripe calls per card update: " + ", ".join(f"{v:.1f} {n}" for n, v in sorted(calls.items()) if v))
    return {
        "ack_p50_ms": pct(acks, 50) * 1000,
        "ack_p99_ms": pct(acks, 99) * 1000,
        "charge_p50_ms": pct(reactions, 50) * 1000,
        "charge_p99_ms": pct(reactions, 99) * 1000,
        "stripe_calls_per_update": calls,
    }


# --- 3. throughput -----------------------------------------------------------------------


async def run_batch(
    client: Client, jobs: list[Callable[[], Awaitable[WorkflowHandle]]]
) -> tuple[float, float, list[WorkflowHandle]]:
    """Starts every case (64 at a time) and waits for all results: cases/s, the makespan, the cases."""
    t0 = time.perf_counter()
    handles = await bounded(64, jobs)
    await asyncio.gather(*(h.result() for h in handles))
    elapsed = time.perf_counter() - t0
    return len(handles) / elapsed, elapsed, handles


async def bench_throughput(cfg: Config, server: DevServer, task_queue: str) -> tuple[dict[str, Any], HistoryCost]:
    section(SECTIONS[2])
    client, m = server.client, cfg.throughput_cases
    policy = compressed_policy(cfg.time_scale)
    # One case alone: its duration, and its timers and activities, the minimal workflow's plan
    # (--quick takes them from the first batch: it only checks that this runs).
    probe: WorkflowHandle | None = None
    alone = float("nan")
    if not cfg.quick:
        t0 = time.perf_counter()
        probe = await open_case(client, task_queue, f"probe{uuid.uuid4().hex[:6]}", policy)
        final = await probe.result()
        alone = time.perf_counter() - t0
        assert final.outcome is not None and final.outcome.value == "canceled", final.outcome

    plan: list[float | None] = []

    async def minimal(key: str) -> WorkflowHandle:
        return await client.start_workflow(
            "BenchMinimalWorkflow", plan, id=f"minimal-{key}", task_queue=task_queue, result_type=int
        )

    dunning_runs, minimal_runs = [], []
    for rep in range(cfg.repeat):
        tag = f"{rep}{uuid.uuid4().hex[:4]}"
        rate, elapsed, handles = await run_batch(client, cases(client, task_queue, f"t{tag}", m, policy))
        dunning_runs.append((rate, elapsed))
        if not plan:
            cost = await history_cost(probe or handles[0])
            plan.extend(cost.plan)
        rate, elapsed, _ = await run_batch(client, [functools.partial(minimal, f"{tag}_{i}") for i in range(m)])
        minimal_runs.append((rate, elapsed))
    d_rate, m_rate = med([r for r, _ in dunning_runs]), med([r for r, _ in minimal_runs])
    rows = [
        ["DunningWorkflow, compressed policy", d_rate, med([e for _, e in dunning_runs]), 1.0],
        [
            "BenchMinimalWorkflow, same timers and activities",
            m_rate,
            med([e for _, e in minimal_runs]),
            m_rate / d_rate,
        ],
    ]
    print(
        f"{m} cases per batch, median of {cfg.repeat} run(s); one case alone takes {_fmt(alone)} s "
        f"({cost.timers} timers, {cost.activities} activities; sandbox backends, one worker process)"
    )
    print(table(["workflow", "cases/s", "batch s", "vs ours"], rows))
    print(f"ours / minimal = {d_rate / m_rate:.2f}")
    figures = {
        "cases": m,
        "dunning_per_second": d_rate,
        "minimal_per_second": m_rate,
        "ratio": d_rate / m_rate,
        "case_alone_s": alone,
        "timers": cost.timers,
        "activities": cost.activities,
    }
    return figures, cost


# --- 4. cost per case --------------------------------------------------------------------


async def bench_cost(cfg: Config, server: DevServer, task_queue: str) -> dict[str, Any]:
    section(SECTIONS[3])
    client = server.client
    policy = compressed_policy(cfg.time_scale)
    tag = uuid.uuid4().hex[:6]
    handles = [await open_case(client, task_queue, f"c{tag}_{k}", policy, invoices=k) for k in cfg.invoice_counts]
    await asyncio.gather(*(h.result() for h in handles))
    rows, figures = [], {}
    for k, handle in zip(cfg.invoice_counts, handles, strict=True):
        c = await history_cost(handle)
        rows.append(
            [k, c.events, c.workflow_tasks, c.activities, c.timers, c.upserts, c.payload_bytes, c.history_bytes]
        )
        figures[str(k)] = {key: v for key, v in c.__dict__.items() if key != "plan"}
    print("one whole case (retries all declined → suspended → canceled) on the compressed policy")
    print(
        table(["invoices", "events", "wf tasks", "activities", "timers", "SA upserts", "payload B", "history B"], rows)
    )
    return figures


# --- 6. the recovery ledger ---------------------------------------------------------------


async def bench_ledger(cfg: Config, server: DevServer, procs: Procs) -> dict[str, Any]:
    """What the ledger costs a case: its record_case activities in the history, the time one
    write takes, and whole cases per second with the ledger on the worker's SQLite file against
    a worker whose ledger discards every record (same workflow, same history)."""
    section(SECTIONS[5])
    client, m = server.client, cfg.throughput_cases
    policy = compressed_policy(cfg.time_scale)
    tag = uuid.uuid4().hex[:4]
    queues = {mode: f"ledger-{mode}-{tag}" for mode in ("null", "sqlite")}
    await asyncio.gather(*(start_worker(procs, server, q, ledger=mode) for mode, q in queues.items()))
    runs: dict[str, list[tuple[float, float]]] = {mode: [] for mode in queues}
    probe: WorkflowHandle | None = None
    for rep in range(cfg.repeat):
        for mode, queue in queues.items():
            rate, elapsed, handles = await run_batch(client, cases(client, queue, f"l{mode}{rep}{tag}", m, policy))
            runs[mode].append((rate, elapsed))
            probe = probe or handles[0]
    assert probe is not None
    history = await probe.fetch_history()
    record_ids = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == contract.RECORD_CASE.name
    }
    ledger_events = sum(
        1
        for e in history.events
        if e.event_id in record_ids
        or getattr(e, e.WhichOneof("attributes") or "", None) is not None
        and getattr(getattr(e, e.WhichOneof("attributes")), "scheduled_event_id", None) in record_ids
    )
    write_ms = await _ledger_write_ms(200 if not cfg.quick else 20)
    rates = {mode: med([r for r, _ in rs]) for mode, rs in runs.items()}
    print(
        f"{m} whole cases per batch, median of {cfg.repeat} run(s); a case records {len(record_ids)} time(s):"
        f" {ledger_events} of its {len(history.events)} history events"
    )
    print(
        table(
            ["ledger", "cases/s", "batch s"],
            [[mode, rates[mode], med([e for _, e in runs[mode]])] for mode in queues],
        )
    )
    print(f"with / without = {rates['sqlite'] / rates['null']:.2f}; one record written to SQLite: {write_ms:.2f} ms (median)")
    return {
        "records_per_case": len(record_ids),
        "ledger_history_events": ledger_events,
        "history_events": len(history.events),
        "per_second": rates,
        "ratio": rates["sqlite"] / rates["null"],
        "sqlite_write_ms": write_ms,
    }


async def _ledger_write_ms(count: int) -> float:
    """Median time of one record (a case's facts and three milestones) on a fresh SQLite file."""
    import tempfile

    from dunning.ledger import CaseFacts, CaseRecord, LedgerEvent
    from runtime import migrations
    from runtime.database import Database
    from runtime.ledger import DatabaseLedger

    folder = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    database = Database(f"sqlite:///{folder / 'ledger.sqlite3'}")
    migrations.upgrade(database)
    ledger = DatabaseLedger(database)
    now = time_now()
    times = []
    for n in range(count):
        facts = CaseFacts(
            case_id=f"c{n}", workflow_id=f"w{n}", subscription_id=f"s{n}", customer_id=f"cus{n}", policy="default",
            opened_at=now, first_failed_at=now, currency="eur", amount=4900, stage="retrying", seq=1,
        )  # fmt: skip
        events = [LedgerEvent(milestone=m, kind="opened", at=now) for m in ("opened", "failure:in:0", "message:0")]
        t0 = time.perf_counter()
        await ledger.record(CaseRecord(facts=facts, events=events))
        times.append((time.perf_counter() - t0) * 1000)
    database.dispose()
    return med(times)


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# --- 5. open sleeping cases --------------------------------------------------------------


async def bench_sleeping(
    cfg: Config,
    procs: Procs,
    points: list[tuple[int, int, bool]],
    shared: tuple[DevServer, subprocess.Popen, str] | None = None,
) -> list[dict[str, Any]]:
    """A fresh server and worker per point; `shared` (server, worker, its task queue) in --quick."""
    section(SECTIONS[4])
    policy = load_policies()["default"]  # real days: every case sleeps until its first retry
    rows, figures = [], []
    for n, invoices, sandboxed in points:
        warm = 2 if cfg.quick else 20
        if shared:
            server, worker, task_queue = shared
        else:
            server = await start_dev_server(procs)
            task_queue = f"sleep-{n}-{invoices}-{uuid.uuid4().hex[:4]}"
            worker = await start_worker(procs, server, task_queue, max_cached=n + warm + 100, sandboxed=sandboxed)
        client = server.client
        sleeping = (
            cases_in(task_queue, stage=Stage.RETRYING.value) + f" AND {contract.AMOUNT_DUE.name} = {4900 * invoices}"
        )
        tag = uuid.uuid4().hex[:4]

        await bounded(16, cases(client, task_queue, f"warm{tag}", warm, policy, invoices))
        await wait_count(client, sleeping, warm, timeout=60)
        await asyncio.sleep(cfg.settle)
        before = rss_mib(worker.pid)
        server_before = rss_mib(server.proc.pid)
        t0 = time.monotonic()
        handles = await bounded(64, cases(client, task_queue, f"open{tag}", n, policy, invoices))
        done = await wait_count(client, sleeping, warm + n, timeout=120 + n / 10)
        rate = n / (done - t0)
        await asyncio.sleep(2 * cfg.settle)
        after = rss_mib(worker.pid)
        server_after = rss_mib(server.proc.pid)
        cost = await history_cost(handles[0])
        per_case_kib = (after - before) * 1024 / n
        rows.append(
            [
                n,
                invoices,
                "yes" if sandboxed else "no (comparison)",
                rate,
                cost.events,
                cost.payload_bytes,
                before,
                after,
                per_case_kib,
                (server_after - server_before) * 1024 / n,
            ]
        )
        figures.append(
            {
                "cases": n,
                "invoices": invoices,
                "sandboxed": sandboxed,
                "opened_per_second": rate,
                "events_while_sleeping": cost.events,
                "payload_bytes_while_sleeping": cost.payload_bytes,
                "worker_rss_before_mib": before,
                "worker_rss_after_mib": after,
                "worker_kib_per_cached_case": per_case_kib,
                "server_kib_per_case": (server_after - server_before) * 1024 / n,
            }
        )
        note = "" if sandboxed else " (no sandbox)"
        print(f"  {n:,} open cases x {invoices} invoice(s){note}: {per_case_kib:.0f} KiB/case", flush=True)
        if not shared:
            procs.stop(worker)
            procs.stop(server.proc)
    headers = ["open cases", "invoices", "sandbox", "opened/s", "events", "payload B", "worker MiB before", "after"]
    print(table([*headers, "KiB/case", "server KiB/case"], rows))
    print(
        "default policy (cases sleep until the first retry, a day away); worker cache sized to hold every case; "
        "started with signal-with-start, 64 at a time; events and payload are one sleeping case's history so far"
    )
    return figures


# --- main -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        (
            int(line.split()[1]) // 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    version = subprocess.run([binary("temporal"), "--version"], capture_output=True, text=True).stdout.strip()
    import temporalio

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "temporal_cli": version,
        "load_average_at_start": os.getloadavg(),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config(args)
    info = machine()
    print(
        f"dunning benchmark{' (--quick: tiny counts, figures meaningless)' if cfg.quick else ''}\n"
        f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_mib']} MiB; Python {info['python']}, "
        f"temporalio {info['temporalio']}, {info['temporal_cli']}\n"
        f"load average at start: {' '.join(f'{x:.2f}' for x in info['load_average_at_start'])}",
        flush=True,
    )
    procs = Procs()
    results: dict[str, Any] = {"machine": info, "quick": cfg.quick}
    started = time.monotonic()
    try:
        tag = uuid.uuid4().hex[:4]
        q_ingest, q_react, q_cases = f"ingest-{tag}", f"react-{tag}", f"cases-{tag}"
        server, (stripe_proc, stripe) = await asyncio.gather(start_dev_server(procs), start_fake_stripe(procs))
        api_ingest, api_react, _, cases_worker = await asyncio.gather(
            start_api(procs, server, stripe, q_ingest),
            start_api(procs, server, stripe, q_react),
            start_worker(procs, server, q_react, payments="stripe", stripe_base=stripe),
            start_worker(procs, server, q_cases),
        )
        print(f"(processes up in {time.monotonic() - started:.1f} s; logs in {procs.logs})")

        async def timed(coro: Awaitable[Any]) -> Any:
            t = time.monotonic()
            result = await coro
            print(f"(section took {time.monotonic() - t:.1f} s)", flush=True)
            return result

        only = args.only or {1, 2, 3, 4, 5, 6}
        if 1 in only:
            results["ingestion"] = await timed(bench_ingestion(cfg, server, api_ingest, stripe, q_ingest))
        if 2 in only:
            results["reaction"] = await timed(bench_reaction(cfg, server, api_react, stripe, q_react))
        if 3 in only:
            results["throughput"], _ = await timed(bench_throughput(cfg, server, q_cases))
        if 4 in only:
            results["cost"] = await timed(bench_cost(cfg, server, q_cases))
        # Memory is measured on a fresh server and worker per point (the shared ones in --quick);
        # the shared server, busy with thousands of cases left by the sections above, stops first.
        shared = (server, cases_worker, q_cases) if cfg.quick else None
        if not cfg.quick:
            for proc in [p for p in procs.procs if p is not stripe_proc]:
                procs.stop(proc)
        if 6 in only:
            if not cfg.quick:  # the sections above stopped the shared server: a fresh one
                server = await start_dev_server(procs)
            results["ledger"] = await timed(bench_ledger(cfg, server, procs))
        if 5 in only:
            results["sleeping"] = await timed(bench_sleeping(cfg, procs, cfg.sleeping_points, shared))
    finally:
        procs.stop_all()
    results["load_average_at_end"] = os.getloadavg()
    results["seconds"] = time.monotonic() - started
    print(
        f"\ndone in {results['seconds']:.0f} s; load average at end: "
        f"{' '.join(f'{x:.2f}' for x in results['load_average_at_end'])}"
    )
    return results


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="tiny counts: checks the script runs (figures meaningless)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of the rate sections; medians are printed")
    parser.add_argument("--with-50k", action="store_true", help="also 50,000 open sleeping cases (slow here)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument(
        "--only",
        type=lambda text: {int(n) for n in text.split(",")},
        help="run only these sections, e.g. --only 1,2 (default: all six)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    figures = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2, default=str))
