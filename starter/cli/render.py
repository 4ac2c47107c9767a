"""How the CLI and the demo show cases: Rich tables and panels, amounts, times, stage colours.

Its own module so that the commands and the demo share one look without importing each other.
Functions return renderables; the caller decides where they are printed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dunning import contract
from dunning.models import CaseStatus, ChargeResult, RetryNowResult, Stage
from dunning.money import format_money
from dunning.experiment_report import ExperimentReport
from dunning.reports import RecoveryReport
from starter.cli.operator import CaseRow

STAGE_STYLE = {
    Stage.RETRYING: "yellow",
    Stage.AWAITING_PAYMENT_METHOD: "dark_orange",
    Stage.FINAL_NOTICE: "red",
    Stage.SUSPENDED: "bold red",
    Stage.PAUSED: "blue",
    Stage.RECOVERED: "bold green",
    Stage.CANCELED: "dim red",
    Stage.WRITTEN_OFF: "dim red",
    Stage.CLOSED_BY_CUSTOMER: "dim",
}


def stage_style(stage: str, default: str = "") -> str:
    """The colour of a stage; `default` for what is not one (the demo's `pending`, a closed status)."""
    try:
        return STAGE_STYLE[Stage(stage)]
    except ValueError:
        return default


def style_stage(stage: str | None) -> Text:
    if not stage:
        return Text("—", style="dim")
    return Text(stage, style=stage_style(stage))


def money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "—"
    if not currency:
        return str(amount)
    try:
        return format_money(amount, currency, locale="en_US")
    except Exception:  # a currency Babel doesn't know: still show something exact
        return f"{amount} {currency.upper()} (minor units)"


def when(at: datetime | None, now: datetime | None = None, short: bool = False) -> str:
    """`2026-11-21 07:12:03 UTC (in 3m 20s)`; short: `in 3m 20s (07:12)`."""
    if at is None:
        return "—"
    now = now or datetime.now(UTC)
    seconds = int((at - now).total_seconds())
    span = abs(seconds)
    if span < 60:
        rel = f"{span}s"
    elif span < 3600:
        rel = f"{span // 60}m {span % 60:02d}s"
    elif span < 86400:
        rel = f"{span // 3600}h {span % 3600 // 60:02d}m"
    else:
        rel = f"{span // 86400}d {span % 86400 // 3600}h"
    rel = f"in {rel}" if seconds >= 0 else f"{rel} ago"
    if short:
        return f"{rel} ({at.astimezone(UTC):%H:%M})" if span < 86400 else f"{rel} ({at.astimezone(UTC):%m-%d})"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({rel})"


def _short(at: datetime) -> str:
    return f"{at.astimezone(UTC):%m-%d %H:%M:%S}"


def _decline(result: ChargeResult) -> str:
    return ", ".join(x for x in (result.decline_code or result.code, result.category and result.category.value) if x)


#: `dunning list`'s columns, most important first: the narrower the terminal, the more of the
#: last ones are left out (never squeezed to nothing; `--json` has every field).
CASE_COLUMNS = ("case", "stage", "owed", "next action", "customer", "tries", "decline", "status")


def _next(at: datetime | None, compact: bool) -> str:
    if at is None:
        return "—"
    shown = when(at, short=True)
    return shown.split(" (")[0] if compact else shown  # `in 2h 59m`, without the clock


def _owed(row: CaseRow) -> str | Text:
    """What is owed, or for a recovered case what came back (its AmountDue is 0 by then)."""
    if row.stage == Stage.RECOVERED.value:
        amount = f" {money(row.recovered_amount, row.currency)}" if row.recovered_amount is not None else ""
        return Text(f"recovered{amount}", style="green")
    return money(row.amount_due, row.currency)


def _case_cells(row: CaseRow, compact: bool) -> dict[str, str | Text]:
    case = (row.subscription_id or contract.subscription_of(row.workflow_id)) if compact else row.workflow_id
    return {
        "case": case,
        "customer": row.customer_id or "—",
        "stage": style_stage(row.stage),
        "owed": _owed(row),
        "decline": row.decline_category or "—",
        "tries": str(row.retry_attempts or 0),
        "next action": _next(row.next_action_at, compact),
        "status": row.status.lower(),
    }


def _table(rows: list[CaseRow], query: str, columns: tuple[str, ...], compact: bool, hidden: list[str]) -> Table:
    caption = query if not hidden else f"{query}\nnot shown at this width: {', '.join(hidden)} (see --json)"
    table = Table(
        title=f"{len(rows)} case(s)",
        caption=caption,
        caption_style="dim",
        expand=False,
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        pad_edge=not compact,
        show_edge=not compact,
        collapse_padding=compact,
    )
    for column in columns:
        table.add_column("subscription" if compact and column == "case" else column, no_wrap=True)
    for row in rows:
        cells = _case_cells(row, compact)
        table.add_row(*(cells[c] for c in columns))
    return table


def cases_table(rows: list[CaseRow], query: str, width: int | None = None) -> Table:
    """`dunning list`: one line per case, with the visibility query it answers as the caption.

    Fits `width` (the terminal's): no column is squeezed; when all of them don't fit, the case is
    named by its subscription id, borders thin out, and the least useful columns are left out
    (the caption says which)."""
    width = width or 200
    measure = Console(width=10_000)

    def fits(table: Table) -> bool:
        return measure.measure(table).maximum <= width

    full = _table(rows, query, CASE_COLUMNS, compact=False, hidden=[])
    if fits(full):
        return full
    columns = list(CASE_COLUMNS)
    while len(columns) > 2:
        hidden = [c for c in CASE_COLUMNS if c not in columns]
        table = _table(rows, query, tuple(columns), compact=True, hidden=hidden)
        if fits(table):
            return table
        columns.pop()
    return _table(rows, query, tuple(columns), compact=True, hidden=[c for c in CASE_COLUMNS if c not in columns])


def render_case(case: CaseStatus, now: datetime | None = None) -> Group:
    """The `status` query as a timeline an operator reads top to bottom."""
    now = now or datetime.now(UTC)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("Stage", style_stage(case.stage.value))
    head.add_row("Customer", case.customer_id)
    head.add_row("Subscription", case.subscription_id)
    head.add_row("Policy", case.policy)
    paid = sum(i.amount_due for i in case.invoices if i.status == "paid")
    if case.outcome is Stage.RECOVERED:
        head.add_row("Recovered", Text(money(paid, case.currency), style="bold green"))
    else:
        head.add_row("Owed", money(case.amount_due, case.currency))
        if paid:
            head.add_row("Paid so far", money(paid, case.currency))
    head.add_row("Access", case.access.value)
    head.add_row("Opened", when(case.opened_at, now))
    if case.decline_category:
        head.add_row("Decline", case.decline_category.value)
    if case.grace_ends_at:
        head.add_row("Grace ends", when(case.grace_ends_at, now))
    if case.paused:
        head.add_row("Paused", Text(case.pause_reason or "yes", style="blue"))
    if case.outcome:
        head.add_row("Outcome", style_stage(case.outcome.value))
    nxt = (
        Text(f"{case.next_action}  {when(case.next_action_at, now)}", style="bold")
        if case.next_action
        else Text("nothing scheduled", style="dim")
    )
    head.add_row("Next", nxt)
    parts: list[Panel | Table] = [Panel(head, title=case.case_id, border_style=STAGE_STYLE.get(case.stage, "white"))]

    invoices = Table(title="Outstanding invoices", title_justify="left", expand=False)
    for column in ("invoice", "amount", "failed", "attempts", "status"):
        invoices.add_column(column)
    for inv in case.outstanding_invoices:
        invoices.add_row(
            inv.invoice_id, money(inv.amount_due, inv.currency), _short(inv.failed_at), str(inv.attempts), inv.status
        )
    if not case.outstanding_invoices:
        invoices.add_row(Text("none", style="dim"), "", "", "", "")
    parts.append(invoices)

    attempts = Table(title="Charge attempts", title_justify="left", expand=False)
    for column in ("at", "invoice", "#", "trigger", "result"):
        attempts.add_column(column)
    for a in case.attempts:
        r = a.result
        if r.status == "succeeded":
            result = Text("succeeded", style="green")
        elif r.status == "declined":
            result = Text(f"declined ({_decline(r)})", style="red")
        else:
            result = Text(r.status.replace("_", " "), style="yellow")
        attempts.add_row(_short(a.at), a.invoice_id, str(a.attempt), a.trigger, result)
    if not case.attempts:
        attempts.add_row(Text("none yet", style="dim"), "", "", "", "")
    parts.append(attempts)

    notes = Table(title="Notifications", title_justify="left", expand=False)
    for column in ("at", "step", "template", "channel", "status"):
        notes.add_column(column)
    for n in case.notifications:
        status = n.status + (f" ({n.reason})" if n.reason else "")
        style = "green" if n.status == "sent" else "yellow" if n.status in ("skipped", "deferred") else "red"
        notes.add_row(_short(n.at), n.step, n.template, n.channel.value, Text(status, style=style))
    if not case.notifications:
        notes.add_row(Text("none yet", style="dim"), "", "", "", "")
    parts.append(notes)

    timeline = Table(title="Timeline", title_justify="left", expand=False)
    timeline.add_column("at")
    timeline.add_column("event", style="bold")
    timeline.add_column("detail")
    for entry in case.timeline:
        timeline.add_row(_short(entry.at), entry.event, entry.detail)
    parts.append(timeline)
    return Group(*parts)


def retry_result_table(result: RetryNowResult, stage: str | None = None) -> Table:
    """`dunning retry-now`: what each outstanding invoice's charge gave, and the stage the case is
    in afterwards (`stage`, once it settled; the update's own answer otherwise)."""
    table = Table(title=f"retry now → stage {stage or result.stage.value}", title_justify="left")
    for column in ("invoice", "result", "decline"):
        table.add_column(column)
    for r in result.results:
        style = "green" if r.status == "succeeded" else "red" if r.status == "declined" else "yellow"
        table.add_row(r.invoice_id, Text(r.status, style=style), _decline(r) or "—")
    return table


# --- the recovery report ------------------------------------------------------------------------


def _amounts(amounts: dict[str, int]) -> str:
    return ", ".join(money(a, c) for c, a in amounts.items()) or "—"


def _rate(value: float) -> str:
    return f"{value * 100:.1f}%"


def report_tables(report: RecoveryReport, period: str) -> Group:
    """`dunning report`: the cohort's figures, then one line per group."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("Cases opened", str(report.cases))
    head.add_row("Closed / still open", f"{report.closed} / {report.open_cases}")
    head.add_row("Recovered", f"{report.recovered} ({_rate(report.recovery_rate)} of all cases opened)")
    for currency, amount in report.recovered_amount.items():
        share = report.amount_recovery_rate.get(currency, 0.0)
        head.add_row(f"Recovered {currency.upper()}", f"{money(amount, currency)} ({_rate(share)} of {money(report.opened_amount.get(currency, 0), currency)})")
    hours = report.median_hours_to_recover
    p90 = report.p90_hours_to_recover
    head.add_row("Time to recover", f"median {hours if hours is not None else '—'} h, p90 {p90 if p90 is not None else '—'} h")
    head.add_row("Canceled (involuntary churn)", str(report.involuntary_churn))
    head.add_row("Closed by the customer", str(report.closed_by_customer))
    if report.feedback:
        head.add_row("Why they left", ", ".join(f"{reason} {n}" for reason, n in report.feedback.items()))
    title = f"Recovery: cases opened {period}"
    if report.simulated_cases:
        title += f" — SIMULATED: {report.simulated_cases} of {report.cases} cases"
        head.add_row("[bold yellow]SIMULATED[/]", f"{report.simulated_cases} case(s) from `dunning simulate`, not from customers")
    parts: list[Panel | Table] = [Panel(head, title=title, border_style="yellow" if report.simulated_cases else "green")]
    if report.by:
        table = Table(title=f"by {report.by}", title_justify="left")
        for column in ("key", "cases", "closed", "recovered", "rate", "recovered amount"):
            table.add_column(column, justify="right" if column in ("cases", "closed", "recovered", "rate") else "left")
        for g in report.groups:
            table.add_row(g.key, str(g.cases), str(g.closed), str(g.recovered), _rate(g.recovery_rate), _amounts(g.recovered_amount))
        parts.append(table)
    return Group(*parts)


REPORT_CSV_COLUMNS = ("key", "cases", "closed", "recovered", "recovery_rate", "currency", "recovered_amount")


def report_csv_rows(report: RecoveryReport) -> list[list[object]]:
    """One row per group and currency (amounts are never summed across currencies); the whole
    cohort is the row keyed `all`."""
    rows: list[list[object]] = []
    for key, figures in [("all", report), *((g.key, g) for g in report.groups)]:
        amounts = figures.recovered_amount or {"": 0}
        for currency, amount in amounts.items():
            rows.append([key, figures.cases, figures.closed, figures.recovered, figures.recovery_rate, currency, amount])
    return rows


VERDICT_TEXT = {
    "too_early": "too early: the planned sample is not complete and settled yet",
    "no_difference": "no difference found at the planned sample",
    "better": "better: the best arm beats the control",
    "worse": "worse: the best arm falls short of the control",
}


def _interval(pair: tuple[float, float] | None, points: bool = False) -> str:
    if pair is None:
        return "—"
    lo, hi = pair
    return f"{lo * 100:+.1f} – {hi * 100:+.1f} pt" if points else f"{lo * 100:.1f} – {hi * 100:.1f} %"


def experiment_table(report: ExperimentReport) -> Group:
    """`dunning experiments report`: one line per arm, the control first, then the verdict."""
    title = f"Experiment {report.name} (on {report.applies_to}; control {report.control})"
    if report.simulated:
        title += " — SIMULATED cases"
    table = Table(title=title, title_justify="left")
    for column in ("arm", "weight", "cases", "closed", "recovered", "rate", "95 % CI", "lift vs control", "lift 95 % CI", "by amount"):
        table.add_column(column, justify="left" if column in ("arm", "by amount") else "right")
    for arm in report.arms:
        lift = "control" if arm.lift_vs_control is None and arm.arm == report.control else (
            f"{arm.lift_vs_control * 100:+.1f} pt" if arm.lift_vs_control is not None else "—"
        )
        table.add_row(
            arm.arm,
            str(arm.weight),
            str(arm.cases),
            str(arm.closed),
            str(arm.recovered),
            _rate(arm.recovery_rate),
            _interval(arm.ci95),
            lift,
            _interval(arm.lift_ci95, points=True),
            ", ".join(f"{c.upper()} {_rate(r)}" for c, r in arm.amount_recovery_rate.items()) or "—",
        )
    foot = Table.grid(padding=(0, 2))
    foot.add_column(style="bold")
    foot.add_column()
    settled = ", ".join(f"{arm} {n}/{report.planned_per_arm}" for arm, n in report.settled_in_plan.items())
    foot.add_row("Planned sample", f"{report.planned_per_arm} cases per arm (settled so far: {settled})")
    ratio = "—" if report.sample_ratio_p is None else f"{report.sample_ratio_p:.4f}"
    if report.sample_ratio_mismatch:
        ratio += "  [bold red]MISMATCH: arms are not split as weighted; do not trust the comparison[/]"
    foot.add_row("Sample ratio p", ratio)
    foot.add_row("Verdict", f"[bold]{report.verdict}[/] — {VERDICT_TEXT[report.verdict]}")
    return Group(table, foot)
