"""The local mailbox of `dunning up`: the worker keeps what the sandbox sends, the API shows it.

`SandboxMailbox` (the JSON Lines file both processes share), `send_notification` writing to it,
and `GET /dev/mailbox` mounted only with sandbox email and SMS and the setting.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from temporalio.testing import ActivityEnvironment

from activities.case_activities import NotificationActivities
from activities.factory import build_activities
from activities.sandbox import (
    MailboxMessage,
    MemoryConsentStore,
    SandboxLinks,
    SandboxMailbox,
    SandboxOutbox,
    SandboxPayments,
)
from dunning.models import Channel, NotificationRequest
from runtime.settings import Settings
from starter.api.main import create_app
from starter.api.routes import dev_mailbox
from starter.cli.devstack import DevStack, StackConfig

LINK = "http://127.0.0.1:8000/c/" + "t" * 32
CONTEXT = {
    "amount_due": 4900,
    "currency": "usd",
    "decline_category": "hard",
    "decline_code": "expired_card",
    "grace_ends_at": "2026-12-05T08:00:00+00:00",
    "days_left": 11,
    "plan_name": "Pro",
}


def message(n: int, customer: str = "cus_1", channel: str = "email", **kw: object) -> MailboxMessage:
    fields: dict[str, object] = {
        "at": datetime(2026, 11, 28, 12, 0, tzinfo=UTC) + timedelta(minutes=n),
        "customer_id": customer,
        "channel": channel,
        "template": "reminder",
        "text": f"message {n} {LINK}",
        "idempotency_key": f"dunning-sub_{customer}/step-{n}/{channel}",
        **kw,
    }
    return MailboxMessage.model_validate(fields)


# --- the file -----------------------------------------------------------------------------------


async def test_the_file_keeps_each_message_once_newest_first_and_skips_torn_lines(tmp_path: Path) -> None:
    mailbox = SandboxMailbox(tmp_path / "state" / "sandbox-outbox.jsonl")
    assert mailbox.read() == []  # no file yet
    for n in (1, 2, 3):
        await mailbox.record(message(n))
    await mailbox.record(message(2))  # a retried activity sends the same message again
    with mailbox.path.open("a") as f:
        f.write('{"at": "2026-11-28T12:09:00Z", "customer_id": "cus_1", "chan')  # a torn last line
    assert [m.text.split()[1] for m in mailbox.read()] == ["3", "2", "1"]
    assert mailbox.path.stat().st_mode & 0o777 == 0o600  # customer data: the owner only


def sandbox_notify(mailbox: SandboxMailbox | None) -> tuple[NotificationActivities, SandboxPayments]:
    payments = SandboxPayments()
    payments.add_customer("cus_1", name="Ada <b>Lovelace</b>", email="ada@example.com", phone="+15555550100")
    outbox = SandboxOutbox()
    notify = NotificationActivities(
        payments,
        outbox,
        outbox,
        MemoryConsentStore(),
        SandboxLinks(),
        message_defaults={"company_name": "Acme"},
        mailbox=mailbox,
    )
    return notify, payments


def request(channel: Channel, template: str = "payment_failed") -> NotificationRequest:
    return NotificationRequest(
        case_id="dunning-sub_1@20261128T120000Z",
        customer_id="cus_1",
        subscription_id="sub_1",
        channel=channel,
        template=template,
        idempotency_key=f"dunning-sub_1@20261128T120000Z/step-0/{channel}",
        invoice_ids=["in_1"],
        context=CONTEXT,
    )


async def test_send_notification_keeps_every_channel_for_the_mailbox(tmp_path: Path) -> None:
    mailbox = SandboxMailbox(tmp_path / "outbox.jsonl")
    notify, _ = sandbox_notify(mailbox)
    for channel in (Channel.EMAIL, Channel.IN_APP, Channel.SMS):
        result = await ActivityEnvironment().run(notify.send_notification, request(channel))
        assert result.status == "sent"
    kept = {m.channel: m for m in mailbox.read()}
    assert set(kept) == {"email", "sms", "in_app"}
    email = kept["email"]
    assert (email.customer_id, email.to, email.template, email.locale) == ("cus_1", "ada@example.com", "payment_failed", "en")
    assert email.subject == "Your card on file has expired: please add a new one"
    assert email.html and "Add a new card" in email.html
    assert kept["sms"].to == "+15555550100" and kept["sms"].text.startswith("Acme: your $49.00 payment")
    assert kept["in_app"].text.startswith("Your latest payment of $49.00 didn't go through because the card")
    links = {m.link for m in kept.values()}
    assert len(links) == 1 and links.pop().startswith("https://pay.example.com/c/")  # the case's page


async def test_without_a_mailbox_nothing_is_written(tmp_path: Path) -> None:
    notify, _ = sandbox_notify(None)
    assert (await ActivityEnvironment().run(notify.send_notification, request(Channel.EMAIL))).status == "sent"
    assert list(tmp_path.iterdir()) == []


def test_the_worker_keeps_messages_only_with_sandbox_email_and_sms(tmp_path: Path) -> None:
    def mailbox_of(**settings: object) -> SandboxMailbox | None:
        activities = build_activities(Settings(dunning_state_dir=tmp_path, **settings))  # type: ignore[arg-type]
        notify = next(a.__self__ for a in activities if getattr(a, "__name__", "") == "send_notification")
        return notify.mailbox

    file = tmp_path / "outbox.jsonl"
    assert mailbox_of(dunning_email="sandbox", dunning_sms="sandbox") is None  # not asked for
    on = mailbox_of(dunning_email="sandbox", dunning_sms="sandbox", dunning_sandbox_outbox_file=file)
    assert on is not None and on.path == file.resolve()
    twilio = {
        "dunning_sms": "twilio",
        "twilio_account_sid": "AC1",
        "twilio_auth_token": "t",
        "twilio_from_number": "+15005550006",
    }
    assert mailbox_of(dunning_email="sandbox", dunning_sandbox_outbox_file=file, **twilio) is None


# --- the page -----------------------------------------------------------------------------------


def app_with(tmp_path: Path, **settings: object) -> FastAPI:
    return create_app(Settings(dunning_state_dir=tmp_path, **settings))  # type: ignore[arg-type]


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        return await client.get(path)


@pytest.fixture
async def filled(tmp_path: Path) -> Path:
    """A mailbox as the worker leaves it after a few steps of two customers."""
    file = tmp_path / "sandbox-outbox.jsonl"
    notify, payments = sandbox_notify(SandboxMailbox(file))
    payments.add_customer("cus_2", name="Grace Hopper", email="grace@example.com", locale="de-DE")
    for channel in (Channel.EMAIL, Channel.IN_APP, Channel.SMS):
        await ActivityEnvironment().run(notify.send_notification, request(channel))
    later = request(Channel.EMAIL, "reminder").model_copy(
        update={"customer_id": "cus_2", "idempotency_key": "dunning-sub_2@x/step-1/email"}
    )
    await ActivityEnvironment().run(notify.send_notification, later)
    return file


async def test_the_mailbox_shows_every_message_by_customer_newest_first(tmp_path: Path, filled: Path) -> None:
    app = app_with(tmp_path, dunning_email="sandbox", dunning_sms="sandbox", dunning_sandbox_outbox_file=filled)
    response = await get(app, "/dev/mailbox")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    page = response.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    # the customer who heard from us last comes first; her email is in German
    assert page.index("Grace Hopper") < page.index("Ada &lt;b&gt;Lovelace&lt;/b&gt;")
    assert "Erinnerung: Ihre Zahlung für Pro steht noch aus" in page
    assert "<b>Lovelace</b>" not in page  # customer data is escaped
    # the email in a frame that runs no script and can't reach this page, its links opening in the tab
    frames = re.findall(r"<iframe [^>]*>", page)
    assert len(frames) == 2
    for frame in frames:
        sandbox = re.search(r'sandbox="([^"]*)"', frame)
        assert sandbox and "allow-scripts" not in sandbox.group(1) and "allow-same-origin" not in sandbox.group(1)
        assert "allow-top-navigation-by-user-activation" in sandbox.group(1)
        assert 'srcdoc="&lt;!DOCTYPE html&gt;' in frame and "&lt;base target=&#34;_top&#34;&gt;" in frame
    # the SMS with its link clickable, the banner with its page
    assert 'Acme: your $49.00 payment' in page
    link = SandboxMailbox(filled).read()[-1].link
    assert link and link.startswith("https://pay.example.com/c/")
    assert f'<a href="{link}">{link}</a>' in page
    assert "the card on file has expired" in page
    assert f'class="button" href="{link}"' in page


async def test_one_customer_and_one_email_on_its_own_page(tmp_path: Path, filled: Path) -> None:
    app = app_with(tmp_path, dunning_email="sandbox", dunning_sms="sandbox", dunning_sandbox_outbox_file=filled)
    page = (await get(app, "/dev/mailbox?customer=cus_1")).text
    assert "Ada &lt;b&gt;Lovelace" in page and "Grace Hopper" not in page
    key = SandboxMailbox(filled).read()[-1].key  # Ada's payment_failed email, the first message
    email = await get(app, f"/dev/mailbox/{key}")
    assert email.status_code == 200 and "Your card on file has expired" in email.text
    assert email.headers["content-security-policy"].startswith("sandbox ")
    assert "allow-scripts" not in email.headers["content-security-policy"]
    assert (await get(app, "/dev/mailbox/0000000000000000")).status_code == 404


async def test_an_empty_mailbox_says_how_to_fill_it(tmp_path: Path) -> None:
    file = tmp_path / "none-yet.jsonl"
    app = app_with(tmp_path, dunning_email="sandbox", dunning_sms="sandbox", dunning_sandbox_outbox_file=file)
    page = (await get(app, "/dev/mailbox")).text
    assert "No messages yet" in page and "dunning demo" in page


@pytest.mark.parametrize(
    "settings",
    [
        {"dunning_email": "sandbox", "dunning_sms": "sandbox"},  # not asked for
        {  # a real provider: never, whatever the variable says
            "dunning_email": "sendgrid",
            "sendgrid_api_key": "SG.x",
            "dunning_email_from": "billing@acme.example",
            "dunning_sms": "sandbox",
            "dunning_sandbox_outbox_file": "outbox.jsonl",
        },
    ],
)
async def test_the_mailbox_is_not_there_outside_development(tmp_path: Path, settings: dict) -> None:
    app = app_with(tmp_path, **settings)
    assert (await get(app, "/dev/mailbox")).status_code == 404
    assert not any(getattr(r, "path", "").startswith("/dev/") for r in app.routes)


def test_links_in_text_are_clickable_and_the_rest_is_escaped() -> None:
    html = str(dev_mailbox.linkify("Pay <now> at https://x.example/c/abc?a=1&b=2 please"))
    assert html == (
        'Pay &lt;now&gt; at <a href="https://x.example/c/abc?a=1&amp;b=2">https://x.example/c/abc?a=1&amp;b=2</a> please'
    )
    assert "<a" not in str(dev_mailbox.linkify("javascript:alert(1) data:text/html,x"))  # only http(s) links


def test_dunning_up_turns_the_mailbox_on_in_its_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DUNNING_SANDBOX_OUTBOX_FILE", "DUNNING_EMAIL", "DUNNING_SMS"):
        monkeypatch.delenv(var, raising=False)
    stack = DevStack(StackConfig(state_dir=tmp_path / "state"))
    assert stack.env["DUNNING_SANDBOX_OUTBOX_FILE"] == str((tmp_path / "state").resolve() / "sandbox-outbox.jsonl")
    assert stack.mailbox_on()
    monkeypatch.setenv("DUNNING_EMAIL", "sendgrid")  # a real provider chosen: no mailbox
    assert not DevStack(StackConfig(state_dir=tmp_path / "state")).mailbox_on()
