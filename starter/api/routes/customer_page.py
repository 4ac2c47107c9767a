"""The customer's page: `/c/{token}`, the one link in every email, SMS and banner.

It says what happened, how much, what happens next and when, and offers three things: update
the card (a billing-portal session created at the click, or the invoice's hosted page when the
bank wants the customer to confirm), more time (the policy's `self_service_grace`), and cancel
(with one optional question, never hidden or delayed). Server-rendered, no JavaScript.

Rules it keeps: a `GET` never changes the case (mail scanners prefetch links); a forged or
unknown token gets the 404 page and an expired one a page saying so, both without customer
data; forms carry a CSRF secret bound to the link and to the case's state, so a double submit
or a stale form acts once; tokens never reach a log or another site (`Referrer-Policy`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import structlog
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton
from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from activities.messages import format_money, language_for
from dunning import contract
from dunning.card_expiry import CardExpiryStatus
from dunning.models import CancelReason, CaseStatus, CustomerFeedback, DeclineCategory, ExtendGrace, Stage, SubscriptionCanceled
from runtime.links import LINK_VALID_AFTER_CLOSE, TOKEN_LENGTH, CaseLinks, LinkRecord, LinkSigner
from runtime.database import DatabaseUnavailable
from runtime.ledger import DatabaseLedger
from starter.api.deps import CaseLinksDep, LedgerDep, PaymentsDep, SettingsDep, TemporalDep, is_transient
from starter.api.page_texts import TEXTS

log = structlog.get_logger("dunning.api.customer_page")
router = APIRouter(include_in_schema=False)

PAGE_DIR = FilePath(__file__).resolve().parent.parent / "page"
_templates = Environment(loader=FileSystemLoader(PAGE_DIR), autoescape=select_autoescape(["html"]))

#: Headers of every page under /c/: the token must not leak (to Stripe, to a search engine, to a
#: shared cache), and nothing may frame the page or run a script on it.
PAGE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}
TOKEN = Annotated[str, Path(min_length=1, max_length=64)]
#: How long a form's action waits for the case to take it before showing the page anyway.
ACTION_SETTLE_SECONDS = 5.0
#: How long the page, back from the billing portal, waits for the new card's charge to close the case.
CARD_SETTLE_SECONDS = 3.0

# Per process (each API replica counts for itself; behind N replicas the limits are N times
# looser, which still stops a scraper): requests per minute per token and per client address.
_limiter = MovingWindowRateLimiter(MemoryStorage())
PER_TOKEN = RateLimitItemPerMinute(30)
PER_ADDRESS = RateLimitItemPerMinute(120)


def _allowed(request: Request, token: str) -> bool:
    address = request.client.host if request.client else "unknown"
    return _limiter.hit(PER_ADDRESS, "address", address) and _limiter.hit(PER_TOKEN, "token", token)


# --- rendering -----------------------------------------------------------------------------


def _language(locale: str | None) -> str:
    language = language_for(locale)
    return language if language in TEXTS else "en"


def _browser_language(request: Request) -> str:
    accepted = request.headers.get("accept-language", "")
    first = accepted.split(",")[0].split(";")[0].strip() if accepted else None
    return _language(first)


def render_page(template: str, **values: Any) -> str:
    """The page's HTML from its view values (pure: the snapshot tests call it directly)."""
    lang = values.setdefault("lang", "en")
    values.setdefault("t", TEXTS[lang])
    return _templates.get_template(template).render(**values)


def message_view(key: str, lang: str, company: str | None, support_email: str | None) -> dict[str, Any]:
    """The values of a page without customer data: not found, expired, closed, busy, too many."""
    t = TEXTS[lang]
    return {
        "lang": lang,
        "t": t,
        "headline": t[f"{key}_headline"],
        "text": t[f"{key}_text"],
        "company": company,
        "support_email": support_email,
    }


