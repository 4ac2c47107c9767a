"""A loopback Stripe for the benchmark, in its own process: `python -m bench.fake_stripe PORT`.

It answers what the worker and the API ask of Stripe during a case (invoices, the failed payment
behind `invoice.payment_failed`, paying an invoice, customers, subscriptions, portal sessions)
with bodies built from Stripe's published fixtures (tests/stripe_fakes.py), and stamps the
arrival of every `POST /v1/invoices/{id}/pay` with the wall clock (`time.time()`), so the
benchmark can measure webhook → charge reaction across processes.

Conventions: an invoice id containing `_hard_` failed with `expired_card` (a hard decline),
any other with `insufficient_funds`. Every invoice is open until paid here.

`GET /_bench/arrivals` → `{"pay": {invoice_id: first arrival time}}`;
`GET /_bench/stats` → request counts by route.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import stripe_fakes as sf  # noqa: E402  (Stripe's fixture shapes)

_lock = threading.Lock()
_invoices: dict[str, dict[str, Any]] = {}
_customers: dict[str, bytes] = {}
_arrivals: dict[str, float] = {}
_replays: dict[str, bytes] = {}
_counts: Counter[str] = Counter()

_INVOICE = re.compile(r"^/v1/invoices/([^/]+)$")
_PAY = re.compile(r"^/v1/invoices/([^/]+)/pay$")
_CUSTOMER = re.compile(r"^/v1/customers/([^/]+)$")
_SUBSCRIPTION = re.compile(r"^/v1/subscriptions/([^/]+)$")


def _invoice(invoice_id: str) -> dict[str, Any]:
    with _lock:
        inv = _invoices.get(invoice_id)
        if inv is None:
            inv = _invoices[invoice_id] = sf.invoice(invoice_id, hosted_invoice_url=None)
        return inv


def _failed_payment(invoice_id: str) -> dict[str, Any]:
    if "_hard_" in invoice_id:
        return sf.failed_payment(invoice_id, code="expired_card", decline_code="expired_card")
    return sf.failed_payment(invoice_id, decline_code="insufficient_funds")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK pools connections

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes | dict[str, Any]) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_bench")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        return dict(parse_qsl(raw, keep_blank_values=True))

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        path, query = url.path, url.query
        if path == "/_bench/arrivals":
            with _lock:
                self._send(200, {"pay": dict(_arrivals)})
            return
        if path == "/_bench/stats":
            with _lock:
                self._send(200, dict(_counts))
            return
        if m := _INVOICE.match(path):
            _counts["GET invoice" + (" (expand payments)" if "payments" in query else "")] += 1
            body = dict(_invoice(m.group(1)))
            if "payments" in query:
                body["payments"] = {
                    "object": "list",
                    "data": [_failed_payment(m.group(1))],
                    "has_more": False,
                    "url": f"/v1/invoices/{m.group(1)}/payments",
                }
            self._send(200, body)
            return
        if m := _CUSTOMER.match(path):
            _counts["GET customer"] += 1
            customer_id = m.group(1)
            data = _customers.get(customer_id)
            if data is None:
                data = _customers[customer_id] = json.dumps(sf.customer(customer_id)).encode()
            self._send(200, data)
            return
        if m := _SUBSCRIPTION.match(path):
            _counts["GET subscription"] += 1
            self._send(200, sf.subscription(m.group(1)))
            return
        self._send(404, {"error": {"type": "invalid_request_error", "message": f"no route {path}"}})

    def do_POST(self) -> None:  # noqa: N802
        arrived = time.time()
        path = urlsplit(self.path).path
        form = self._body()
        if m := _PAY.match(path):
            _counts["POST invoice pay"] += 1
            invoice_id = m.group(1)
            key = self.headers.get("Idempotency-Key")
            with _lock:
                _arrivals.setdefault(invoice_id, arrived)
                if key and key in _replays:
                    self._send(200, _replays[key])
                    return
            inv = _invoice(invoice_id)
            with _lock:
                inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0)
                data = json.dumps(inv).encode()
                if key:
                    _replays[key] = data
            self._send(200, data)
            return
        if path == "/v1/billing_portal/sessions":
            _counts["POST portal session"] += 1
            self._send(200, sf.portal_session(form.get("customer", "cus_unknown")))
            return
        if m := _SUBSCRIPTION.match(path):
            _counts["POST subscription"] += 1
            self._send(200, sf.subscription(m.group(1)))
            return
        self._send(404, {"error": {"type": "invalid_request_error", "message": f"no route {path}"}})

    def do_DELETE(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if m := _SUBSCRIPTION.match(path):
            _counts["DELETE subscription"] += 1
            self._send(200, sf.subscription(m.group(1), status="canceled"))
            return
        self._send(404, {"error": {"type": "invalid_request_error", "message": f"no route {path}"}})


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
