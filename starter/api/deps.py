"""Every dependency of the HTTP API, as `Annotated` aliases the routers declare.

`create_app` (main.py) puts the settings, the policies, the Temporal gateway and the timings on
`app.state`; the routers reach them only through the aliases below, so a test overrides one
function (`app.dependency_overrides[get_temporal_client] = ...`) and nothing connects at import
time. Here too: the one 503 (`ServiceUnavailable`) and the one token check (`OperatorAuth`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Protocol
from urllib.parse import parse_qs

import structlog
from fastapi import Cookie, Depends, Header, HTTPException, Request, Response
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from activities.backends import PaymentsBackend
from activities.stripe_backend import FailureFacts, RenewingSubscription
from dunning.experiments import Experiment
from dunning.card_expiry import RenewalCard
from dunning.models import CaseStatus
from dunning.policy import Policy
from runtime.codec import EncryptionCodec, EncryptionConfigError
from runtime.consent import DatabaseConsentStore, PhoneDirectory
from runtime.database import Database, DatabaseUnavailable
from runtime.email_suppression import DatabaseEmailSuppressions
from runtime.links import CaseLinks
from runtime.ledger import DatabaseLedger
from runtime.settings import Settings, reveal
from starter.api.stripe_events import https_only

log = structlog.get_logger("dunning.api")

ClientFactory = Callable[[], Awaitable[Client] | Client]
#: `(invoice id, subscription id)`: why the invoice failed and whether the invoice and the
#: subscription still need dunning, asked of Stripe when a case opens (the event may be late).
FailureLookup = Callable[[str, str], Awaitable[FailureFacts]]

#: `(subscription id, customer id)` → the card the next renewal charges (None: none, or no card).
CardLookup = Callable[[str, str], Awaitable[RenewalCard | None]]
#: `(customer id, card id)` → the customer's active subscriptions whose renewal charges this card.
SubscriptionsCharging = Callable[[str, str], Awaitable[list[RenewingSubscription]]]


@dataclass(frozen=True)
class CardReaders:
    """How pre-dunning reads Stripe at the door (None: the payments backend is not Stripe)."""

    renewal_card: CardLookup | None = None
    subscriptions_charging: SubscriptionsCharging | None = None


#: How long one Temporal call may take before the API answers 503 (Stripe waits ~20 s at most).
RPC_TIMEOUT = timedelta(seconds=5)
#: What a 503 tells the caller to wait before retrying.
RETRY_AFTER_SECONDS = 30
#: Stripe's default: events signed more than five minutes ago are refused (replay protection).
DEFAULT_TOLERANCE_SECONDS = 300
TEMPORAL_UNAVAILABLE = "Temporal unavailable, retry later"
DATABASE_UNAVAILABLE = "database unavailable, retry later"
#: The codec server's browser session (`POST /codec/login`); it holds a digest of the token.
OPERATOR_SESSION_COOKIE = "dunning_codec_session"

#: Temporal answers meaning "not now": the caller should retry later.
TRANSIENT_RPC_STATUSES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.UNKNOWN,
    }
)


# --- the one 503 ------------------------------------------------------------------------


class ServiceUnavailable(HTTPException):
    """What the API needs (Temporal, a secret, the keys) is missing or unreachable: 503 with
    Retry-After, so Stripe, Twilio and the SaaS app retry. create_app logs every one."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


@contextmanager
def database_or_503() -> Iterator[None]:
    """Around the routes' database calls: an unreachable database is a 503, so the caller retries."""
    try:
        yield
    except DatabaseUnavailable as exc:
        log.warning("database unavailable", error=str(exc))
        raise ServiceUnavailable(DATABASE_UNAVAILABLE) from exc


def is_transient(exc: BaseException) -> bool:
    """True for errors meaning "Temporal is not reachable right now"."""
    if isinstance(exc, RPCError):
        return exc.status in TRANSIENT_RPC_STATUSES
    if isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect"):
        return True  # a lazy client that cannot (re)connect
    return isinstance(exc, (ServiceUnavailable, ConnectionError, TimeoutError, asyncio.TimeoutError))