def _page(template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(render_page(template, **values), status_code=status_code, headers=PAGE_HEADERS)


def _message(request: Request, settings: Any, key: str, status_code: int, lang: str | None = None) -> HTMLResponse:
    """A page without customer data: not found, expired, closed, busy."""
    lang = lang or _browser_language(request)
    values = message_view(key, lang, settings.dunning_company_name, settings.dunning_support_email)
    return _page("message.html", status_code, **values)


def _date(at: datetime | None, status: CaseStatus, lang: str) -> str | None:
    if at is None:
        return None
    zone = ZoneInfo(status.customer_timezone) if status.customer_timezone else UTC
    return format_date(at.astimezone(zone).date(), format="long", locale=_babel_locale(status.customer_locale, lang))


def _babel_locale(locale: str | None, lang: str) -> Locale:
    """Stripe's locales are BCP 47 (`en-US`), Babel's use `_`; the page's language when unknown,
    and never a locale of another language than the page's (a date in French on a German page)."""
    try:
        parsed = Locale.parse((locale or lang).replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError):
        return Locale.parse(lang)
    return parsed if parsed.language == lang else Locale.parse(lang)


def _length(length: timedelta, lang: str) -> str:
    days = length / timedelta(days=1)
    if days >= 1 and days == int(days):
        return f"{int(days)} {'Tage' if lang == 'de' else 'days'}" if days != 1 else ("1 Tag" if lang == "de" else "1 day")
    hours = round(length / timedelta(hours=1))
    return f"{hours} {'Stunden' if lang == 'de' else 'hours'}"


@dataclass(frozen=True)
class FoundCase:
    record: LinkRecord
    status: CaseStatus | None
    current: bool


@dataclass(frozen=True)
class FoundReminder:
    """A pre-dunning reminder's link (`card-expiry-…`): the card expires before the renewal."""

    record: LinkRecord
    status: CardExpiryStatus


def is_reminder(record: LinkRecord) -> bool:
    return record.workflow_id.startswith(contract.CARD_EXPIRY_ID_PREFIX)


async def find_reminder(client: Client, record: LinkRecord) -> CardExpiryStatus | None:
    """The reminder a link belongs to, from the run that sent it (its final state once ended)."""
    handle = client.get_workflow_handle(record.workflow_id, run_id=record.run_id or None)
    try:
        status: CardExpiryStatus = await handle.query(contract.QUERY_STATUS, result_type=CardExpiryStatus)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
    return status if status.reminder_id == record.case_id else None


async def _query(handle: WorkflowHandle[Any, Any]) -> CaseStatus | None:
    try:
        return await handle.query(contract.QUERY_STATUS, result_type=CaseStatus)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise


async def find_case(client: Client, record: LinkRecord) -> FoundCase:
    """The case a link belongs to: the workflow's latest run while it is that case, else the run
    the link was issued from (closed; its final state), else None (Temporal no longer keeps it)."""
    latest = await _query(client.get_workflow_handle(record.workflow_id))
    if latest is not None and latest.case_id == record.case_id:
        return FoundCase(record, latest, current=latest.outcome is None)
    if record.run_id:
        earlier = await _query(client.get_workflow_handle(record.workflow_id, run_id=record.run_id))
        if earlier is not None and earlier.case_id == record.case_id and earlier.outcome is not None:
            return FoundCase(record, earlier, current=False)
    return FoundCase(record, None, current=False)


#: The page for a case the ledger knows closed (Temporal forgot it): the outcome, no customer data.
LEDGER_OUTCOME_PAGES = {
    Stage.RECOVERED.value: "recovered",
    Stage.CANCELED.value: "ended",
    Stage.CLOSED_BY_CUSTOMER.value: "goodbye_kept",
    Stage.WRITTEN_OFF.value: "written_off",
}


async def _lookup(
    request: Request, token: str, links: CaseLinks, client: Client, settings: Any, ledger: DatabaseLedger
) -> FoundCase | FoundReminder | HTMLResponse:
    if len(token) != TOKEN_LENGTH or not _allowed(request, token):
        if len(token) == TOKEN_LENGTH:
            return _message(request, settings, "too_many", 429)
        return _message(request, settings, "not_found", 404)
    try:
        record = await links.find(token)
        if record is None:
            return _message(request, settings, "not_found", 404)
        if is_reminder(record):
            reminder = await find_reminder(client, record)
            return _reminder_or_message(request, settings, record, reminder)
        found = await find_case(client, record)
    except DatabaseUnavailable:
        return _message(request, settings, "busy", 503)
    except (RPCError, asyncio.TimeoutError) as exc:
        if isinstance(exc, RPCError) and not is_transient(exc):
            log.warning("customer page: case lookup failed", error=str(exc))
        return _message(request, settings, "busy", 503)
    now = datetime.now(UTC)
    status = found.status
    if status is None:
        # Temporal no longer keeps the case: the ledger still says how it ended (no other data).
        try:
            ended = await ledger.outcome(record.case_id)
        except DatabaseUnavailable:
            return _message(request, settings, "busy", 503)
        closed_at = ended[1] if ended else record.last_issued_at
        if now > closed_at + LINK_VALID_AFTER_CLOSE:
            return _message(request, settings, "expired", 410)
        key = LEDGER_OUTCOME_PAGES.get(ended[0], "closed") if ended else "closed"
        return _message(request, settings, key, 200)
    if status.closed_at and now > status.closed_at + LINK_VALID_AFTER_CLOSE:
        return _message(request, settings, "expired", 410, _language(status.customer_locale))
    return found


def _reminder_or_message(
    request: Request, settings: Any, record: LinkRecord, reminder: CardExpiryStatus | None
) -> FoundReminder | HTMLResponse:
    now = datetime.now(UTC)
    if reminder is None:
        expired = now > record.last_issued_at + LINK_VALID_AFTER_CLOSE
        return _message(request, settings, "expired" if expired else "closed", 410 if expired else 200)
    locale = reminder.customer.locale if reminder.customer else None
    if reminder.closed_at and now > reminder.closed_at + LINK_VALID_AFTER_CLOSE:
        return _message(request, settings, "expired", 410, _language(locale))
    return FoundReminder(record, reminder)


def reminder_view(
    status: CardExpiryStatus, *, token: str, company: str | None, support_email: str | None
) -> dict[str, Any]:
    """What the page shows for a pre-dunning reminder (pure, like `case_view`)."""
    locale = status.customer.locale if status.customer else None
    lang = _language(locale)
    t = TEXTS[lang]
    babel = _babel_locale(locale, lang)
    values: dict[str, Any] = {"lang": lang, "t": t, "company": company, "support_email": support_email, "base": f"/c/{token}"}
    if status.ended is not None or status.card is None:
        values.update(state="reminder_done", headline=t["expiring_done_headline"], text=t["expiring_done_text"])
        return values
    card = status.card
    month = format_skeleton("yMMMM", datetime(card.exp_year, card.exp_month, 1), locale=babel)
    renewal = format_date(status.renewal_at.date(), format="long", locale=babel) if status.renewal_at else ""
    values.update(
        state="expiring",
        headline=t["expiring_headline"],
        text=t["expiring_text"].format(last4=card.last4 or "····", month=month, renewal_date=renewal),
        update_href=f"/c/{token}/update",
        update_label=t["action_update"],
    )
    return values


def _view(found: FoundCase, token: str, links: CaseLinks, settings: Any, notice_key: str | None) -> dict[str, Any]:
    assert found.status is not None
    return case_view(
        found.status,
        token=token,
        link_id=found.record.link_id,
        signer=links.signer,
        company=settings.dunning_company_name,
        support_email=settings.dunning_support_email,
        notice_key=notice_key,
    )


def case_view(
    status: CaseStatus,
    *,
    token: str,
    link_id: str,
    signer: LinkSigner,
    company: str | None,
    support_email: str | None,
    notice_key: str | None = None,
) -> dict[str, Any]:
    """What the page shows for a case, from its `status` alone (pure: no Temporal, no database;
    the snapshot tests render every state from hand-built statuses)."""
    lang = _language(status.customer_locale)
    t = TEXTS[lang]
    amount_minor = status.amount_due or sum(i.amount_due for i in status.invoices)
    amount = format_money(amount_minor, status.currency, status.customer_locale or lang) if status.currency else ""
    values: dict[str, Any] = {
        "lang": lang,
        "t": t,
        "company": company,
        "support_email": support_email,
        "base": f"/c/{token}",
        "amount": amount,
    }
    outcome = status.outcome
    if outcome is not None or status.stage in (Stage.RECOVERED, Stage.CANCELED, Stage.WRITTEN_OFF, Stage.CLOSED_BY_CUSTOMER):
        closed_date = _date(status.closed_at, status, lang)
        if outcome is Stage.RECOVERED:
            values.update(state="recovered", headline=t["recovered_headline"], text=t["recovered_text"])
        elif outcome is Stage.CANCELED:
            values.update(
                state="canceled",
                headline=t["canceled_headline"],
                text=t["canceled_text"].format(closed_date=closed_date),
                extra=t["canceled_comeback"],
                comeback_href=f"/c/{token}/update",
            )
        elif outcome is Stage.CLOSED_BY_CUSTOMER:
            values.update(
                state="goodbye",
                headline=t["goodbye_headline"],
                text=t["goodbye_text"].format(closed_date=closed_date),
                extra=t["goodbye_feedback"] if status.feedback else None,
            )
        else:
            values.update(state="written_off", headline=t["written_off_headline"], text=t["written_off_text"])
        return values
    if status.feedback is not None or any(e.event == "customer_canceled" for e in status.timeline):
        values.update(state="canceling", headline=t["canceling_headline"])
        return values

    plan = status.plan_name
    headline = t["failed_headline_plan"].format(amount=amount, plan=plan) if plan else t["failed_headline"].format(amount=amount)
    retry_date = _date(status.next_retry_at, status, lang)
    grace_date = _date(status.grace_ends_at, status, lang)
    cancel_date = _date(status.cancel_at, status, lang)
    decline = status.decline_category
    last_code = next((a.result.decline_code or a.result.code for a in reversed(status.attempts)), None)
    if decline is DeclineCategory.AUTHENTICATION:
        why = t["why_authentication"]
    elif last_code == "expired_card":
        why = t["why_expired"]
    elif decline is DeclineCategory.HARD:
        why = t["why_hard"]
    elif decline is DeclineCategory.SOFT:
        why = t["why_soft"].format(retry_date=retry_date) if retry_date else t["why_soft_no_retry"]
    else:
        why = t["why_unknown"]
    suspended = status.access.value == "suspended"
    if suspended:
        next_text = t["next_suspended"].format(cancel_date=cancel_date)
    else:
        next_text = t["next_grace"].format(grace_date=grace_date) + " " + t["next_after_grace"].format(cancel_date=cancel_date)
    more_time = None
    # Like the case itself (Case.self_service_grace_left): no more time once paused or suspended.
    if (
        status.self_service_grace_left > 0
        and status.self_service_grace
        and status.grace_ends_at
        and not suspended
        and not status.paused
    ):
        length = _length(status.self_service_grace, lang)
        more_time = {
            "text": t["more_time_text"].format(
                length=length, new_date=_date(status.grace_ends_at + status.self_service_grace, status, lang)
            ),
            "button": t["more_time_button"].format(length=length),
            "csrf": signer.form_secret(link_id, "more-time", str(status.customer_extensions)),
        }
    notices = {"more-time": t["more_time_done"].format(grace_date=grace_date), "card": t["card_done"]}
    notice = notices.get(notice_key or "")
    values.update(
        state="open",
        headline=headline,
        why=why,
        grace_date=grace_date,
        cancel_date=cancel_date,
        suspended=suspended,
        paused=status.paused,
        next_text=next_text,
        update_href=f"/c/{token}/update",
        update_label=t["action_confirm"] if decline is DeclineCategory.AUTHENTICATION else t["action_update"],
        more_time=more_time,
        more_time_used=status.customer_extensions > 0 and more_time is None and not suspended,
        cancel_csrf=signer.form_secret(link_id, "cancel"),
        reasons=[r.value for r in CancelReason],
        notice=notice,
    )
    return values


# --- routes --------------------------------------------------------------------------------


@router.get("/static/customer-page.css")
async def stylesheet() -> FileResponse:
    return FileResponse(PAGE_DIR / "customer-page.css", media_type="text/css", headers={"Cache-Control": "max-age=3600"})


@router.get("/c/{token}")
async def customer_page(
    request: Request,
    token: TOKEN,
    links: CaseLinksDep,
    client: TemporalDep,
    settings: SettingsDep,
    ledger: LedgerDep,
    done: str | None = None,
) -> Response:
    found = await _lookup(request, token, links, client, settings, ledger)
    if isinstance(found, HTMLResponse):
        return found
    if isinstance(found, FoundReminder):
        company, support = settings.dunning_company_name, settings.dunning_support_email
        return _page("case.html", **reminder_view(found.status, token=token, company=company, support_email=support))
    if done == "card" and found.current:
        # Back from the billing portal: the new card's webhook is usually charging it right now;
        # wait a moment (reading only) so the customer sees "All settled" rather than the failure.
        handle = client.get_workflow_handle(found.record.workflow_id)
        try:
            await _settled(handle, lambda s: s.outcome is not None, CARD_SETTLE_SECONDS)
            settled = await _query(handle)
        except RPCError:
            settled = None
        if settled is not None and settled.case_id == found.record.case_id:
            found = FoundCase(found.record, settled, current=settled.outcome is None)
    return _page("case.html", **_view(found, token, links, settings, done))


@router.get("/c/{token}/update")
async def update_card(
    request: Request,
    token: TOKEN,
    links: CaseLinksDep,
    client: TemporalDep,
    settings: SettingsDep,
    payments: PaymentsDep,
    ledger: LedgerDep,
) -> Response:
    """303 to where the card is updated, created now (a portal session lives minutes): the
    invoice's hosted page when the bank wants the customer to confirm or the portal refuses."""
    found = await _lookup(request, token, links, client, settings, ledger)
    if isinstance(found, HTMLResponse):
        return found
    page_url = links.url(token)
    if isinstance(found, FoundReminder):
        reminder = found.status
        if reminder.ended is not None:
            return RedirectResponse(page_url, 303, headers=PAGE_HEADERS)
        try:
            portal = await payments.update_link(reminder.customer_id, None, page_url)
        except Exception as exc:  # a provider outage or refusal: "try again", not a trace
            log.warning("customer page: no update link", reminder=reminder.reminder_id, error=str(exc))
            locale = reminder.customer.locale if reminder.customer else None
            return _message(request, settings, "busy", 503, _language(locale))
        return RedirectResponse(portal, 303, headers=PAGE_HEADERS)
    status = found.status
    assert status is not None
    if status.outcome is not None and status.outcome is not Stage.CANCELED:
        return RedirectResponse(page_url, 303, headers=PAGE_HEADERS)
    invoice_id = next((i.invoice_id for i in status.outstanding_invoices), None) or next(
        (i.invoice_id for i in status.invoices), None
    )
    try:
        if status.outcome is None:
            await links.update_clicked(found.record.link_id)
        target: str | None = None
        if status.decline_category is DeclineCategory.AUTHENTICATION and invoice_id and status.outcome is None:
            target = await payments.hosted_invoice_url(invoice_id)
        if target is None:
            canceled = status.outcome is Stage.CANCELED
            target = await payments.update_link(
                status.customer_id,
                None if canceled else invoice_id,
                page_url if canceled else links.url(token, "?done=card"),
                portal_home=canceled,
            )
    except DatabaseUnavailable:
        return _message(request, settings, "busy", 503, _language(status.customer_locale))
    except Exception as exc:  # a provider outage or refusal: the customer sees "try again", not a trace
        log.warning("customer page: no update link", case_id=status.case_id, error=str(exc))
        return _message(request, settings, "busy", 503, _language(status.customer_locale))
    return RedirectResponse(target, 303, headers=PAGE_HEADERS)


async def _settled(handle: WorkflowHandle[Any, Any], done: Any, seconds: float = ACTION_SETTLE_SECONDS) -> None:
    """Wait (briefly) until the case took the action, so the page the customer lands on shows it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        status = await _query(handle)
        if status is None or done(status):
            return
        await asyncio.sleep(0.2)


async def _case_to_act_on(
    request: Request, token: str, links: CaseLinks, client: Client, settings: Any, ledger: DatabaseLedger
) -> FoundCase | Response:
    """The case a form acts on, or the response that ends the request (an error page; back to
    the page for a reminder's link, which has no forms)."""
    found = await _lookup(request, token, links, client, settings, ledger)
    if isinstance(found, FoundReminder):
        return RedirectResponse(f"/c/{token}", 303, headers=PAGE_HEADERS)
    return found


@router.post("/c/{token}/more-time")
async def more_time(
    request: Request,
    token: TOKEN,
    links: CaseLinksDep,
    client: TemporalDep,
    settings: SettingsDep,
    ledger: LedgerDep,
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    found = await _case_to_act_on(request, token, links, client, settings, ledger)
    if isinstance(found, Response):
        return found
    status, link_id, page = found.status, found.record.link_id, f"/c/{token}"
    assert status is not None
    taken = status.customer_extensions
    if not links.signer.form_secret_ok(csrf, link_id, "more-time", str(taken)):
        # A stale form (the extension it asked for already happened) or a forged one: no change.
        return RedirectResponse(page, 303, headers=PAGE_HEADERS)
    if not found.current or status.self_service_grace_left <= 0:
        return RedirectResponse(page, 303, headers=PAGE_HEADERS)
    handle = client.get_workflow_handle(found.record.workflow_id)
    try:
        await handle.signal(
            contract.Signal.EXTEND_GRACE.value,
            ExtendGrace(source="customer", reason="asked on their page", request_id=f"page:{link_id}:{taken + 1}"),
        )
        await _settled(handle, lambda s: s.customer_extensions > taken)
    except RPCError as exc:
        log.warning("customer page: more time not delivered", case_id=status.case_id, error=str(exc))
        return _message(request, settings, "busy", 503, _language(status.customer_locale))
    log.info("customer took more time on their page", case_id=status.case_id)
    return RedirectResponse(f"{page}?done=more-time", 303, headers=PAGE_HEADERS)


@router.post("/c/{token}/cancel")
async def cancel(
    request: Request,
    token: TOKEN,
    links: CaseLinksDep,
    client: TemporalDep,
    settings: SettingsDep,
    ledger: LedgerDep,
    csrf: Annotated[str, Form(max_length=64)] = "",
    reason: Annotated[str, Form(max_length=40)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    found = await _case_to_act_on(request, token, links, client, settings, ledger)
    if isinstance(found, Response):
        return found
    status, link_id, page = found.status, found.record.link_id, f"/c/{token}"
    assert status is not None
    if not links.signer.form_secret_ok(csrf, link_id, "cancel") or not found.current:
        return RedirectResponse(page, 303, headers=PAGE_HEADERS)
    chosen = reason if reason in {r.value for r in CancelReason} else None
    feedback = CustomerFeedback(reason=CancelReason(chosen), comment=comment.strip() or None) if chosen else None
    if feedback is None and comment.strip():
        feedback = CustomerFeedback(reason=CancelReason.OTHER, comment=comment.strip())
    handle = client.get_workflow_handle(found.record.workflow_id)
    try:
        await handle.signal(
            contract.Signal.SUBSCRIPTION_CANCELED.value,
            SubscriptionCanceled(source="customer", feedback=feedback, event_id=f"page-cancel:{link_id}"),
        )
        await _settled(handle, lambda s: s.outcome is not None)
    except RPCError as exc:
        log.warning("customer page: cancel not delivered", case_id=status.case_id, error=str(exc))
        return _message(request, settings, "busy", 503, _language(status.customer_locale))
    log.info("customer canceled on their page", case_id=status.case_id, reason=chosen)
    return RedirectResponse(page, 303, headers=PAGE_HEADERS)
