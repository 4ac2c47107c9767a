"""Logging for every process: structlog, one line per event, and nothing secret in it.

`configure_logging()` (called by the worker, the API and the CLI at start) routes structlog
and the standard library's loggers (uvicorn, temporalio, httpx, stripe…) through one chain
whose last step before rendering is `redact`:

- values under secret-looking keys (authorization, api_key, secret, token, password, cookie,
  signature, cvc…) become `[redacted]`;
- values under contact keys (email, phone, to, recipient…) are masked to what an operator needs
  to tell two customers apart: `a***@example.com`, `***0123`;
- anywhere in any string (messages, exceptions, nested values): card numbers (Luhn-valid
  13–19 digits) become `[card]`, e-mail addresses and phone numbers are masked, bearer tokens
  and provider keys (`sk_live_…`, `whsec_…`, `SG.…`) become `[redacted]`.

Level and format come from `DUNNING_LOG_LEVEL` (default INFO) and `DUNNING_LOG_FORMAT` (`json`,
or `console`; default console on a terminal, json otherwise): each process passes them from
its `Settings`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "[redacted]"
CARD = "[card]"

_SECRET_KEY_PARTS = (
    "authorization",
    "api_key",
    "apikey",
    "secret",
    "token",
    "password",
    "passwd",
    "cookie",
    "signature",
    "credential",
    "private_key",
    "cvc",
    "cvv",
    "card_number",
    "iban",
    "auth",
)
_SECRET_KEYS_EXACT = frozenset({"pan", "number", "exp_month", "exp_year", "fingerprint", "client_secret"})
_CONTACT_KEY_PARTS = ("email", "phone", "recipient", "mobile")
_CONTACT_KEYS_EXACT = frozenset(
    {"to", "from_", "from", "cc", "bcc", "reply_to", "address", "billing_address", "shipping_address", "from_number"}
)
# Keys that contain a secret-looking part but only ever hold harmless values.
_SAFE_KEYS = frozenset({"token_type", "tokens", "author", "auth_method", "has_email", "email_backend"})

_EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# International numbers (how Stripe and Twilio store them) and US-style `(555) 555-0123`; bare digit
# runs are left alone: they are amounts, timestamps and ids far more often than phone numbers.
_PHONE = re.compile(r"(?<![\w+])\+\d[\d ().-]{6,18}\d(?!\w)|\(\d{3}\)\s?\d{3}[ -]\d{4}(?!\d)")
_CARD_CANDIDATE = re.compile(r"(?<!\w)\d(?:[ -]?\d){12,18}(?!\w)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
# A customer's link opens their page: like a password, it never reaches a log (access logs included).
_CUSTOMER_LINK = re.compile(r"(/c/)[A-Za-z0-9_-]{8,64}")
_PROVIDER_KEYS = re.compile(
    r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}|\bwhsec_[A-Za-z0-9+/=]{8,}|\bSG\.[\w-]{10,}\.[\w-]{10,}"
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return CARD if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if len(digits) < 8:
        return match.group(0)  # too short for a phone number: an amount, a count, a year…
    return "***" + digits[-4:]


def mask_email(value: str) -> str:
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", value)


def scrub_text(text: str) -> str:
    """Redact what must never be logged from free text."""
    text = _PROVIDER_KEYS.sub(REDACTED, text)
    text = _CUSTOMER_LINK.sub(rf"\g<1>{REDACTED}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _CARD_CANDIDATE.sub(_mask_card, text)
    text = mask_email(text)
    return _PHONE.sub(_mask_phone, text)


def _normal(key: object) -> str:
    return str(key).lower().replace("-", "_")


def _is_secret_key(key: str) -> bool:
    return key not in _SAFE_KEYS and (key in _SECRET_KEYS_EXACT or any(part in key for part in _SECRET_KEY_PARTS))


def _is_contact_key(key: str) -> bool:
    return key not in _SAFE_KEYS and (key in _CONTACT_KEYS_EXACT or any(p in key for p in _CONTACT_KEY_PARTS))


def _mask_contact(value: Any) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, (list, tuple, set)):
        return [_mask_contact(v) for v in value]
    text = str(value)
    if "@" in text:
        masked = mask_email(text)
        return masked if masked != text else REDACTED
    digits = re.sub(r"\D", "", text)
    if len(digits) >= 7:
        return "***" + digits[-4:]
    return scrub_text(text)  # no address or number in it (a backend name, a template): keep it


def scrub(value: Any, key: str | None = None, _depth: int = 0) -> Any:
    """Redact a logged value, recursing into mappings and sequences."""
    if key is not None:
        normal = _normal(key)
        if _is_secret_key(normal):
            return REDACTED if value not in (None, "") else value
        if _is_contact_key(normal):
            return _mask_contact(value)
    if _depth > 8:
        return REDACTED  # deeper than anything we log on purpose: don't spend time on it
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, bytes):
        return scrub_text(value.decode("utf-8", errors="replace"))
    if isinstance(value, Mapping):
        return {k: scrub(v, k, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(v, None, _depth + 1) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, BaseException):
        return scrub_text(f"{type(value).__name__}: {value}")
    # pydantic models and other objects: log their scrubbed text, never their raw repr.
    return scrub_text(str(value))


def redact(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: put last before the renderer (after `format_exc_info`)."""
    return {k: v if k in _UNTOUCHED or str(k).startswith("_") else scrub(v, k) for k, v in event_dict.items()}


_UNTOUCHED = frozenset({"level", "timestamp", "logger", "logger_name"})


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.stdlib.ExtraAdder(),
        redact,
    ]


def configure_logging(level: str | None = None, fmt: str | None = None, stream: Any = None) -> None:
    """Configure structlog and the standard library once, for the whole process."""
    level = (level or "INFO").upper()
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(default=str)
    )
    shared = _shared_processors()
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn installs its own handlers (not propagating to the root): route it through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        served = logging.getLogger(name)
        served.handlers.clear()
        served.propagate = True
    # Libraries that log request details at DEBUG (headers, bodies) stay at WARNING or above.
    for noisy in ("httpx", "httpcore", "stripe", "twilio", "urllib3", "python_http_client"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
