"""A loopback Stripe for tests: real HTTP (pytest-httpserver), Stripe's own JSON shapes.

Every object it serves starts from Stripe's published `fixtures3.json` (every field of the
resource, current API version), with only the ids and the fields a test cares about changed.
It records what Stripe would have received and honours idempotency keys the way Stripe does
(a repeated key replays the first answer, errors included).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import html
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

FIXTURES_PATH = Path(__file__).parents[2] / "shared/stripe/fixtures3.json"


@cache
def _resources() -> dict[str, Any]:
    return json.loads(FIXTURES_PATH.read_text(encoding="utf-8"))["resources"]


def resource(kind: str, /, **overrides: Any) -> dict[str, Any]:
    """A fresh deep copy of Stripe's fixture for `kind`, top-level fields overridden."""
    obj = copy.deepcopy(_resources()[kind])
    obj.update(overrides)
    return obj


# --- resources ---------------------------------------------------------------------


def invoice(
    invoice_id: str = "in_test_1",
    *,
    status: str = "open",
    customer: str = "cus_test_1",
    subscription: str | None = "sub_test_1",
    amount_due: int = 4900,
    currency: str = "eur",
    subscription_metadata: dict[str, str] | None = None,
    hosted_invoice_url: str | None = "https://invoice.stripe.com/i/acct_test/in_test_1",
    default_payment_method: str | None = None,
    billing_reason: str = "subscription_cycle",
) -> dict[str, Any]:
    inv = resource(
        "invoice",
        id=invoice_id,
        status=status,
        customer=customer,
        amount_due=amount_due,
        amount_remaining=0 if status == "paid" else amount_due,
        amount_paid=amount_due if status == "paid" else 0,
        currency=currency,
        hosted_invoice_url=hosted_invoice_url,
        billing_reason=billing_reason,
        attempted=True,
        attempt_count=1,
        default_payment_method=default_payment_method,
    )
    # The current API names the subscription (and its metadata) under `parent`.
    if subscription:
        inv["parent"] = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"subscription": subscription, "metadata": subscription_metadata or {}},
        }
    else:
        inv["parent"] = None
    for line in inv["lines"]["data"]:
        line["invoice"] = invoice_id
        line["currency"] = currency
        line["amount"] = amount_due
    return inv


def customer(
    customer_id: str = "cus_test_1",
    *,
    name: str | None = "Ada Lovelace",
    email: str | None = "ada@example.com",
    phone: str | None = "+15555550123",
    preferred_locales: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    default_payment_method: str | None = "pm_card_old",
) -> dict[str, Any]:
    cus = resource(
        "customer",
        id=customer_id,
        name=name,
        email=email,
        phone=phone,
        preferred_locales=preferred_locales or [],
        metadata=metadata or {},
    )
    cus["invoice_settings"]["default_payment_method"] = default_payment_method
    return cus


