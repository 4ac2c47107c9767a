"""The operators' dashboard in a real browser: Debian's chromium driven by Playwright (never
`playwright install`). The API runs as `dunning api` (uvicorn) over a ledger of eight weeks of
cases; the browser signs in with the token, reads the page without JavaScript, and the page's
screenshot is kept as docs/dashboard.png."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from dunning.ledger import CaseRecord, LedgerEvent
from runtime import migrations
from runtime.database import Database
from runtime.ledger import DatabaseLedger
from tests.helpers import ledger_checks
from tests.helpers.workers import TEST_LINK_KEYS, eventually

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "dashboard-operator-token"


def _chromium() -> None:
    if not CHROMIUM.exists():
        reason = "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)


def population(database: Database, weeks: int = 8, seed: int = 13) -> None:
    """Cases opened over `weeks` weeks, settling as real cohorts do (the last ones still open)."""
    rng = random.Random(seed)
    ledger = DatabaseLedger(database)
    start = datetime(2026, 9, 7, 9, tzinfo=UTC)
    records = []
    for n in range(weeks * 9):
        opened = start + timedelta(hours=rng.randrange(weeks * 7 * 24))
        age = (start + timedelta(weeks=weeks) - opened).days
        currency, amount = rng.choice([("eur", 4900), ("eur", 9900), ("usd", 2900)])
        decline = rng.choice(["soft"] * 6 + ["hard"] * 2 + ["authentication"])
        roll = rng.random()
        extra: dict[str, object] = {"stage": "retrying"}
        if roll < 0.55 and age > 1:
            hours = rng.choice([20, 30, 50, 75, 100, 130, 200, 300])
            trigger = rng.choice(["scheduled_retry", "scheduled_retry", "card_update", "customer_page", "paid_elsewhere"])
            extra = {
                "stage": "recovered", "outcome": "recovered", "closed_at": opened + timedelta(hours=hours),
                "recovered_amount": amount, "hours_to_recover": float(hours),
                "trigger": "card_update" if trigger == "customer_page" else trigger,
                "last_template": rng.choice(["payment_failed", "reminder", "final_notice"]), "last_channel": rng.choice(["email", "sms"]),
            }  # fmt: skip
        elif roll < 0.7 and age > 44:
            extra = {"stage": "canceled", "outcome": "canceled", "closed_at": opened + timedelta(days=44), "last_template": "suspended", "last_channel": "email"}
        elif roll < 0.8 and age > 3:
            extra = {
                "stage": "closed_by_customer", "outcome": "closed_by_customer", "closed_at": opened + timedelta(days=3),
                "feedback_reason": rng.choice(["too_expensive", "not_using", "switching"]), "last_template": "payment_failed", "last_channel": "email",
            }  # fmt: skip
        facts = ledger_checks.facts(
            f"{n:03d}", f"cus_{n:03d}", seq=2, opened_at=opened, first_failed_at=opened, currency=currency,
            amount=amount, decline_category=decline, **extra,
        )  # fmt: skip
        records.append(CaseRecord(facts=facts, events=[LedgerEvent(milestone="opened", kind="opened", at=opened)]))
    for record in records:
        asyncio.run(ledger.record(record))


@pytest.fixture
def api(tmp_path: Path, unused_tcp_port: int) -> Iterator[str]:
    _chromium()
    url = f"sqlite:///{tmp_path / 'dunning.sqlite3'}"
    database = Database(url)
    migrations.upgrade(database)
    population(database)
    database.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUNNING_", "TEMPORAL_"))}
    env.update(
        DUNNING_DATABASE_URL=url,
        DUNNING_STATE_DIR=str(tmp_path),
        DUNNING_API_TOKEN=TOKEN,
        DUNNING_LINK_KEYS=TEST_LINK_KEYS,
        TEMPORAL_ADDRESS="127.0.0.1:1",  # nobody there: the page says so and shows the ledger
        DUNNING_LOG_FORMAT="json",
        PYTHONPATH=str(ROOT),
    )
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "starter.cli.app", "api", "--port", str(unused_tcp_port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{unused_tcp_port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


async def _up(base: str) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{base}/dashboard/login", timeout=2)).status_code == 200
    except httpx.HTTPError:
        return False


async def test_the_dashboard_in_chromium(api: str) -> None:
    from playwright.async_api import async_playwright

    await eventually(lambda: _up(api), timeout=30, what="the API")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
            await page.goto(f"{api}/dashboard")
            assert page.url.endswith("/dashboard/login")
            await page.get_by_label("Operator token").fill("not-the-token")
            await page.get_by_role("button", name="Sign in").click()
            assert await page.get_by_role("alert").inner_text() == "That is not the operator token."
            await page.get_by_label("Operator token").fill(TOKEN)
            await page.get_by_role("button", name="Sign in").click()
            assert page.url.endswith("/dashboard")
            await page.get_by_role("img", name="Recovery rate by weekly cohort (cases opened that week)").wait_for()
            charts = await page.get_by_role("img").count()
            assert charts >= 6
            assert await page.get_by_text("Temporal is not reachable").count() == 1
            text = await page.inner_text("main")
            assert "cases opened" in text and "Why customers left" in text
            # The period form narrows the cohort.
            await page.get_by_label("Cases opened from").fill("2026-10-26")
            await page.get_by_role("button", name="Show").click()
            assert "since=2026-10-26" in page.url
            await page.goto(f"{api}/dashboard")
            await page.screenshot(path=str(ROOT / "docs" / "dashboard.png"), full_page=True)
        finally:
            await browser.close()
