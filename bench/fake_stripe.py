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

from fakes import stripe_api as sf  # noqa: E402  (Stripe's fixture shapes)

_lock = threading.Lock()
_paid: set[str] = set()
_arrivals: dict[str, float] = {}
_replays: dict[str, bytes] = {}
_counts: Counter[str] = Counter()

_INVOICE = re.compile(r"^/v1/invoices/([^/]+)$")
_PAY = re.compile(r"^/v1/invoices/([^/]+)/pay$")
_CUSTOMER = re.compile(r"^/v1/customers/([^/]+)$")
_SUBSCRIPTION = re.compile(r"^/v1/subscriptions/([^/]+)$")

# Bodies are built once from the fixtures around a placeholder id, then only the id is swapped:
# the fake must cost next to nothing, or the benchmark measures the fake.
_ID = "in_PLACEHOLDER0"


def _template(obj: Any) -> str:
    return json.dumps(obj)


def _invoice_body(status: str, expand: str | None) -> str:
    inv = sf.invoice(_ID, status=status, hosted_invoice_url=None)
    if expand:
        code = {"hard": "expired_card", "soft": "card_declined"}[expand]
        decline = "expired_card" if expand == "hard" else "insufficient_funds"
        inv["payments"] = {
            "object": "list",
            "data": [sf.failed_payment(_ID, code=code, decline_code=decline)],
            "has_more": False,
            "url": f"/v1/invoices/{_ID}/payments",
        }
    return _template(inv)


_TEMPLATES = {
    ("open", None): _invoice_body("open", None),
    ("paid", None): _invoice_body("paid", None),
    ("open", "hard"): _invoice_body("open", "hard"),
    ("open", "soft"): _invoice_body("open", "soft"),
}
_CUSTOMER_TEMPLATE = _template(sf.customer("cus_PLACEHOLDER0"))
_SUBSCRIPTION_TEMPLATES = {
    status: _template(sf.subscription("sub_PLACEHOLDER0", status=status)) for status in ("past_due", "canceled")
}
_PORTAL_TEMPLATE = _template(sf.portal_session("cus_PLACEHOLDER0"))


def _invoice(invoice_id: str, *, expand: bool = False) -> bytes:
    status = "paid" if invoice_id in _paid else "open"
    kind = ("hard" if "_hard_" in invoice_id else "soft") if expand and status == "open" else None
    return _TEMPLATES[(status, kind)].replace(_ID, invoice_id).encode()


def _with_id(template: str, placeholder: str, value: str) -> bytes:
    return template.replace(placeholder, value).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the SDK pools connections
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle + the client's delayed
    # ACK hold every answer ~40 ms, and the benchmark would measure that.
    disable_nagle_algorithm = True

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
            expand = "payments" in query
            _counts["GET invoice" + (" (expand payments)" if expand else "")] += 1
            self._send(200, _invoice(m.group(1), expand=expand))
            return
        if m := _CUSTOMER.match(path):
            _counts["GET customer"] += 1
            self._send(200, _with_id(_CUSTOMER_TEMPLATE, "cus_PLACEHOLDER0", m.group(1)))
            return
        if m := _SUBSCRIPTION.match(path):
            _counts["GET subscription"] += 1
            self._send(200, _with_id(_SUBSCRIPTION_TEMPLATES["past_due"], "sub_PLACEHOLDER0", m.group(1)))
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
                data = _replays.get(key or "")
                if data is None:
                    _paid.add(invoice_id)
                    data = _invoice(invoice_id)
                    if key:
                        _replays[key] = data
            self._send(200, data)
            return
        if path == "/v1/billing_portal/sessions":
            _counts["POST portal session"] += 1
            self._send(200, _with_id(_PORTAL_TEMPLATE, "cus_PLACEHOLDER0", form.get("customer", "cus_unknown")))
            return
        if m := _SUBSCRIPTION.match(path):
            _counts["POST subscription"] += 1
            self._send(200, _with_id(_SUBSCRIPTION_TEMPLATES["past_due"], "sub_PLACEHOLDER0", m.group(1)))
            return
        self._send(404, {"error": {"type": "invalid_request_error", "message": f"no route {path}"}})

    def do_DELETE(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        if m := _SUBSCRIPTION.match(path):
            _counts["DELETE subscription"] += 1
            self._send(200, _with_id(_SUBSCRIPTION_TEMPLATES["canceled"], "sub_PLACEHOLDER0", m.group(1)))
            return
        self._send(404, {"error": {"type": "invalid_request_error", "message": f"no route {path}"}})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of new connections overflowed it and
    # waited for SYN retransmits (~1 s p99s that were the fake's, not ours).
    request_queue_size = 256


def main() -> None:
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
