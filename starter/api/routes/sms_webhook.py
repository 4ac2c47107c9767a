"""`POST /webhooks/twilio/sms`, Twilio's router: inbound SMS, so that STOP means stop, everywhere and for good.

Twilio posts every inbound message as a form, signed with `X-Twilio-Signature` (HMAC of the
full URL plus the sorted form parameters, keyed with `TWILIO_AUTH_TOKEN`). A STOP-type keyword
opts the sender's customers out of SMS in the consent store the worker checks before every
text; START-type keywords opt them back in. Twilio's own opt-out handling answers the customer,
so we reply to those with empty TwiML. HELP and INFO (HILFE in German) are answered with who
writes, how to reach us and how to stop (`DUNNING_COMPANY_NAME`, `DUNNING_SUPPORT_EMAIL`), in one
SMS; they change no consent. (On a long code with Twilio's default keyword handling Twilio
answers HELP too: give Twilio's reply the same text, or turn it off with Advanced Opt-Out.)

Behind a proxy, the URL Twilio signed is the public one: set `DUNNING_PUBLIC_URL`
(e.g. `https://dunning.example.com`) or run uvicorn with `--proxy-headers`.
"""

from __future__ import annotations

import urllib.parse

import structlog
from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, Response
from starlette.datastructures import MultiDict
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.twiml.messaging_response import MessagingResponse

from activities.messages import sms_safe
from activities.backends import PaymentsBackend
from activities.case_activities import mirror_sms_opt_out
from starter.api.deps import (
    ConsentDep,
    OptionalPaymentsDep,
    PhoneDirectoryDep,
    ServiceUnavailable,
    SettingsDep,
    TwilioConfigDep,
    TwilioWebhookConfig,
    database_or_503,
)

log = structlog.get_logger(__name__)

router = APIRouter(tags=["twilio"])

# Twilio's standard opt-out and opt-in keywords (matched on the whole, trimmed message).
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
# Help keywords and the language of the answer.
HELP_KEYWORDS = {"HELP": "en", "INFO": "en", "HILFE": "de"}


def keyword_action(body: str) -> bool | None:
    """True = opt out, False = opt back in, None = an ordinary reply."""
    word = " ".join(body.strip().upper().split()).strip(".!")
    if word in STOP_KEYWORDS:
        return True
    if word in START_KEYWORDS:
        return False
    return None


def help_language(body: str) -> str | None:
    """The answer's language when the message asks for help (HELP, INFO, HILFE), else None."""
    return HELP_KEYWORDS.get(" ".join(body.strip().upper().split()).strip(".!?"))


def help_reply(language: str, company: str | None, support_email: str | None) -> str:
    """Who writes, how to reach us, how to stop: one GSM-7 SMS, whatever is configured."""
    if language == "de":
        who = f"{company}: Hinweise" if company else "Hinweise"
        reach = f"Hilfe: {support_email}." if support_email else "Hilfe: Antworten Sie auf unsere E-Mails."
        text = f"{who} zur Abrechnung Ihres Abonnements. {reach} Es können SMS-Gebühren anfallen. Abmelden: STOP"
    else:
        who = f"{company}: billing notices" if company else "Billing notices"
        reach = f"Help: {support_email}." if support_email else "Help: reply to our emails."
        text = f"{who} about your subscription. {reach} Msg&data rates may apply. Reply STOP to opt out."
    return sms_safe(text)


def _signed_url(request: Request, config: TwilioWebhookConfig) -> str:
    if config.public_url:
        url = config.public_url.rstrip("/") + request.url.path
        return f"{url}?{request.url.query}" if request.url.query else url
    return str(request.url)


def _twiml(message: str | None = None) -> Response:
    response = MessagingResponse()
    if message:
        response.message(message)
    return Response(content=str(response), media_type="application/xml")


@router.post("/webhooks/twilio/sms", summary="Inbound SMS from Twilio: STOP / START / HELP keywords")
async def twilio_inbound_sms(
    request: Request,
    config: TwilioConfigDep,
    consent: ConsentDep,
    directory: PhoneDirectoryDep,
    settings: SettingsDep,
    payments: OptionalPaymentsDep,
    background: BackgroundTasks,
) -> Response:
    if not config.auth_token:
        raise ServiceUnavailable("TWILIO_AUTH_TOKEN is not configured: cannot verify inbound SMS")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise HTTPException(400, "expected an application/x-www-form-urlencoded body")
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        raise HTTPException(403, "missing X-Twilio-Signature")
    try:
        raw = (await request.body()).decode("utf-8")
        params = MultiDict(urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw)))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f"unreadable form body: {exc}") from exc
    algorithm = get_signature_algorithm(request.headers.get("X-Twilio-Webhooks-Signature-Settings"))
    if not RequestValidator(config.auth_token).validate(_signed_url(request, config), params, signature, algorithm):
        log.warning("twilio webhook: bad signature", url=_signed_url(request, config))
        raise HTTPException(403, "invalid X-Twilio-Signature")
    if config.account_sid and params.get("AccountSid") not in (None, config.account_sid):
        raise HTTPException(403, "AccountSid does not match TWILIO_ACCOUNT_SID")
    phone, body = params.get("From"), params.get("Body")
    if not phone or body is None:
        raise HTTPException(400, "inbound SMS needs `From` and `Body`")

    language = help_language(body)
    if language is not None:
        log.info("twilio webhook: help requested", language=language, message_sid=params.get("MessageSid"))
        return _twiml(help_reply(language, settings.dunning_company_name, settings.dunning_support_email))
    action = keyword_action(body)
    if action is None:
        log.info("twilio webhook: ordinary reply ignored", message_sid=params.get("MessageSid"))
        return _twiml()
    source = f"sms:{' '.join(body.strip().upper().split())}"
    with database_or_503():  # Twilio retries a 503: the STOP is not lost while the database is down
        customers = await directory.customers_for_phone(phone)
        for customer_id in customers:
            await consent.set_sms_opt_out(customer_id, action, source=source)
    log.info(
        "sms consent changed",
        opted_out=action,
        customers=customers,
        message_sid=params.get("MessageSid"),
        note="" if customers else "number belongs to no known customer; Twilio still blocks it on STOP",
    )
    if customers:
        # After the answer (Twilio waits 15 s at most): Stripe's metadata mirrors what our database holds.
        background.add_task(_mirror, payments, customers, action)
    return _twiml()


async def _mirror(payments: PaymentsBackend | None, customers: list[str], opted_out: bool) -> None:
    """STOP and START into each customer's Stripe metadata `dunning_sms_opt_out`. The database
    already has the change: a failure here is logged loudly and mended by the worker at that
    customer's next SMS, never lost."""
    if payments is None:
        log.error("sms consent not mirrored: this app has no payments backend", customers=customers)
        return
    for customer_id in customers:
        await mirror_sms_opt_out(payments, customer_id, opted_out)