def subscription(
    subscription_id: str = "sub_test_1",
    *,
    customer: str = "cus_test_1",
    status: str = "past_due",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    return resource(
        "subscription",
        id=subscription_id,
        customer=customer,
        status=status,
        metadata=metadata or {},
        pause_collection=None,
        canceled_at=None,
        ended_at=None,
        cancel_at=None,
    )


def payment_method(
    pm_id: str = "pm_card_new",
    *,
    customer: str | None = "cus_test_1",
    exp_month: int | None = None,
    exp_year: int | None = None,
    last4: str | None = None,
    brand: str | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """A card PaymentMethod; `fingerprint` names the card number (the same for one card saved by
    two customers, as Stripe does)."""
    pm = resource("payment_method", id=pm_id, customer=customer)
    card = pm["card"]
    for name, value in (
        ("exp_month", exp_month),
        ("exp_year", exp_year),
        ("last4", last4),
        ("brand", brand),
        ("fingerprint", fingerprint),
    ):
        if value is not None:
            card[name] = value
    return pm


def upcoming_invoice(
    *,
    customer: str = "cus_test_1",
    subscription: str = "sub_test_1",
    renewal: int,
    subscription_metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The object of `invoice.upcoming`: the renewal's invoice before it exists (no id), charged at `renewal`."""
    inv = invoice(customer=customer, subscription=subscription, subscription_metadata=subscription_metadata, status="draft")
    inv.pop("id")
    inv.update(next_payment_attempt=renewal, period_end=renewal, attempted=False, attempt_count=0, hosted_invoice_url=None)
    return inv


def portal_session(
    customer_id: str = "cus_test_1",
    *,
    session_id: str = "bps_test_1",
    url: str | None = None,
    return_url: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A `billing_portal.session` opening on "update payment method". `url` defaults to Stripe's
    address shape; FakeStripe serves its own sessions from itself (see `FakeStripe.portal_page`)."""
    session = resource(
        "billing_portal.session",
        id=session_id,
        customer=customer_id,
        url=url or f"https://billing.stripe.com/p/session/test_{customer_id}",
        return_url=return_url,
        created=created or int(time.time()),
    )
    session["flow"] = {
        "type": "payment_method_update",
        "after_completion": {"type": "portal_homepage", "hosted_confirmation": None, "redirect": None},
        "subscription_cancel": None,
        "subscription_update": None,
        "subscription_update_confirm": None,
    }
    return session


def card_error(
    *,
    code: str = "card_declined",
    decline_code: str | None = None,
    advice_code: str | None = None,
    message: str = "Your card was declined.",
    payment_method_id: str = "pm_card_old",
    invoice_id: str = "in_test_1",
) -> dict[str, Any]:
    """The body of Stripe's HTTP 402 for a declined invoice payment."""
    last_error: dict[str, Any] = {"type": "card_error", "code": code, "message": message}
    if decline_code:
        last_error["decline_code"] = decline_code
    if advice_code:
        last_error["advice_code"] = advice_code
    intent = resource(
        "payment_intent",
        id=f"pi_for_{invoice_id}",
        status="requires_action" if code == "authentication_required" else "requires_payment_method",
        last_payment_error=last_error,
        payment_method=None,
    )
    error = {
        **last_error,
        "doc_url": f"https://docs.stripe.com/error-codes/{code.replace('_', '-')}",
        "payment_intent": intent,
        "payment_method": payment_method(payment_method_id),
        "request_log_url": "https://dashboard.stripe.com/test/logs/req_test",
    }
    return {"error": error}


def failed_payment(
    invoice_id: str = "in_test_1",
    *,
    code: str = "card_declined",
    decline_code: str | None = "insufficient_funds",
    advice_code: str | None = None,
    payment_method_id: str = "pm_card_old",
    created: int = 1_763_700_000,
) -> dict[str, Any]:
    """An `invoice_payment` of the invoice whose PaymentIntent failed (expanded, as with
    `expand[]=payments.data.payment.payment_intent`)."""
    error = card_error(
        code=code,
        decline_code=decline_code,
        advice_code=advice_code,
        payment_method_id=payment_method_id,
        invoice_id=invoice_id,
    )["error"]
    intent = error["payment_intent"]
    intent["last_payment_error"] = {k: v for k, v in error.items() if k not in ("payment_intent", "request_log_url")}
    payment = resource(
        "invoice_payment",
        id=f"inpay_{invoice_id}_{created}",
        invoice=invoice_id,
        created=created,
        status="open",
        is_default=True,
        currency="eur",
    )
    payment["payment"] = {"type": "payment_intent", "payment_intent": intent}
    return payment


def api_error(status: int) -> dict[str, Any]:
    if status == 429:
        return {
            "error": {
                "type": "invalid_request_error",
                "code": "rate_limit",
                "message": "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
            }
        }
    if status == 401:
        return {
            "error": {
                "type": "invalid_request_error",
                "message": "Invalid API Key provided: sk_test_****************************abcd",
            }
        }
    if status == 404:
        return {
            "error": {
                "type": "invalid_request_error",
                "code": "resource_missing",
                "param": "id",
                "message": "No such invoice: 'in_missing'",
            }
        }
    return {"error": {"type": "api_error", "message": "An unknown error occurred"}}


# --- events ------------------------------------------------------------------------


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    event_id: str = "evt_test_1",
    previous_attributes: dict[str, Any] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    evt = resource(
        "event",
        id=event_id,
        type=event_type,
        created=created or int(time.time()),
        api_version="2025-10-29.clover",
        pending_webhooks=1,
    )
    evt["data"] = {"object": obj}
    if previous_attributes is not None:
        evt["data"]["previous_attributes"] = previous_attributes
    return evt


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header the way Stripe computes it: HMAC-SHA256 over "{t}.{body}"."""
    t = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={signature}"


# --- a stateful fake ------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer to `POST /v1/invoices/{id}/pay`: None body = pay the invoice."""

    status: int = 200
    body: dict[str, Any] | None = None
    delay: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    query: dict[str, str] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


@dataclass
class FakeStripe:
    """Invoices, customers and subscriptions served the way Stripe serves them."""

    server: HTTPServer
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    pay_script: list[Reply] = field(default_factory=list)
    portal_enabled: bool = True
    #: How long a billing-portal session opens (Stripe: a few minutes); 0 = expired at once.
    portal_session_ttl: float = 300.0
    #: The fake's clock (seconds since the epoch) for portal sessions: tests move it to expire them.
    clock: Callable[[], float] = time.time
    #: Sessions created by `POST /v1/billing_portal/sessions`, by id, with their expiry (`clock()`).
    portal_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    portal_expires_at: dict[str, float] = field(default_factory=dict)
    #: Payment methods attached through the fake portal, by id.
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Called (on the server's thread) with the PaymentMethod the portal attached, before the
    #: redirect back: a test posts the signed `payment_method.attached` webhook from here.
    on_payment_method_attached: Callable[[dict[str, Any]], None] | None = None
    requests: list[Seen] = field(default_factory=list)
    _replays: dict[str, tuple[int, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    on_retrieve_invoice: list[Reply] = field(default_factory=list)
    #: Scripted answers to `POST /v1/customers/{id}` (outages), before the update applies.
    on_update_customer: list[Reply] = field(default_factory=list)
    #: `invoice_payment`s served when a request expands the invoice's `payments`.
    invoice_payments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        route = self.server.expect_request
        route(re.compile(r"^/v1/invoices/[^/]+/pay$"), method="POST").respond_with_handler(self._pay)
        route(re.compile(r"^/v1/invoices/[^/]+$"), method="GET").respond_with_handler(self._get_invoice)
        route("/v1/invoices", method="GET").respond_with_handler(self._list_invoices)
        route(re.compile(r"^/v1/customers/[^/]+$")).respond_with_handler(self._customer)
        route(re.compile(r"^/v1/subscriptions/[^/]+$")).respond_with_handler(self._subscription)
        route("/v1/subscriptions", method="GET").respond_with_handler(self._list_subscriptions)
        route(re.compile(r"^/v1/payment_methods/[^/]+$"), method="GET").respond_with_handler(self._payment_method)
        route(re.compile(r"^/v1/customers/[^/]+/payment_methods$"), method="GET").respond_with_handler(
            self._customer_payment_methods
        )
        route("/v1/billing_portal/sessions", method="POST").respond_with_handler(self._portal)
        route(re.compile(r"^/p/session/[^/]+$")).respond_with_handler(self._portal_page)

    @property
    def base_url(self) -> str:
        return self.server.url_for("").rstrip("/")

    def add(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            store = {
                "invoice": self.invoices,
                "customer": self.customers,
                "subscription": self.subscriptions,
                "payment_method": self.payment_methods,
            }
            store[obj["object"]][obj["id"]] = obj

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or re.fullmatch(path, r.path))
        ]

    def expire_portal_sessions(self) -> None:
        """Every session created so far expires now (as minutes passing would)."""
        now = self.clock()
        with self._lock:
            for session_id in self.portal_expires_at:
                self.portal_expires_at[session_id] = min(self.portal_expires_at[session_id], now - 1)

    def portal_session_live(self, session_id: str) -> bool:
        return session_id in self.portal_expires_at and self.clock() < self.portal_expires_at[session_id]

    @property
    def pay_requests(self) -> list[Seen]:
        return self.seen("POST", r"/v1/invoices/[^/]+/pay")

    # --- handlers -----------------------------------------------------------------

    def _record(self, request: Request) -> Seen:
        form = dict(parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
        seen = Seen(request.method, request.path, form, dict(request.headers), dict(request.args))
        with self._lock:
            self.requests.append(seen)
        return seen

    @staticmethod
    def _json(status: int, body: Any) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    def _missing(self, kind: str, object_id: str) -> Response:
        return self._json(
            404,
            {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "id",
                    "message": f"No such {kind}: '{object_id}'",
                }
            },
        )

    def _get_invoice(self, request: Request) -> Response:
        self._record(request)
        if self.on_retrieve_invoice:
            reply = self.on_retrieve_invoice.pop(0)
            time.sleep(reply.delay)
            return self._json(reply.status, reply.body)
        invoice_id = request.path.rsplit("/", 1)[1]
        if invoice_id not in self.invoices:
            return self._missing("invoice", invoice_id)
        body = self.invoices[invoice_id]
        if any(v.startswith("payments") for k, v in request.args.items(multi=True) if k.startswith("expand")):
            payments = self.invoice_payments.get(invoice_id, [])
            body = {
                **body,
                "payments": {
                    "object": "list",
                    "data": payments,
                    "has_more": False,
                    "url": f"/v1/invoices/{invoice_id}/payments",
                },
            }
        return self._json(200, body)

    def _list_invoices(self, request: Request) -> Response:
        """`GET /v1/invoices`: Stripe's list, newest first, filtered by `status`, `collection_method`,
        `customer`, `subscription`, paged by `limit` (default 10, at most 100) and `starting_after`."""
        self._record(request)
        args = request.args
        found = sorted(self.invoices.values(), key=lambda i: (i.get("created") or 0, i["id"]), reverse=True)
        for name in ("status", "collection_method", "customer"):
            if name in args:
                found = [i for i in found if i.get(name) == args[name]]
        if "subscription" in args:
            found = [
                i
                for i in found
                if ((i.get("parent") or {}).get("subscription_details") or {}).get("subscription")
                == args["subscription"]
            ]
        if "starting_after" in args:
            ids = [i["id"] for i in found]
            found = found[ids.index(args["starting_after"]) + 1 :] if args["starting_after"] in ids else []
        limit = max(1, min(100, int(args.get("limit", 10))))
        return self._json(
            200, {"object": "list", "data": found[:limit], "has_more": len(found) > limit, "url": "/v1/invoices"}
        )

    def _pay(self, request: Request) -> Response:
        seen = self._record(request)
        key = seen.idempotency_key
        if key and key in self._replays:
            status, body = self._replays[key]
            return Response(
                body, status=status, content_type="application/json", headers={"Idempotent-Replayed": "true"}
            )
        invoice_id = request.path.split("/")[3]
        if invoice_id not in self.invoices:
            return self._missing("invoice", invoice_id)
        reply = self.pay_script.pop(0) if self.pay_script else Reply()
        time.sleep(reply.delay)
        if reply.body is None and reply.status == 200:
            inv = self.invoices[invoice_id]
            inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0)
            inv["status_transitions"]["paid_at"] = int(time.time())
            body = json.dumps(inv)
        else:
            body = json.dumps(reply.body)
        # Stripe stores the answer under the key unless it failed with a 5xx / 429 / 409.
        if key and reply.status < 500 and reply.status not in (409, 429):
            self._replays[key] = (reply.status, body)
        return Response(body, status=reply.status, content_type="application/json")

    def _customer(self, request: Request) -> Response:
        seen = self._record(request)
        customer_id = request.path.rsplit("/", 1)[1]
        if customer_id not in self.customers:
            return self._missing("customer", customer_id)
        customer = self.customers[customer_id]
        if request.method == "POST" and self.on_update_customer:
            reply = self.on_update_customer.pop(0)
            return self._json(reply.status, reply.body)
        if request.method == "POST":
            if "invoice_settings[default_payment_method]" in seen.form:
                customer.setdefault("invoice_settings", {})["default_payment_method"] = seen.form[
                    "invoice_settings[default_payment_method]"
                ]
            if "default_source" in seen.form:
                customer["default_source"] = seen.form["default_source"]
            for name, value in seen.form.items():
                match = re.fullmatch(r"metadata\[(.+)\]", name)
                if match:  # Stripe: an empty value deletes the key
                    metadata = customer.setdefault("metadata", {})
                    if value == "":
                        metadata.pop(match.group(1), None)
                    else:
                        metadata[match.group(1)] = value
        expanded = {v for k, v in seen.query.items() if k.startswith("expand")}
        if "tax" not in expanded:  # like Stripe: `tax` is sent only when expanded
            return self._json(200, {k: v for k, v in customer.items() if k != "tax"})
        return self._json(200, customer)

    def _subscription(self, request: Request) -> Response:
        seen = self._record(request)
        sub_id = request.path.rsplit("/", 1)[1]
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            return self._missing("subscription", sub_id)
        if request.method == "POST":
            if "pause_collection" in seen.form and seen.form["pause_collection"] == "":
                sub["pause_collection"] = None
            elif "pause_collection[behavior]" in seen.form:
                sub["pause_collection"] = {"behavior": seen.form["pause_collection[behavior]"], "resumes_at": None}
            for name in ("default_payment_method", "default_source"):
                if name in seen.form:
                    sub[name] = seen.form[name]
            for name, value in seen.form.items():
                match = re.fullmatch(r"metadata\[(.+)\]", name)
                if match:
                    if value == "":
                        sub["metadata"].pop(match.group(1), None)
                    else:
                        sub["metadata"][match.group(1)] = value
        elif request.method == "DELETE":
            sub.update(status="canceled", canceled_at=int(time.time()), ended_at=int(time.time()))
        return self._json(200, sub)

    def _list_subscriptions(self, request: Request) -> Response:
        """`GET /v1/subscriptions`: filtered by `customer` and `status` (one page: tests have few)."""
        self._record(request)
        found = [
            sub
            for sub in self.subscriptions.values()
            if all(sub.get(name) == request.args[name] for name in ("customer", "status") if name in request.args)
        ]
        return self._json(200, {"object": "list", "data": found, "has_more": False, "url": "/v1/subscriptions"})

    def _payment_method(self, request: Request) -> Response:
        self._record(request)
        pm_id = request.path.rsplit("/", 1)[1]
        if pm_id not in self.payment_methods:
            return self._missing("payment_method", pm_id)
        return self._json(200, self.payment_methods[pm_id])

    def _customer_payment_methods(self, request: Request) -> Response:
        """`GET /v1/customers/{id}/payment_methods?type=card`: the customer's saved payment methods."""
        self._record(request)
        customer_id = request.path.split("/")[3]
        if customer_id not in self.customers:
            return self._missing("customer", customer_id)
        kind = request.args.get("type")
        found = [
            pm
            for pm in self.payment_methods.values()
            if pm.get("customer") == customer_id and (kind is None or pm.get("type") == kind)
        ]
        url = f"/v1/customers/{customer_id}/payment_methods"
        return self._json(200, {"object": "list", "data": found, "has_more": False, "url": url})

    def _portal(self, request: Request) -> Response:
        seen = self._record(request)
        if not self.portal_enabled:
            return self._json(
                400,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": "You can't create a portal session in test mode until you save your "
                        "customer portal settings in test mode.",
                    }
                },
            )
        with self._lock:
            session_id = f"bps_fake{len(self.portal_sessions) + 1:04d}{next(_serial):06d}"
            session = portal_session(
                seen.form.get("customer", "cus_unknown"),
                session_id=session_id,
                url=f"{self.base_url}/p/session/{session_id}",
                return_url=seen.form.get("return_url"),
                created=int(self.clock()),
            )
            self.portal_sessions[session_id] = session
            self.portal_expires_at[session_id] = self.clock() + self.portal_session_ttl
        return self._json(200, session)

    def _portal_page(self, request: Request) -> Response:
        """The hosted portal, reduced to its "update payment method" flow: `GET` shows a form (a
        card choice and Save) while the session lives, 410 once it expired; `POST` attaches the
        chosen card, makes it the customer's default, calls `on_payment_method_attached` and
        303s to the session's `return_url`."""
        seen = self._record(request)
        session_id = request.path.rsplit("/", 1)[1]
        session = self.portal_sessions.get(session_id)
        if session is None:
            return _html(404, "Not found", "<h1>This page doesn't exist</h1>")
        if not self.portal_session_live(session_id):
            return _html(
                410,
                "Session expired",
                "<h1>This session has expired</h1><p>Please return to the page you came from and try again.</p>",
            )
        if request.method == "GET":
            return _html(200, "Update payment method", _portal_form(session_id))
        card = PORTAL_CARDS.get(seen.form.get("card", ""))
        if card is None:
            return _html(400, "Choose a card", "<h1>Please choose a card</h1>" + _portal_form(session_id))
        customer_id = session["customer"]
        with self._lock:
            pm_id = f"pm_portal_{len(self.payment_methods) + 1}_{next(_serial)}"
            pm = payment_method(pm_id, customer=customer_id)
            pm["card"].update(
                brand=card["brand"],
                last4=card["last4"],
                exp_month=12,
                exp_year=2030,
                fingerprint=f"fpfake{card['brand']}{card['last4']}",
            )
            self.payment_methods[pm_id] = pm
            if customer_id in self.customers:
                self.customers[customer_id].setdefault("invoice_settings", {})["default_payment_method"] = pm_id
        if self.on_payment_method_attached is not None:
            self.on_payment_method_attached(pm)
        return Response(status=303, headers={"Location": session.get("return_url") or f"{self.base_url}/"})


#: The cards the fake portal offers: value → brand and last four digits.
PORTAL_CARDS = {
    "visa": {"brand": "visa", "last4": "4242", "label": "Visa ending in 4242"},
    "mastercard": {"brand": "mastercard", "last4": "4444", "label": "Mastercard ending in 4444"},
}
_serial = itertools.count(1)


def _portal_form(session_id: str) -> str:
    choices = "".join(
        f'<p><input type="radio" name="card" id="card-{value}" value="{value}"{" checked" if i == 0 else ""}>'
        f' <label for="card-{value}">{html.escape(card["label"])}</label></p>'
        for i, (value, card) in enumerate(PORTAL_CARDS.items())
    )
    return (
        "<h1>Update payment method</h1>"
        f'<form method="post" action="/p/session/{html.escape(session_id)}">'
        f"<fieldset><legend>Card</legend>{choices}</fieldset>"
        '<button type="submit">Save</button></form>'
    )


def _html(status: int, title: str, body: str) -> Response:
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><main>{body}</main></body></html>"
    )
    return Response(page, status=status, content_type="text/html; charset=utf-8")

Handler = Callable[[Request], Response]
