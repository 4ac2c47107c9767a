"""`GET /dev/mailbox`: every email, SMS and in-app banner the sandbox "sent", as the customer got them.

Development only. `dunning up` sets `DUNNING_SANDBOX_OUTBOX_FILE`; with email and SMS on the
sandbox, the worker appends each message there (activities/sandbox.py `SandboxMailbox`) and this
router, mounted by `create_app` only then, shows them: newest first, grouped by customer, each
email rendered as the customer sees it in a sandboxed frame (no scripts, its own origin; a click
on a link opens it in the whole tab), each SMS and banner as text with working links. So a new
user can follow a demo case from the first email to the customer's page and back.

Never in production: a real email or SMS provider turns the router off, whatever the variable says.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from activities.sandbox import MailboxMessage, SandboxMailbox
from starter.api.deps import SettingsDep

router = APIRouter(tags=["development"], include_in_schema=False)

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(("html",)))

#: What a frame with an email may do: follow a link the reader clicks (in the whole tab, or a new
#: one). No scripts, no forms, and a unique origin: it can't read or act as the mailbox page.
FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox allow-top-navigation-by-user-activation"
#: The same limits for an email opened on its own page.
EMAIL_PAGE_CSP = f"sandbox {FRAME_SANDBOX}; default-src 'none'; img-src data: https:; style-src 'unsafe-inline'"
_URL = re.compile(r"https?://[^\s<>\"']+")


def get_mailbox(request: Request, settings: SettingsDep) -> SandboxMailbox:
    path = getattr(request.app.state, "mailbox_file", None) or settings.sandbox_mailbox_file()
    if path is None:
        raise HTTPException(404, "the local mailbox is off (sandbox providers and DUNNING_SANDBOX_OUTBOX_FILE)")
    return SandboxMailbox(Path(path))


MailboxDep = Annotated[SandboxMailbox, Depends(get_mailbox)]


@dataclass
class Customer:
    customer_id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    messages: list[MailboxMessage] = field(default_factory=list)

    @property
    def latest(self) -> datetime:
        return self.messages[0].at


def by_customer(messages: list[MailboxMessage]) -> list[Customer]:
    """Customers in the order of their latest message (newest first), each with their messages."""
    customers: OrderedDict[str, Customer] = OrderedDict()
    for message in messages:  # newest first already
        customer = customers.setdefault(message.customer_id, Customer(message.customer_id))
        customer.messages.append(message)
        customer.name = customer.name or message.name
        if message.channel == "email":
            customer.email = customer.email or message.to
        elif message.channel == "sms":
            customer.phone = customer.phone or message.to
    return list(customers.values())


def linkify(text: str) -> Markup:
    """Plain text → HTML with its links clickable (the text itself escaped)."""
    escaped = str(escape(text))
    return Markup(_URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped))


def framed(html: str) -> str:
    """The email for a sandboxed frame: its links open in the whole tab, not inside the frame."""
    base = '<base target="_top">'
    return html.replace("<head>", f"<head>{base}", 1) if "<head>" in html else base + html


@router.get("/dev/mailbox", response_class=HTMLResponse, summary="Local mailbox: what the sandbox sent")
async def mailbox_page(
    mailbox: MailboxDep,
    customer: Annotated[str | None, Query(max_length=255)] = None,
) -> HTMLResponse:
    messages = mailbox.read()
    customers = by_customer(messages)
    if customer:
        customers = [c for c in customers if c.customer_id == customer]
    page = _env.get_template("dev_mailbox.html").render(
        customers=customers,
        total=len(messages),
        only=customer,
        frame_sandbox=FRAME_SANDBOX,
        framed=framed,
        linkify=linkify,
        file=str(mailbox.path),
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.get("/dev/mailbox/{key}", summary="One email of the local mailbox, on its own page")
async def mailbox_email(mailbox: MailboxDep, key: str) -> Response:
    message = next((m for m in mailbox.read() if m.key == key and m.html), None)
    if message is None or message.html is None:
        raise HTTPException(404, "no such email in the local mailbox")
    return HTMLResponse(
        message.html, headers={"Content-Security-Policy": EMAIL_PAGE_CSP, "Cache-Control": "no-store"}
    )
