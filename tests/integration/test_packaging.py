"""The wheel carries what the service cannot run without: every module, the shipped policies,
the message templates (`pip install .` once shipped neither policies nor templates), the
database migrations (Alembic reads them as files), the customer page's templates and the local
mailbox's page; and the installed `dunning worker` and `dunning api` (what the image runs) serve
a case on the dev server.

The wheel is built from a copy of the source (no stale `build/` can fill a gap), installed with
its dependencies from the package index into a fresh venv without system site-packages, and
checked from an empty folder in isolated mode, so nothing can be found in the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from dunning.models import CaseStatus
from fakes import stripe_api as sf
from tests.helpers import TEST_LINK_KEYS, eventually

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ["dunning", "workflows", "activities", "runtime", "starter", "worker.py"]
MIGRATIONS = ROOT / "runtime" / "migrations"

pytestmark = pytest.mark.timeout(600)

# Runs inside the installed venv: imports every module of the service from site-packages, loads
# the shipped policies, renders every template in every language on every channel and migrates
# an empty database to the newest revision.
CHECK = r"""
import importlib, json, sys, sysconfig
from pathlib import Path

site = Path(sysconfig.get_paths()["purelib"]).resolve()
for name in json.loads(sys.argv[1]):
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().is_relative_to(site), (name, module.__file__)

from activities import messages
from dunning import policy
from starter.api.routes import customer_page

assert customer_page.PAGE_DIR.resolve().is_relative_to(site), customer_page.PAGE_DIR
assert (customer_page.PAGE_DIR / "case.html").is_file() and (customer_page.PAGE_DIR / "customer-page.css").is_file()
from dunning.models import Channel

assert messages.TEMPLATE_DIR.resolve().is_relative_to(site), messages.TEMPLATE_DIR
assert policy.SHIPPED_POLICY_DIR.resolve().is_relative_to(site), policy.SHIPPED_POLICY_DIR
policies = policy.load_policies()
context = {
    "customer_name": "Anna Smith", "plan_name": "Pro", "amount_due": 4900, "currency": "usd",
    "timezone": "America/New_York", "company_name": "Acme", "support_email": "help@acme.example",
    "update_url": "https://pay.acme.example/u/cus_1", "next_retry_at": "2026-11-24T14:00:00+00:00",
    "grace_ends_at": "2026-12-05T14:00:00+00:00", "cancel_at": "2027-01-04T14:00:00+00:00",
    "days_left": 11, "decline_category": "soft", "decline_code": "insufficient_funds",
    "card_brand": "Visa", "card_last4": "4242", "card_exp_month": 12, "card_exp_year": 2026,
}
rendered = []
for language in messages.LANGUAGES:
    for template in messages.TEMPLATES:
        for channel in Channel:
            message = messages.render_message(template, channel, context, locale=language)
            assert message.text.strip(), (language, template, channel)
            if channel is Channel.EMAIL:
                assert message.subject and message.html, (language, template)
            rendered.append(f"{language}/{template}/{channel.value}")
from starter.api.routes import dev_mailbox  # the local mailbox's page is package data too

assert dev_mailbox.TEMPLATES.resolve().is_relative_to(site), dev_mailbox.TEMPLATES
page = dev_mailbox._env.get_template("dev_mailbox.html").render(customers=[], total=0, only=None, file="x")
assert "Local mailbox" in page
import tempfile
from runtime import migrations
from runtime.database import Database