# --- settings, policies, timings ----------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """How patient the API is with Temporal and Stripe (tests shorten them)."""

    rpc_timeout: timedelta = RPC_TIMEOUT
    webhook_tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS
    #: Pauses before listing a customer's open cases again when the first listing found none
    #: (visibility lags a just-started case).
    visibility_rechecks: tuple[float, ...] = (0.5, 1.5)


def get_settings(request: Request) -> Settings:
    """The app's settings; a router mounted on an app that has none reads the environment."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else Settings()


def get_policies(request: Request) -> dict[str, Policy]:
    policies: dict[str, Policy] = request.app.state.policies
    return policies


def get_experiments(request: Request) -> list[Experiment]:
    """The running experiments (`experiments.toml` beside the policies); none on an app without."""
    experiments: list[Experiment] = getattr(request.app.state, "experiments", None) or []
    return experiments


def get_timings(request: Request) -> Timings:
    return getattr(request.app.state, "timings", None) or Timings()


def get_failure_lookup(request: Request) -> FailureLookup | None:
    return getattr(request.app.state, "failure_lookup", None)


def get_card_readers(request: Request) -> CardReaders:
    return getattr(request.app.state, "card_readers", None) or CardReaders()


SettingsDep = Annotated[Settings, Depends(get_settings)]
PoliciesDep = Annotated[dict[str, Policy], Depends(get_policies)]
ExperimentsDep = Annotated[list[Experiment], Depends(get_experiments)]
TimingsDep = Annotated[Timings, Depends(get_timings)]
FailureLookupDep = Annotated[FailureLookup | None, Depends(get_failure_lookup)]
CardReadersDep = Annotated[CardReaders, Depends(get_card_readers)]


# --- Temporal -------------------------------------------------------------------------------


class TemporalGateway:
    """Connects on first use and keeps the client; a failed connect is retried on the next request,
    so the API starts (and answers 503) while Temporal is still coming up."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    result = self._factory()
                    self._client = await result if inspect.isawaitable(result) else result
                except Exception as exc:
                    log.warning("cannot connect to Temporal", error=type(exc).__name__)
                    raise ServiceUnavailable(TEMPORAL_UNAVAILABLE) from exc
        return self._client


def get_temporal_gateway(request: Request) -> TemporalGateway:
    """For endpoints that need Temporal only for some requests (a Stripe event we ignore does not)."""
    gateway: TemporalGateway = request.app.state.temporal
    return gateway


async def get_temporal_client(gateway: Annotated[TemporalGateway, Depends(get_temporal_gateway)]) -> Client:
    """Raises `ServiceUnavailable` while Temporal is unreachable."""
    return await gateway.client()


TemporalGatewayDep = Annotated[TemporalGateway, Depends(get_temporal_gateway)]
TemporalDep = Annotated[Client, Depends(get_temporal_client)]


# --- the one token check: operators and the SaaS app -----------------------------------------


def get_api_token(settings: SettingsDep) -> str | None:
    return reveal(settings.dunning_api_token) or None


def same_secret(supplied: str, expected: str) -> bool:
    """Constant-time comparison, so timing tells nothing about the token."""
    return hmac.compare_digest(supplied.encode(), expected.encode())


def operator_session(token: str) -> str:
    """The session cookie's value: a digest of the token, so rotating the token ends every session."""
    return hmac.new(token.encode(), b"dunning codec session", hashlib.sha256).hexdigest()


