"""`dunning`: run the service and steer its cases.

    dunning up                      Temporal dev server + UI, worker and API on this machine
    dunning worker | api            one process of the service
    dunning list  [--stage S] [--customer C] [--min-amount N] [--open]
    dunning show  CASE_OR_SUBSCRIPTION
    dunning pause CASE --reason R   |  dunning resume CASE
    dunning extend-grace CASE --days N --reason R
    dunning retry-now CASE          (exit 1 when the case refuses)
    dunning demo                    realistic signed webhook traffic through the running API

Commands that talk to Temporal connect with its own conventions (`TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS variables, profiles); `localhost:7233` by default.

Exit codes: 0 done, 1 refused / not found / unreachable / misconfigured, 2 bad usage.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from temporalio.client import Client
from temporalio.service import RPCError

from dunning import contract
from dunning.models import Stage
from starter.cli import operator as ops
from starter.cli import render

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


class Failure(Exception):
    """A command failed in a way the operator should read, not a traceback."""


# --- plumbing -------------------------------------------------------------------------


def _address() -> str:
    return os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")


async def _client() -> Client:
    from runtime.temporal import connect

    try:
        return await connect()
    except RuntimeError as err:
        raise Failure(f"cannot reach Temporal at {_address()}: {err}. Is `dunning up` running?") from err


def _run(work: Callable[[Client], Awaitable[T]]) -> T:
    """Connect, do the work, and turn known failures into a message and exit code 1."""

    async def go() -> T:
        return await work(await _client())

    try:
        return asyncio.run(go())
    except ops.CaseNotFound as err:
        err_console.print(f"[red]not found:[/red] {err}")
    except ops.Rejected as err:
        err_console.print(f"[red]refused:[/red] {err}")
    except Failure as err:
        err_console.print(f"[red]error:[/red] {err}")
    except RPCError as err:
        err_console.print(f"[red]Temporal said no:[/red] {err.status.name if err.status else ''} {err.message}")
    raise typer.Exit(1)


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
    from runtime.settings import ConfigError, Settings
    from worker import run_worker

    settings = Settings()
    configure_logging(settings.dunning_log_level, settings.dunning_log_format)

    try:
        asyncio.run(run_worker(settings))
    except ConfigError as err:
        err_console.print(f"[red]error:[/red] {err}", soft_wrap=True)  # one line, whatever the width
        raise typer.Exit(1) from None
    except RuntimeError as err:
        if "connect" not in str(err).lower():
            raise
        err_console.print(f"[red]error:[/red] cannot reach Temporal at {_address()}: {err}")
        raise typer.Exit(1) from None


@app.command()
def api(
    host: Annotated[str, typer.Option(envvar="DUNNING_API_HOST", help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="DUNNING_API_PORT", help="Port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API (`starter.api:app`) with uvicorn."""
    import uvicorn

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
    if as_json:
        for row in rows:
            console.print_json(
                json.dumps({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(row).items()})
            )
        return
    console.print(render.cases_table(rows, query))


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
    """Pause a case: no charge, no message until resumed (the `pause` signal)."""
    wid = _run(lambda client: ops.pause(client, case, reason))
    console.print(f"[blue]paused[/blue] {wid}: {reason}")


@app.command()
def resume(
    case: Annotated[str, typer.Argument(help="Case id or subscription id.")],
    reason: Annotated[str, typer.Option(help="Why.")] = "resumed by operator",
) -> None:
    """Resume a paused case (the `resume` signal); its schedule moves by the time spent paused."""
    wid = _run(lambda client: ops.resume(client, case, reason))
    console.print(f"[green]resumed[/green] {wid}")


@app.command("extend-grace")
def extend_grace(
    case: Annotated[str, typer.Argument(help="Case id or subscription id.")],
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of access to add.")],
    reason: Annotated[str, typer.Option(help="Why (e.g. 'asked for time').")] = "grace extended by operator",
) -> None:
    """Give the customer more days before suspension (the `extend_grace` signal)."""
    wid = _run(lambda client: ops.extend_grace(client, case, days, reason))
    console.print(f"[green]grace extended[/green] {wid} by {days} day(s): {reason}")


@app.command("retry-now")
def retry_now(
    case: Annotated[str, typer.Argument(help="Case id or subscription id.")],
    reason: Annotated[str, typer.Option(help="Why.")] = "retry requested by operator",
    as_json: Annotated[bool, typer.Option("--json", help="The raw update result.")] = False,
) -> None:
    """Charge the outstanding invoices now (the `retry_now` update). Exit 1 when the case refuses."""
    result = _run(lambda client: ops.retry_now(client, case, reason))
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        console.print(render.retry_result_table(result))
    if not result.results:
        err_console.print("[yellow]nothing was charged[/yellow]")


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
) -> None:
    """Push realistic signed Stripe webhooks through the running API and watch the cases move."""
    from starter.cli.demo import DemoConfig, run_demo
    from starter.cli.devstack import DEV_WEBHOOK_SECRET

    config = DemoConfig(
        api_url=api_url.rstrip("/"),
        secret=secret or os.environ.get("STRIPE_WEBHOOK_SECRET") or DEV_WEBHOOK_SECRET,
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
