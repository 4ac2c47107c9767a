"""`dunning demo`: a population of failing subscriptions, played through the real webhook endpoint.

Each subscription fails its renewal (`invoice.payment_failed`, signed like Stripe signs it and
POSTed to the running API), then its customer behaves like people do:

| persona          | card on file (sandbox test card)           | what the customer does                      |
|------------------|--------------------------------------------|---------------------------------------------|
| retry works      | pm_card_visa (soft decline this time)      | nothing; the scheduled retry succeeds        |
| pays after nudge | pm_card_chargeDeclinedInsufficientFunds    | pays on the invoice page after the reminder  |
| new card         | pm_card_chargeDeclinedExpiredCard (hard)   | adds a working card (`payment_method.attached`) |
| needs 3-D Secure | pm_card_authenticationRequired             | confirms the payment later (`invoice.paid`)  |
| asks for time    | pm_card_chargeDeclinedInsufficientFunds    | asks support: operator extends grace; pays later |
| cancels          | pm_card_chargeDeclinedInsufficientFunds    | cancels the subscription                     |
| silent (hard)    | pm_card_chargeDeclinedExpiredCard          | never answers: final notice, suspension, cancel |
| silent (soft)    | pm_card_chargeDeclinedInsufficientFunds    | never answers; every retry declines          |

The subscriptions carry `dunning_policy = "demo"` (dunning/policies/demo.toml: the whole ladder in
minutes). The demo stops by itself when every case has an outcome or after `--duration`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from dunning import contract
from dunning.models import Stage
from starter.cli import operator as ops
from starter.cli import stripe_events as se
from starter.cli.render import money, stage_style

SOFT = "pm_card_chargeDeclinedInsufficientFunds"
HARD = "pm_card_chargeDeclinedExpiredCard"
AUTH = "pm_card_authenticationRequired"
GOOD = "pm_card_visa"

#: Temporal answers that mean "not now" (the server restarting): wait and look again.
TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)


@dataclass(frozen=True)
class Persona:
    name: str
    card: str
    decline_code: str | None
    # (seconds after the failure, action): paid | new_card | cancel | extend_grace
    script: tuple[tuple[float, str], ...] = ()


PERSONAS = (
    Persona("retry works", GOOD, "insufficient_funds"),
    Persona("pays after nudge", SOFT, None, ((80, "paid"),)),
    Persona("new card", HARD, None, ((45, "new_card"),)),
    Persona("needs 3-D Secure", AUTH, None, ((100, "paid"),)),
    Persona("asks for time", SOFT, None, ((40, "extend_grace"), (210, "paid"))),
    Persona("cancels", SOFT, None, ((55, "cancel"),)),
    Persona("silent (hard)", HARD, None),
    Persona("silent (soft)", SOFT, None),
)

AMOUNTS = (1900, 2900, 4900, 9900, 19900, 29900)


@dataclass
class DemoConfig:
    api_url: str
    secret: str
    customers: int = 14
    duration: float = 540.0
    speed: float = 1.0
    policy: str = "demo"
    live: bool = True
    seed: int | None = None
    spread: float = 15.0  # seconds over which the first failures arrive
    # How long Temporal or the API may be away (a stack restarting under the demo) before it gives up.
    outage_tolerance: float = 120.0


@dataclass
class DemoCase:
    persona: Persona
    customer_id: str
    subscription_id: str
    invoice_id: str
    amount: int
    currency: str
    stage: str = "pending"
    running: bool = True
    last: str = "waiting"


@dataclass(order=True)
class Step:
    at: float
    index: int
    action: str = field(compare=False)
    case: DemoCase = field(compare=False)


@dataclass
class DemoRun:
    config: DemoConfig
    client: Client
    console: Console
    http: httpx.AsyncClient
    cases: list[DemoCase] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    sent: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    #: When Temporal stopped answering (monotonic seconds), while it doesn't; how often it came back.
    outage_since: float | None = None
    outages: int = 0

    def _unavailable(self, what: str) -> None:
        """Temporal (or the API) is away: keep going until `outage_tolerance`, then give up in one line."""
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
            self.outages += 1
        elif now - self.outage_since > self.config.outage_tolerance:
            raise ops.Rejected(
                f"Temporal has been unavailable for {now - self.outage_since:.0f}s ({what}); giving up. "
                "Is `dunning up` running?"
            )

    def backoff(self) -> float:
        """Seconds until the next look: 1 normally, growing to 10 while Temporal is away."""
        if self.outage_since is None:
            return 1.0
        return min(10.0, 1.0 + (time.monotonic() - self.outage_since) / 4)

    # --- population ----------------------------------------------------------------------

    def populate(self) -> None:
        rng = random.Random(self.config.seed)
        tag = secrets.token_hex(3) if self.config.seed is None else f"{self.config.seed:06x}"[-6:]
        for i in range(self.config.customers):
            persona = PERSONAS[i % len(PERSONAS)]
            case = DemoCase(
                persona=persona,
                customer_id=f"cus_demo{tag}{i:03d}",
                subscription_id=f"sub_demo{tag}{i:03d}",
                invoice_id=f"in_demo{tag}{i:03d}",
                amount=rng.choice(AMOUNTS),
                currency=rng.choice(("usd", "usd", "usd", "eur", "gbp")),
            )
            self.cases.append(case)
            start = rng.uniform(0, self.config.spread / self.config.speed) if i else 0.0
            self.steps.append(Step(start, len(self.steps), "failed", case))
            for delay, action in persona.script:
                jitter = rng.uniform(0.85, 1.15)
                self.steps.append(Step(start + delay * jitter / self.config.speed, len(self.steps), action, case))
        self.steps.sort()

    # --- traffic -------------------------------------------------------------------------

    async def post(self, event: dict) -> None:
        body = se.encode(event)
        give_up = time.monotonic() + self.config.outage_tolerance
        attempt = 0
        while True:
            headers = {"Stripe-Signature": se.sign(body, self.config.secret), "Content-Type": "application/json"}
            try:
                response = await self.http.post(f"{self.config.api_url}/webhooks/stripe", content=body, headers=headers)
            except httpx.HTTPError as err:
                problem = f"{event['type']}: {err.__class__.__name__}"
            else:
                if response.is_success:
                    self.sent[event["type"]] += 1
                    return
                problem = f"{event['type']}: HTTP {response.status_code} {response.text[:200]}"
                if response.status_code < 500:
                    break  # a 4xx will not change on retry (bad secret, bad body)
            if time.monotonic() > give_up:
                break
            # Like Stripe, retry what failed on our side, long enough for the stack to restart.
            await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
            attempt += 1
        self.errors.append(problem)

    async def act(self, step: Step) -> None:
        c = step.case
        if step.action == "failed":
            invoice = se.invoice(
                invoice_id=c.invoice_id,
                customer_id=c.customer_id,
                subscription_id=c.subscription_id,
                amount_due=c.amount,
                currency=c.currency,
                payment_method_id=c.persona.card,
                decline_code=c.persona.decline_code,
                policy=self.config.policy,
            )
            await self.post(se.event("invoice.payment_failed", invoice))
            c.last = "payment failed"
        elif step.action == "paid":
            invoice = se.invoice(
                invoice_id=c.invoice_id,
                customer_id=c.customer_id,
                subscription_id=c.subscription_id,
                amount_due=c.amount,
                currency=c.currency,
                status="paid",
                payment_method_id=GOOD,
                policy=self.config.policy,
            )
            await self.post(se.event("invoice.paid", invoice))
            c.last = "paid on the invoice page"
        elif step.action == "new_card":
            await self.post(
                se.event(
                    "payment_method.attached", se.payment_method(payment_method_id=GOOD, customer_id=c.customer_id)
                )
            )
            c.last = "added a new card"
        elif step.action == "cancel":
            await self.post(
                se.event(
                    "customer.subscription.deleted",
                    se.subscription(
                        subscription_id=c.subscription_id, customer_id=c.customer_id, policy=self.config.policy
                    ),
                )
            )
            c.last = "canceled the subscription"
        elif step.action == "extend_grace":
            try:
                await ops.extend_grace(self.client, c.subscription_id, 1, "customer asked for more time (demo)")
                self.sent["extend_grace signal"] += 1
                c.last = "asked for time: grace +1 day"
            except (ops.CaseNotFound, ops.Rejected, ops.Ignored) as err:
                self.errors.append(f"extend_grace {c.subscription_id}: {err}")

    # --- watching ------------------------------------------------------------------------

    async def refresh(self, case: DemoCase) -> None:
        handle = self.client.get_workflow_handle(contract.workflow_id(case.subscription_id))
        try:
            desc = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return
            if err.status in TRANSIENT:
                self._unavailable(f"{err.status.name}: {err.message}")
                return
            raise
        self.outage_since = None
        case.running = desc.status == WorkflowExecutionStatus.RUNNING
        stage = desc.typed_search_attributes.get(contract.DUNNING_STAGE)
        if stage:
            case.stage = stage
        elif not case.running:
            case.stage = desc.status.name.lower() if desc.status else "closed"

    def finished(self) -> bool:
        return all(not c.running and c.stage != "pending" for c in self.cases) and not self.steps

    def counts(self) -> Counter:
        return Counter(c.stage for c in self.cases)

    def view(self, elapsed: float) -> Group:
        counts = self.counts()
        title = Text(
            f"dunning demo · {elapsed:.0f}s · {len(self.cases)} subscriptions · policy {self.config.policy}",
            style="bold",
        )
        summary = Table()
        order = ["pending", *(s.value for s in Stage)]
        for stage in order:
            if counts.get(stage):
                summary.add_column(stage, justify="right", style=stage_style(stage, "dim"))
        summary.add_row(*(str(counts[s]) for s in order if counts.get(s)))
        detail = Table(show_edge=False, box=None, pad_edge=False)
        for column in ("subscription", "persona", "owed", "stage", "last customer action"):
            detail.add_column(column, no_wrap=column == "subscription")
        for c in self.cases:
            detail.add_row(
                c.subscription_id,
                c.persona.name,
                money(c.amount, c.currency),
                Text(c.stage, style=stage_style(c.stage, "dim")),
                c.last,
            )
        sent = ", ".join(f"{k} ×{v}" for k, v in sorted(self.sent.items())) or "nothing yet"
        footer = Text(f"sent: {sent}", style="dim")
        if self.outage_since is not None:
            away = time.monotonic() - self.outage_since
            footer.append(f"\nTemporal unavailable for {away:.0f}s: waiting for it to come back", style="yellow")
        if self.errors:
            footer.append(f"\nproblems: {len(self.errors)}; last: {self.errors[-1]}", style="red")
        return Group(title, summary, detail, footer)

    async def run(self) -> int:
        cfg = self.config
        try:
            health = await self.http.get(f"{cfg.api_url}/healthz", timeout=5)
        except httpx.HTTPError as err:
            raise ops.Rejected(
                f"the API is not reachable at {cfg.api_url} ({err}); start it with `dunning up`"
            ) from err
        if not health.is_success:
            raise ops.Rejected(
                f"the API at {cfg.api_url} is not healthy: HTTP {health.status_code} {health.text[:200]}"
            )
        self.populate()
        started = time.monotonic()
        use_live = cfg.live and self.console.is_terminal
        last_line = ""
        last_print = 0.0

        async def tick() -> None:
            nonlocal last_line, last_print
            elapsed = time.monotonic() - started
            due = []
            while self.steps and self.steps[0].at <= elapsed:
                due.append(self.steps.pop(0))
            if due:
                await asyncio.gather(*(self.act(step) for step in due))
            await asyncio.gather(*(self.refresh(c) for c in self.cases if c.running or c.stage == "pending"))
            if live_view is not None:
                live_view.update(self.view(elapsed))
            else:
                line = " · ".join(f"{k} {v}" for k, v in sorted(self.counts().items()))
                if self.outage_since is not None:
                    line += " · Temporal unavailable, waiting"
                if line != last_line or elapsed - last_print > 30:
                    self.console.print(f"[{elapsed:5.0f}s] {line}")
                    last_line, last_print = line, elapsed

        live_view: Live | None = None
        if use_live:
            live_view = Live(self.view(0), console=self.console, refresh_per_second=4)
            live_view.start()
        try:
            while time.monotonic() - started < cfg.duration:
                await tick()
                if self.finished():
                    break
                await asyncio.sleep(self.backoff())
            await asyncio.gather(*(self.refresh(c) for c in self.cases))
        finally:
            if live_view is not None:
                live_view.update(self.view(time.monotonic() - started))
                live_view.stop()
        elapsed = time.monotonic() - started
        if not use_live:
            self.console.print(self.view(elapsed))
        done = sum(1 for c in self.cases if not c.running)
        self.console.print(
            f"{'all' if self.finished() else done} of {len(self.cases)} cases closed after {elapsed:.0f}s. "
            f"See them in the Temporal UI, or `dunning list` / `dunning show {self.cases[0].subscription_id}`."
        )
        if self.outages:
            self.console.print(f"Temporal was unavailable {self.outages} time(s) during the demo; the demo waited.")
        if self.errors:
            self.console.print(f"[red]{len(self.errors)} problem(s):[/red]")
            for problem in self.errors[:20]:
                self.console.print(f"  {problem}")
            return 1
        return 0


async def run_demo(client: Client, config: DemoConfig, console: Console) -> int:
    async with httpx.AsyncClient(timeout=15) as http:
        return await DemoRun(config, client, console, http).run()
