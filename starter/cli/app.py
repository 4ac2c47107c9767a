"""`dunning`: run the service and steer its cases.

    dunning up                      Temporal dev server + UI, worker and API on this machine
    dunning worker | api            one process of the service
    dunning list  [--stage S] [--customer C] [--min-amount N] [--open]
    dunning show  CASE_OR_SUBSCRIPTION
    dunning pause CASE --reason R   |  dunning resume CASE
    dunning extend-grace CASE --days N --reason R
    dunning retry-now CASE          (exit 1 when the case refuses)
    dunning reconcile [--apply]     open the cases Stripe's webhooks never told us about
    dunning db upgrade | prune      migrate the service's database (`DUNNING_DATABASE_URL`); apply retention
    dunning report [--since D] [--until D] [--by G] [--json|--csv]   how much came back
    dunning setup-temporal          register the contract's search attributes (the deploy's one-shot job)
    dunning customer export|forget CUSTOMER_ID   a customer's data in the database, as JSON / erased
    dunning demo                    realistic signed webhook traffic through the running API
    dunning demo --simulated-month  a simulated month of cases in the database, for the dashboard
    dunning simulate POPULATION.toml [--policy P | --experiment E] [--cases N] [--seed S] [--json]
                                    synthetic cases through the real workflow, in virtual time

Commands that talk to Temporal connect with its own conventions (`TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS variables, profiles); `localhost:7233` by default.

Exit codes: 0 done, 1 error (refused / not found / unreachable / misconfigured; one line on
stderr, never a traceback), 2 bad usage, 3 ignored (the case would not act on the signal: already
paused, not paused, closing; nothing was sent).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from temporalio.client import Client
from temporalio.service import RPCError

from dunning import contract
from dunning.models import Stage
from starter.cli import operator as ops
from starter.cli import render

if TYPE_CHECKING:
    from dunning.simulation import Population
    from runtime.database import Database
    from runtime.settings import Settings

app = typer.Typer(
    name="dunning",
    help="Dunning on Temporal: run the service, watch and steer dunning cases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_IGNORED = 3


class Failure(Exception):
    """A command failed in a way the operator should read, not a traceback."""


# --- plumbing -------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _say(label: str, message: object, code: int) -> NoReturn:
    """One line on stderr (never wrapped, whatever the terminal's width), then exit `code`."""
    err_console.print(f"{label} {escape(_one_line(message))}", soft_wrap=True, emoji=False, highlight=False)
    raise typer.Exit(code)


def _fail(message: object, label: str = "[red]error:[/red]") -> NoReturn:
    _say(label, message, EXIT_ERROR)


def operator_errors() -> tuple[type[BaseException], ...]:
    """What the operator must fix, not a bug: bad settings, keys, policies, an unreachable or
    unreadable Temporal. Each ends a command in one line and exit 1 (see `main`)."""
    from pydantic import ValidationError

    from dunning.policy import PolicyError
    from runtime.codec import DecryptionError, EncryptionConfigError
    from runtime.database import DatabaseUnavailable
    from runtime.settings import ConfigError
    from runtime.temporal import TemporalUnreachable

    return (
        ConfigError,
        EncryptionConfigError,
        DecryptionError,
        PolicyError,
        TemporalUnreachable,
        DatabaseUnavailable,
        ValidationError,
    )


def _describe(err: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(err, ValidationError):  # the environment's settings: name the variable and why
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"]).upper()
        return f"{where}: {first['msg']}" + (f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else "")
    from runtime.codec import DecryptionError

    if isinstance(err, DecryptionError):
        return f"cannot read the case: {err}"
    return str(err)


async def _client() -> Client:
    from runtime.temporal import TemporalUnreachable, connect

    try:
        return await connect()
    except TemporalUnreachable as err:
        raise Failure(f"{err}. Is `dunning up` running?") from err


def _run(work: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, do the work, and turn known failures into one line and exit code 1 (3: ignored)."""

    async def go() -> T:
        return await work(await _client())

    try:
        return asyncio.run(go())
    except ops.Ignored as err:
        _say("[yellow]ignored:[/yellow]", err, EXIT_IGNORED)
    except ops.CaseNotFound as err:
        _fail(err, "[red]not found:[/red]")
    except ops.Rejected as err:
        _fail(err, "[red]refused:[/red]")
    except Failure as err:
        _fail(err)
    except RPCError as err:
        _fail(f"{err.status.name if err.status else ''} {err.message}", "[red]Temporal said no:[/red]")
    except operator_errors() as err:
        _fail(_describe(err))


# --- running the service ----------------------------------------------------------------


@app.command()
def up(
    state_dir: Annotated[
        Path, typer.Option(envvar="DUNNING_STATE_DIR", help="Where the dev server keeps its db file and logs.")
    ] = Path(".dunning"),
    host: Annotated[str, typer.Option(help="Address every local process binds to.")] = "127.0.0.1",
    temporal_port: Annotated[int, typer.Option(help="Temporal gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    api_port: Annotated[int, typer.Option(help="HTTP API port.")] = 8000,
    namespace: Annotated[str, typer.Option(help="Temporal namespace.")] = "default",
    ui: Annotated[bool, typer.Option("--ui/--headless", help="Serve the Temporal Web UI.")] = True,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for each part.")] = 60.0,
) -> None:
    """Run everything locally: Temporal dev server + UI, the worker and the API (sandbox providers)."""
    from starter.cli.devstack import DevStack, StackConfig, StackError

    try:
        stack = DevStack(
            StackConfig(
                state_dir=state_dir,
                host=host,
                temporal_port=temporal_port,
                ui_port=ui_port,
                api_port=api_port,
                namespace=namespace,
                ui=ui,
                startup_timeout=startup_timeout,
            ),
            console=err_console,
        )
    except StackError as err:
        err_console.print(f"[red]dunning up failed:[/red] {err}")
        raise typer.Exit(1) from None
    raise typer.Exit(stack.run())


@app.command()
def worker() -> None:
    """Run a worker: DunningWorkflow and its activities on the `dunning` task queue."""
    from runtime.logging import configure_logging
    from runtime.settings import Settings
    from worker import STARTUP_ERRORS, run_worker

    settings = Settings()
    configure_logging(settings.dunning_log_level, settings.dunning_log_format)

    try:
        asyncio.run(run_worker(settings))
    except STARTUP_ERRORS as err:  # configuration, keys, unreachable Temporal, unreadable cases
        _fail(str(err))


@app.command()
def api(
    host: Annotated[str, typer.Option(envvar="DUNNING_API_HOST", help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="DUNNING_API_PORT", help="Port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API (`starter.api:app`) with uvicorn."""
    import uvicorn

    from dunning.experiments import load_experiments
    from dunning.policy import load_policies
    from runtime.settings import Settings

    # The app loads them at start-up too, but under uvicorn a bad file is a 120-line traceback
    # before the reason: check first and say only the reason.
    folder = Settings().dunning_policy_dir
    load_experiments(folder, load_policies(folder))

    uvicorn.run("starter.api:app", host=host, port=port, log_level=log_level, proxy_headers=True)


@app.command(hidden=False)
def healthcheck(
    part: Annotated[str, typer.Argument(help="worker | api | temporal")],
    url: Annotated[str, typer.Option(help="API base URL, for `api`.")] = "http://127.0.0.1:8000",
) -> None:
    """Exit 0 when this part is healthy (for container health checks).

    `worker`: a worker on this host polls the task queue; `api`: GET /healthz answers 200;
    `temporal`: the server answers.
    """
    import socket

    if part == "api":
        import httpx

        try:
            ok = httpx.get(f"{url.rstrip('/')}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError as err:
            err_console.print(f"api unhealthy: {err}")
            ok = False
        raise typer.Exit(0 if ok else 1)
    if part == "temporal":

        async def ping(client: Client) -> bool:
            return await client.service_client.check_health()

        raise typer.Exit(0 if _run(ping) else 1)
    if part == "worker":
        from runtime.settings import Settings

        queue, host = Settings().dunning_task_queue, socket.gethostname()
        count = _run(lambda client: ops.pollers_from_host(client, queue, host))
        if not count:
            err_console.print(f"no worker on {host} polls task queue {queue!r}")
        raise typer.Exit(0 if count else 1)
    raise typer.BadParameter("one of: worker, api, temporal", param_hint="PART")


@app.command("setup-temporal")
def setup_temporal(
    timeout: Annotated[float, typer.Option(min=0, help="Seconds to wait for Temporal and the namespace.")] = 300.0,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between tries.")] = 5.0,
) -> None:
    """Register the contract's search attributes in the namespace, waiting for it to exist.

    The deployment's one-shot job: it waits for the server and for the namespace (created by
    Temporal's namespace job, or on Temporal Cloud by you), adds what is missing and leaves what is
    there. Idempotent. Exit 1 when time runs out or an attribute has another type."""
    from runtime.temporal import connect
    from starter.cli.temporal_setup import SetupError
    from starter.cli.temporal_setup import setup_temporal as run

    try:
        report = asyncio.run(run(connect, timeout=timeout, interval=interval, say=err_console.print))
    except SetupError as err:
        _fail(err)
    except RPCError as err:
        _fail(f"{err.status.name if err.status else ''} {err.message}", "[red]Temporal said no:[/red]")
    console.print(
        f"namespace {report.namespace!r}: created {', '.join(report.created) or 'none'}; "
        f"already there: {', '.join(report.already_there) or 'none'}",
        soft_wrap=True,
    )


# --- looking at cases ---------------------------------------------------------------------


def _stage_value(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return Stage(value).value
    except ValueError:
        choices = ", ".join(s.value for s in Stage)
        raise typer.BadParameter(f"{value!r} is not a stage; one of: {choices}") from None


def list_cases(
    stage: Annotated[
        str | None, typer.Option(help="Only this stage (retrying, suspended, recovered, …).", callback=_stage_value)
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this Stripe customer id.")] = None,
    min_amount: Annotated[
        int | None, typer.Option(min=0, help="Only cases owing at least this much, in minor units (cents).")
    ] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only running cases.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many cases.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """List cases, newest first, filtered through the search attributes."""
    query = contract.cases_query(stage=stage, customer_id=customer, min_amount=min_amount, open_only=open_only)
    rows = _run(lambda client: ops.list_cases(client, query, limit=limit))
    _add_recovered_amounts(rows)
    if as_json:
        for row in rows:
            console.print_json(
                json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(row).items()})
            )
        return
    console.print(render.cases_table(rows, query, width=console.width))


def _add_recovered_amounts(rows: list[ops.CaseRow]) -> None:
    """What each recovered case brought back, from the recovery ledger when this machine can read
    the service's database (its AmountDue is 0 by then); without it the rows just say recovered."""
    recovered = [r.workflow_id for r in rows if r.stage == Stage.RECOVERED.value]
    if not recovered:
        return
    from runtime.database import Database
    from runtime.ledger import DatabaseLedger
    from runtime.settings import Settings

    database = Database.from_settings(Settings())
    try:
        amounts = asyncio.run(DatabaseLedger(database).recovered(recovered))
    except Exception:  # no database here, or not reachable: the list is still worth showing
        amounts = {}
    finally:
        database.dispose()
    for row in rows:
        if row.workflow_id in amounts:
            row.recovered_amount, row.currency = amounts[row.workflow_id][0], amounts[row.workflow_id][1] or row.currency


app.command("list")(list_cases)
app.command("cases", help="Same as `list`.")(list_cases)


@app.command()
def show(
    case: Annotated[str, typer.Argument(help="Case id (dunning-sub_…) or Stripe subscription id (sub_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="The raw `status` query result.")] = False,
) -> None:
    """Show one case as a timeline: stage, invoices, attempts, messages, next action."""
    status = _run(lambda client: ops.status(client, case))
    if as_json:
        console.print_json(status.model_dump_json())
    else:
        console.print(render.render_case(status))


# --- steering cases ---------------------------------------------------------------------------


@app.command()
def pause(
    case: Annotated[str, typer.Argument(help="Case id or subscription id.")],
    reason: Annotated[str, typer.Option(help="Why (shown in the case and the UI).")],
) -> None:
    """Pause a case: no charge, no message until resumed (the `pause` signal). Exit 3 when it
    is already paused (nothing is sent)."""
    done = _run(lambda client: ops.pause(client, case, reason))
    if done.after is None:
        _sent_without_worker(done.workflow_id, "pause")
    else:
        console.print(f"[blue]paused[/blue] {done.workflow_id}: {escape(reason)}")


@app.command()
def resume(
    case: Annotated[str, typer.Argument(help="Case id or subscription id.")],
    reason: Annotated[str, typer.Option(help="Why.")] = "resumed by operator",
) -> None:
    """Resume a paused case (the `resume` signal); its schedule moves by the time spent paused.
    Exit 3 when it is not paused (nothing is sent)."""
    done = _run(lambda client: ops.resume(client, case, reason))
    if done.after is None:
        _sent_without_worker(done.workflow_id, "resume")
    else:
        after = done.after
        nxt = f"; next: {after.next_action} {render.when(after.next_action_at)}" if after.next_action else ""
        console.print(f"[green]resumed[/green] {done.workflow_id} (stage {done.after.stage.value}{escape(nxt)})")


@app.command("extend-grace")
def extend_grace(
    case: Annotated[str, typer.Argument(help="Case id or subscription id.")],
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of access to add.")],
    reason: Annotated[str, typer.Option(help="Why (e.g. 'asked for time').")] = "grace extended by operator",
) -> None:
    """Give the customer more days before suspension (the `extend_grace` signal)."""
    done = _run(lambda client: ops.extend_grace(client, case, days, reason))
    if done.after is None:
        _sent_without_worker(done.workflow_id, "extend grace")
        return
    until = f"; grace now ends {render.when(done.after.grace_ends_at)}" if done.after.grace_ends_at else ""
    console.print(f"[green]grace extended[/green] {done.workflow_id} by {days} day(s): {escape(reason)}{until}")


def _sent_without_worker(workflow_id: str, what: str) -> None:
    console.print(f"[yellow]sent[/yellow] {what} to {workflow_id}")
    err_console.print(
        "[yellow]no worker answered the status query: the case acts on it when a worker runs[/yellow]",
        soft_wrap=True,
    )


@app.command("retry-now")
def retry_now(
    case: Annotated[str, typer.Argument(help="Case id or subscription id.")],
    reason: Annotated[str, typer.Option(help="Why.")] = "retry requested by operator",
    as_json: Annotated[bool, typer.Option("--json", help="The raw update result.")] = False,
) -> None:
    """Charge the outstanding invoices now (the `retry_now` update). Exit 1 when the case refuses."""
    outcome = _run(lambda client: ops.retry_now(client, case, reason))
    result = outcome.result
    if as_json:
        console.print_json(json.dumps({**json.loads(result.model_dump_json()), "stage": outcome.stage}))
    else:
        console.print(render.retry_result_table(result, stage=outcome.stage))
    if not result.results:
        err_console.print("[yellow]nothing was charged[/yellow]")


# --- the service's database -----------------------------------------------------------------

db_app = typer.Typer(help="The service's own database (DUNNING_DATABASE_URL).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this version's schema and copy in an old consent file.

    Workers and the API do the same at start (one at a time); run it first to migrate apart from
    a deploy. Idempotent. Exit 1 when the database is unreachable."""
    from runtime import migrations
    from runtime.database import Database
    from runtime.settings import Settings

    settings = Settings()
    database = Database.from_settings(settings)
    try:
        revision = migrations.upgrade(database, settings.dunning_state_dir)
    finally:
        database.dispose()
    console.print(f"database at revision {revision} (this version's head: {migrations.head()})")


@db_app.command("prune")
def db_prune(
    feedback_days: Annotated[
        int | None,
        typer.Option(min=0, help="Blank comments of cases closed more than this many days ago (default: DUNNING_FEEDBACK_RETENTION_DAYS)."),
    ] = None,
) -> None:
    """Apply the retention of the customers' free-text feedback (the API also does it at start)."""
    from datetime import timedelta

    from runtime.ledger import DatabaseLedger
    from runtime.settings import Settings

    settings = Settings()
    days = feedback_days if feedback_days is not None else settings.dunning_feedback_retention_days
    if days is None:
        _fail("no retention set: give --feedback-days or DUNNING_FEEDBACK_RETENTION_DAYS")
    with _database(settings) as database:
        blanked = DatabaseLedger(database).prune_feedback_comments(timedelta(days=days))
    console.print(f"{blanked} feedback comment(s) older than {days} day(s) blanked")


@contextmanager
def _database(settings: Settings) -> Iterator[Database]:
    """The service's database, migrated (a command may be the first to touch it), disposed after."""
    from runtime import migrations
    from runtime.database import Database

    database = Database.from_settings(settings)
    try:
        migrations.upgrade(database)
        yield database
    finally:
        database.dispose()


# --- how much came back -------------------------------------------------------------------------


@app.command()
def report(
    since: Annotated[str | None, typer.Option(help="Cases opened on or after this day (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Cases opened on or before this day (YYYY-MM-DD).")] = None,
    by: Annotated[str | None, typer.Option(help="Group by policy, arm, decline_category, trigger, channel or step.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: the API's report and the figures beyond it.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: one line per group and currency.")] = False,
    include_simulated: Annotated[
        bool, typer.Option("--include-simulated", help="Count the cases of `dunning simulate` too (labelled SIMULATED).")
    ] = False,
) -> None:
    """Recovery over the cases opened in a period, from the recovery ledger (docs/analytics.md)."""
    import csv
    from datetime import date

    from dunning.reports import GROUPINGS, recovery_report
    from runtime.ledger import DatabaseLedger
    from runtime.settings import Settings

    try:
        first = date.fromisoformat(since) if since else None
        last = date.fromisoformat(until) if until else None
    except ValueError as err:
        raise typer.BadParameter(f"dates are YYYY-MM-DD: {err}") from None
    if by is not None and by not in GROUPINGS:
        raise typer.BadParameter(f"--by {by!r}: one of {', '.join(GROUPINGS)}")
    with _database(Settings()) as database:
        rows = asyncio.run(DatabaseLedger(database).report_rows(first, last, include_simulated=include_simulated))
    result = recovery_report(rows, by)
    if as_json:
        console.print_json(result.model_dump_json())
    elif as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(render.REPORT_CSV_COLUMNS)
        writer.writerows(render.report_csv_rows(result))
    else:
        period = f"{first or 'from the start'} – {last or 'today'}" if first or last else "(all)"
        console.print(render.report_tables(result, period))


experiments_app = typer.Typer(help="Which policy wins: experiments with a hold-out (experiments.toml).", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")


@experiments_app.command("list")
def experiments_list() -> None:
    """The experiments of `experiments.toml` beside the policies, and their arms."""
    from dunning.experiment_report import planned_cases_per_arm
    from dunning.experiments import load_experiments
    from dunning.policy import load_policies
    from runtime.settings import Settings

    folder = Settings().dunning_policy_dir
    for experiment in load_experiments(folder, load_policies(folder)):
        arms = ", ".join(f"{arm} {weight}" for arm, weight in experiment.arms.items())
        console.print(
            f"[bold]{experiment.name}[/] on {experiment.applies_to}: {arms} (control {experiment.control};"
            f" {planned_cases_per_arm(experiment)} cases per arm planned)"
        )


@experiments_app.command("report")
def experiments_report(
    name: Annotated[str, typer.Argument(help="The experiment's name in experiments.toml.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON: the API's report and the figures beyond it.")] = False,
    include_simulated: Annotated[
        bool, typer.Option("--include-simulated", help="Count the cases of `dunning simulate` too (labelled SIMULATED).")
    ] = False,
) -> None:
    """Per arm: cases, recovery rate with its 95 % interval, lift over the control, and the verdict
    (docs/analytics.md, "Experiments")."""
    from dunning.experiment_report import experiment_report, includes_simulated
    from dunning.experiments import load_experiments
    from dunning.policy import load_policies
    from runtime.ledger import DatabaseLedger
    from runtime.settings import Settings

    settings = Settings()
    folder = settings.dunning_policy_dir
    experiment = next((e for e in load_experiments(folder, load_policies(folder)) if e.name == name), None)
    if experiment is None:
        _fail(f"no experiment {name!r} in {folder / 'experiments.toml'}")
    with _database(settings) as database:
        rows = asyncio.run(DatabaseLedger(database).report_rows(include_simulated=include_simulated))
    result = experiment_report(experiment, rows, simulated=includes_simulated(experiment, rows))
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        console.print(render.experiment_table(result))


# --- a customer's data --------------------------------------------------------------------------

customer_app = typer.Typer(help="What the service's database keeps about one customer.", no_args_is_help=True)
app.add_typer(customer_app, name="customer")


@customer_app.command("export")
def customer_export(customer_id: Annotated[str, typer.Argument(help="Stripe customer id (cus_…).")]) -> None:
    """Every row the database keeps about the customer, as JSON (an access request)."""
    from runtime.customer_data import export_customer
    from runtime.settings import Settings

    with _database(Settings()) as database:
        exported = export_customer(database, customer_id)
    sys.stdout.write(json.dumps(exported, indent=2, sort_keys=True) + "\n")


@customer_app.command("forget")
def customer_forget(
    customer_id: Annotated[str, typer.Argument(help="Stripe customer id (cus_…).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do it without asking.")] = False,
) -> None:
    """Delete the customer's consent, links, email suppressions and ledger rows (an erasure request). Their cases'
    Temporal histories expire with the namespace's retention (docs/operations.md)."""
    from runtime.customer_data import forget_customer
    from runtime.settings import Settings

    if not yes and not typer.confirm(f"Delete everything the database keeps about {customer_id}?"):
        raise typer.Exit(EXIT_IGNORED)
    with _database(Settings()) as database:
        deleted = forget_customer(database, customer_id)
    console.print(f"forgot {customer_id}: " + ", ".join(f"{n} {table}" for table, n in deleted.items()))


# --- events we never got ---------------------------------------------------------------------


@app.command()
def reconcile(
    apply: Annotated[bool, typer.Option("--apply", help="Open the missing cases (default: only list them).")] = False,
) -> None:
    """Open the cases Stripe never told us about: its open, failed subscription invoices without a case.

    Run it after installing the service and after the API was unreachable for longer than Stripe's
    three days of webhook retries. Dry run by default; idempotent with --apply.
    """
    from dunning.experiments import load_experiments
    from dunning.policy import load_policies
    from runtime.settings import Settings, reveal
    from starter.cli.reconcile import findings_table
    from starter.cli.reconcile import reconcile as run

    settings = Settings()
    if not reveal(settings.stripe_api_key):
        _fail("STRIPE_API_KEY is not set: reconcile reads the open invoices from Stripe")
    policies = load_policies(settings.dunning_policy_dir)
    experiments = load_experiments(settings.dunning_policy_dir, policies)

    async def work(client: Client):  # noqa: ANN202
        from activities.backends import ProviderRejected, ProviderUnavailable

        try:
            return await run(client, settings, policies, apply=apply, console=err_console, experiments=experiments)
        except (ProviderRejected, ProviderUnavailable) as err:
            raise Failure(str(err)) from err

    findings = _run(work)
    console.print(findings_table(findings, apply))
    if any(f.state == "failed" for f in findings):
        raise typer.Exit(EXIT_ERROR)


# --- simulation -------------------------------------------------------------------------------


@app.command()
def simulate(
    population_file: Annotated[Path, typer.Argument(help="The population (TOML; dunning/simulations/example.toml).")],
    policy: Annotated[str | None, typer.Option(help="Every case under this policy (default: `default`).")] = None,
    experiment: Annotated[str | None, typer.Option(help="Every arm of this experiment (experiments.toml), assigned as live.")] = None,
    cases: Annotated[int | None, typer.Option(min=1, max=100_000, help="How many cases (default: the file's).")] = None,
    seed: Annotated[int, typer.Option(help="The same seed draws the same customers and actions.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: the report, the experiment's and the rate.")] = False,
    no_ledger: Annotated[
        bool,
        typer.Option(
            "--no-ledger",
            help="Keep the cases in memory only. By default they are written to the service's ledger"
            " (DUNNING_DATABASE_URL) under the sim_ tag, which reports leave out unless asked"
            " (`dunning report --include-simulated`, the dashboard's ?include_simulated=true).",
        ),
    ] = False,
) -> None:
    """Run a population of synthetic cases through the real DunningWorkflow on the time-skipping server
    (sandbox backends, virtual time) and print the report they make, labelled SIMULATED."""
    from dunning.simulation import PopulationError, load_population

    if policy and experiment:
        raise typer.BadParameter("--policy and --experiment: one or the other")
    try:
        population = load_population(population_file)
    except PopulationError as err:
        _fail(err)
    code = _simulate(population, policy=policy, experiment=experiment, cases=cases, seed=seed, as_json=as_json, persist=not no_ledger)
    raise typer.Exit(code)


def _simulate(
    population: Population,
    *,
    policy: str | None,
    experiment: str | None,
    cases: int | None,
    seed: int,
    as_json: bool,
    persist: bool,
) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from activities.policy_check import load_checked_policies
    from dunning.experiments import load_experiments
    from runtime.ledger import Ledger, MemoryLedger
    from runtime.settings import Settings
    from starter.cli.simulate import SimulationError, SimulationResult, plan_cases, run_simulation

    from runtime.logging import configure_logging

    settings = Settings()
    configure_logging("warning", settings.dunning_log_format)  # on stderr: stdout is the report
    policies = load_checked_policies(settings.dunning_policy_dir)
    chosen = None
    if experiment is not None:
        chosen = next((e for e in load_experiments(settings.dunning_policy_dir, policies) if e.name == experiment), None)
        if chosen is None:
            _fail(f"no experiment {experiment!r} in {settings.dunning_policy_dir / 'experiments.toml'}")
    elif (policy or "default") not in policies:
        _fail(f"no policy {policy!r} in {settings.dunning_policy_dir} (policies: {', '.join(sorted(policies))})")
    plans = plan_cases(population, policies, seed=seed, cases=cases or population.cases, policy=policy, experiment=chosen)

    def run(ledger: Ledger) -> SimulationResult:
        with Progress(
            TextColumn("[bold yellow]SIMULATING[/] {task.description}"),
            BarColumn(),
            TextColumn("day {task.completed:.0f} of {task.total:.0f}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{len(plans)} cases", total=1)

            def advance(done: float, total: float) -> None:
                bar.update(task, completed=done, total=total)

            try:
                return asyncio.run(run_simulation(plans, ledger, settings, progress=advance, experiment=chosen))
            except SimulationError as err:
                _fail(err)

    if persist:
        from runtime.ledger import DatabaseLedger

        with _database(settings) as database:
            result = run(DatabaseLedger(database))
    else:
        result = run(MemoryLedger())
    rate = {
        "cases": len(result.plans),
        "wall_seconds": round(result.wall_seconds, 2),
        "virtual_days": round(result.virtual_days, 1),
        "cases_per_minute": round(result.cases_per_minute, 1),
        "failed": result.failed,
        "written_to_database": persist,
    }
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "simulated": True,
                    "report": result.report.model_dump(mode="json"),
                    "experiment": result.experiment_report.model_dump(mode="json") if result.experiment_report else None,
                    "rate": rate,
                },
                indent=2,
            )
            + "\n"
        )
    else:
        what = f"experiment {chosen.name}" if chosen else f"policy {policy or 'default'}"
        console.print(render.report_tables(result.report, f"in the simulation of {what} (seed {seed})"))
        if result.experiment_report is not None:
            console.print(render.experiment_table(result.experiment_report))
        console.print(
            f"[bold yellow]SIMULATED[/] {rate['cases']} cases over {rate['virtual_days']} virtual days in"
            f" {rate['wall_seconds']} s: [bold]{rate['cases_per_minute']} cases per minute[/]"
            + (" — written to the ledger as sim_… (reports show them with --include-simulated)" if persist else "")
        )
    if result.failed:
        err_console.print(f"[red]error:[/red] {len(result.failed)} case(s) failed: {', '.join(result.failed[:5])}")
        return EXIT_ERROR
    return 0


# --- demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    api_url: Annotated[str, typer.Option(envvar="DUNNING_API_URL", help="The running API.")] = "http://127.0.0.1:8000",
    secret: Annotated[
        str | None, typer.Option(help="Webhook signing secret; default STRIPE_WEBHOOK_SECRET or the `up` default.")
    ] = None,
    customers: Annotated[int, typer.Option(min=1, max=500, help="How many subscriptions fail.")] = 14,
    duration: Annotated[float, typer.Option(min=5, help="Stop after this many seconds at most.")] = 540.0,
    speed: Annotated[
        float, typer.Option(min=0.05, help="Scale the customers' reaction times (2 = twice as fast).")
    ] = 1.0,
    policy: Annotated[str, typer.Option(help="Policy the subscriptions carry in their metadata.")] = "demo",
    live: Annotated[bool, typer.Option("--live/--no-live", help="Redraw a live summary.")] = True,
    seed: Annotated[int | None, typer.Option(help="Random seed, to replay the same population.")] = None,
    simulated_month: Annotated[
        bool,
        typer.Option(
            "--simulated-month",
            help="Instead: simulate 300 cases opening over 30 days (the example population) into the database,"
            " so the dashboard has something to show (?include_simulated=true). Needs no running API.",
        ),
    ] = False,
) -> None:
    """Push realistic signed Stripe webhooks through the running API and watch the cases move."""
    if simulated_month:
        from dunning.simulation import EXAMPLE, load_population

        month = load_population(EXAMPLE).model_copy(update={"cases": 300, "open_over_days": 30})
        code = _simulate(month, policy=None, experiment=None, cases=None, seed=seed or 1, as_json=False, persist=True)
        if code == 0:
            console.print("Open the dashboard with [bold]?include_simulated=true[/] (e.g. http://127.0.0.1:8000/dashboard?include_simulated=true)")
        raise typer.Exit(code)
    from runtime.settings import Settings
    from starter.cli.demo import DemoConfig, run_demo
    from starter.cli.devstack import DEV_WEBHOOK_SECRET

    configured = Settings().stripe_webhook_secrets()  # during a rotation: sign with the first
    config = DemoConfig(
        api_url=api_url.rstrip("/"),
        secret=secret or (configured[0] if configured else DEV_WEBHOOK_SECRET),
        customers=customers,
        duration=duration,
        speed=speed,
        policy=policy,
        live=live,
        seed=seed,
    )
    code = _run(lambda client: run_demo(client, config, console))
    raise typer.Exit(code)


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the command, then leave without interpreter teardown.

    The Temporal SDK's Rust runtime keeps threads that can abort a finalizing interpreter
    (sdk-python issue 300: "PyGILState_Release … Python runtime state: finalizing"), which
    would turn a successful command into a crash and a wrong exit code. Every command has
    finished and closed what it opened when we get here, so flush and exit at once.
    """
    try:
        app(args=argv, prog_name="dunning")  # standalone: usage errors print and exit 2
        code = 0
    except operator_errors() as err:  # raised outside `_run` (settings, policies, keys): one line
        err_console.print(
            f"[red]error:[/red] {escape(_one_line(_describe(err)))}", soft_wrap=True, emoji=False, highlight=False
        )
        code = EXIT_ERROR
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # an unexpected bug: show it, fail
        err_console.print_exception(show_locals=False)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