assert migrations.HERE.is_relative_to(site), migrations.HERE
revision = migrations.upgrade(Database(f"sqlite:///{tempfile.mkdtemp()}/dunning.sqlite3"))
assert revision is not None and revision == migrations.head(), revision
print(json.dumps({"policies": sorted(policies), "rendered": rendered, "revision": revision}))
"""


def service_modules() -> list[str]:
    """Every module of the service in the source tree, as the installed venv must import it."""
    names = []
    for entry in SERVICE:
        path = ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            if file.parent.is_relative_to(MIGRATIONS) and file.name != "__init__.py":
                continue  # Alembic's scripts (env.py, versions/): it runs them, nobody imports them
            parts = list(file.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names.append(".".join(parts))
    return names


def run(*args: str | Path, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def serve_a_case(env_dir: Path, cwd: Path, dev_env: WorkflowEnvironment) -> CaseStatus:
    """The installed console script runs the worker and the API (sandbox providers) against the
    dev server; a signed webhook opens a case, the worker sends its first email with the page
    link, and the page (templates and stylesheet from the wheel) answers."""
    port, secret = free_port(), "whsec_packaging_0123456789"
    client = dev_env.client
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "STRIPE_", "SENDGRID_", "TWILIO_", "PYTHON"))
    } | {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "DUNNING_TASK_QUEUE": f"packaging-{port}",
        "DUNNING_STATE_DIR": str(cwd / "state"),
        "DUNNING_LINK_KEYS": TEST_LINK_KEYS,
        "DUNNING_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "STRIPE_WEBHOOK_SECRET": secret,
        "DUNNING_LOG_FORMAT": "json",
    }
    dunning = str(env_dir / "bin" / "dunning")
    logs = cwd / "logs"
    logs.mkdir()
    children = [
        subprocess.Popen([dunning, *argv], cwd=cwd, env=environment, stdout=(logs / f"{argv[0]}.log").open("wb"), stderr=subprocess.STDOUT)
        for argv in (["worker"], ["api", "--host", "127.0.0.1", "--port", str(port)])
    ]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as api:

            async def healthy() -> bool:
                for child in children:
                    assert child.poll() is None, "\n".join(p.read_text() for p in logs.iterdir())
                return (await api.get("/healthz")).status_code == 200

            await eventually(healthy, timeout=60, what="the installed API", retry_on=(httpx.HTTPError,))
            invoice = sf.invoice("in_packaging", customer="cus_packaging", subscription="sub_packaging")
            body = json.dumps(sf.event("invoice.payment_failed", invoice, event_id="evt_packaging")).encode()
            response = await api.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, secret)})
            assert response.status_code == 200, response.text
            handle = client.get_workflow_handle("dunning-sub_packaging")

            async def emailed() -> CaseStatus | None:
                status = await handle.query("status", result_type=CaseStatus)
                return status if any(n.channel.value == "email" for n in status.notifications) else None

            status = await eventually(emailed, timeout=60, what="the installed worker's first email", retry_on=(Exception,))
            assert (await api.get("/static/customer-page.css")).status_code == 200
            assert (await api.get("/c/" + "A" * 32)).status_code == 404  # the page's own 404, from the wheel
            await handle.terminate("packaging test done")
            return status
    finally:
        for child in children:
            child.terminate()
        worker, api_server = (child.wait(timeout=90) for child in children)
        shown = "\n".join(p.read_text() for p in logs.iterdir())
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly (-15): so do others.
        assert worker == 0 and api_server in (0, -15), shown
        assert "Application shutdown complete" in (logs / "api.log").read_text(), shown


async def test_the_installed_wheel_has_every_module_the_policies_and_the_templates(
    tmp_path: Path, dev_env: WorkflowEnvironment
) -> None:
    source = tmp_path / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", ".dunning"
        ),
    )
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, source, cwd=tmp_path, timeout=300)
    (wheel,) = wheels.glob("*.whl")

    env_dir = tmp_path / "venv"
    try:
        venv.create(env_dir, with_pip=True, system_site_packages=False)
        python = env_dir / "bin" / "python"
        run(python, "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path, timeout=600)

        empty = tmp_path / "elsewhere"
        empty.mkdir()
        # -I: no PYTHONPATH, no user site, not even the current folder on sys.path.
        result = run(python, "-I", "-c", CHECK, json.dumps(service_modules()), cwd=empty, timeout=120)
        served = await serve_a_case(env_dir, empty, dev_env)
    finally:
        # The venv holds the Temporal binaries (~430 MB); pytest would keep three runs of it.
        shutil.rmtree(env_dir, ignore_errors=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "default" in report["policies"]
    assert len(report["rendered"]) >= 2 * 6 * 3, report["rendered"]
    assert served.stage.value == "retrying" and served.policy == "default"