def require_operator(
    expected: Annotated[str | None, Depends(get_api_token)],
    authorization: Annotated[str | None, Header()] = None,
    session: Annotated[str | None, Cookie(alias=OPERATOR_SESSION_COOKIE)] = None,
) -> str:
    """`DUNNING_API_TOKEN` as `Authorization: Bearer …`, or the codec server's session cookie
    (path /codec, so only the codec server ever receives it). Returns which one let the caller in."""
    if not expected:
        raise ServiceUnavailable("DUNNING_API_TOKEN is not configured")
    scheme, _, supplied = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and supplied.strip() and same_secret(supplied.strip(), expected):
        return "bearer"
    if session and same_secret(session, operator_session(expected)):
        return "session"
    raise HTTPException(
        401,
        "a valid bearer token is required (Authorization: Bearer $DUNNING_API_TOKEN)",
        headers={"WWW-Authenticate": "Bearer"},
    )


OperatorAuth = Annotated[str, Depends(require_operator)]

#: How long an operator's browser session (codec server, dashboard) lasts.
OPERATOR_SESSION_SECONDS = 8 * 3600


#: A login form's body is one short field.
MAX_LOGIN_BODY = 4096


async def typed_token(request: Request) -> str | None:
    """The `token` field of an operator's login form; None when the body is too long to be one."""
    body = await request.body()
    if len(body) > MAX_LOGIN_BODY:
        return None
    try:
        return parse_qs(body.decode(), max_num_fields=5).get("token", [""])[0]
    except (UnicodeDecodeError, ValueError):
        return ""


def start_operator_session(response: Response, request: Request, token: str, path: str) -> None:
    """After the operator typed the token in a login form: the session cookie, for `path` only."""
    response.set_cookie(
        OPERATOR_SESSION_COOKIE,
        operator_session(token),
        max_age=OPERATOR_SESSION_SECONDS,
        httponly=True,
        samesite="strict",  # the UI and the API are the same site (same host, or subdomains of one)
        secure=request.url.scheme == "https",
        path=path,
    )


# --- the codec server's keys --------------------------------------------------------------------


@lru_cache(maxsize=4)
def _codec_for(keys: str) -> EncryptionCodec | None:
    return EncryptionCodec.from_keys(keys)


def get_codec(settings: SettingsDep) -> EncryptionCodec | None:
    """The payload codec of `DUNNING_ENCRYPTION_KEYS` (None: payloads pass through unchanged)."""
    try:
        return _codec_for(reveal(settings.dunning_encryption_keys))
    except EncryptionConfigError as exc:
        log.error("codec server misconfigured", error=str(exc))
        raise ServiceUnavailable("encryption keys are misconfigured") from None


CodecDep = Annotated[EncryptionCodec | None, Depends(get_codec)]


def codec_cors_headers(request: Request, settings: SettingsDep) -> dict[str, str]:
    """The CORS headers that let the Temporal UI (`DUNNING_CODEC_CORS_ORIGINS`) read the codec
    server's answers; none for any other origin. Also left on `request.state.cors`, where the
    codec server's route class adds them to errors raised before its endpoint runs."""
    origin = request.headers.get("origin", "").rstrip("/")
    headers: dict[str, str] = {}
    if origin and origin in settings.codec_cors_origins():
        headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}
    request.state.cors = headers
    return headers


CorsDep = Annotated[dict[str, str], Depends(codec_cors_headers)]


# --- the SaaS app's update link -------------------------------------------------------------------


class UpdateLink(Protocol):
    """Sync or async: `(customer_id, status) -> url`; e.g. the payments backend's `update_link`."""

    def __call__(self, customer_id: str, status: CaseStatus) -> str | None | Awaitable[str | None]: ...


def hosted_invoice_link(customer_id: str, status: CaseStatus) -> str | None:
    """The first outstanding invoice's hosted page: pay it or add a new card in one click."""
    for invoice in status.outstanding_invoices:
        if https_only(invoice.hosted_invoice_url):
            return invoice.hosted_invoice_url
    return None


def get_update_link(request: Request) -> UpdateLink:
    """The banner links to the case's own page, like every message (the invoice's hosted page
    only where the app was built without links)."""
    links = getattr(request.app.state, "links", None)
    if not isinstance(links, CaseLinks):
        return hosted_invoice_link
    case_links = links

    async def case_page(customer_id: str, status: CaseStatus) -> str:
        workflow_id = status.case_id.partition("@")[0]
        return await case_links.issue(case_id=status.case_id, workflow_id=workflow_id, run_id="", customer_id=customer_id)

    return case_page


UpdateLinkDep = Annotated[UpdateLink, Depends(get_update_link)]


# --- the customer page: its links and where the card is updated --------------------------------


def get_case_links(request: Request) -> CaseLinks:
    links = getattr(request.app.state, "links", None)
    if not isinstance(links, CaseLinks):
        raise ServiceUnavailable("customer links are not configured")
    return links


def get_payments(request: Request) -> PaymentsBackend:
    """Where the page creates billing-portal sessions (Stripe, or the sandbox's stand-in)."""
    payments: PaymentsBackend = request.app.state.payments
    return payments


def get_payments_if_any(request: Request) -> PaymentsBackend | None:
    """The payments backend, or None on an app built without one (a router mounted alone)."""
    payments: PaymentsBackend | None = getattr(request.app.state, "payments", None)
    return payments


CaseLinksDep = Annotated[CaseLinks, Depends(get_case_links)]
PaymentsDep = Annotated[PaymentsBackend, Depends(get_payments)]
#: Where the Twilio webhook mirrors STOP and START (Stripe metadata); None where the app has none.
OptionalPaymentsDep = Annotated[PaymentsBackend | None, Depends(get_payments_if_any)]


# --- the database and the consent store ----------------------------------------------------------


@lru_cache(maxsize=8)
def _database(url: str) -> Database:
    return Database(url)


def get_database(request: Request, settings: SettingsDep) -> Database:
    """The app's database (migrated when the app started); a router mounted on an app that has
    none uses the settings' database."""
    database = getattr(request.app.state, "database", None)
    return database if isinstance(database, Database) else _database(settings.database_url())


DatabaseDep = Annotated[Database, Depends(get_database)]


class WritableConsent(Protocol):
    async def set_sms_opt_out(self, customer_id: str, opted_out: bool, source: str | None = None) -> None: ...


@dataclass(frozen=True)
class TwilioWebhookConfig:
    auth_token: str | None
    account_sid: str | None = None
    #: Where Twilio reaches us (the URL it signs) when that is not the request's own URL.
    public_url: str | None = None


def get_twilio_webhook_config(settings: SettingsDep) -> TwilioWebhookConfig:
    return TwilioWebhookConfig(
        auth_token=reveal(settings.twilio_auth_token) or None,
        account_sid=settings.twilio_account_sid,
        public_url=settings.dunning_public_url or None,
    )


def get_consent_store(database: DatabaseDep) -> WritableConsent:
    """The consent the workers read before every SMS, in the service's database."""
    return DatabaseConsentStore(database)


def get_phone_directory(database: DatabaseDep) -> PhoneDirectory:
    """Numbers we have texted (recorded by the workers in the same database)."""
    return DatabaseConsentStore(database)


TwilioConfigDep = Annotated[TwilioWebhookConfig, Depends(get_twilio_webhook_config)]
ConsentDep = Annotated[WritableConsent, Depends(get_consent_store)]
PhoneDirectoryDep = Annotated[PhoneDirectory, Depends(get_phone_directory)]


# --- the recovery ledger -------------------------------------------------------------------------


def get_ledger(database: DatabaseDep) -> DatabaseLedger:
    """The recovery ledger the workers write (`record_case`), in the same database."""
    return DatabaseLedger(database)


LedgerDep = Annotated[DatabaseLedger, Depends(get_ledger)]


# --- email suppressions ----------------------------------------------------------------------------


def get_email_suppressions(database: DatabaseDep) -> DatabaseEmailSuppressions:
    """Addresses SendGrid's Event Webhook stopped (the workers read them before every email)."""
    return DatabaseEmailSuppressions(database)


EmailSuppressionsDep = Annotated[DatabaseEmailSuppressions, Depends(get_email_suppressions)]
