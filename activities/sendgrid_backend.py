"""Email through SendGrid's v3 Mail Send API with the official `sendgrid` SDK.

The SDK is synchronous (urllib underneath), so every call runs in a thread and never blocks
the worker's event loop. `SENDGRID_API_HOST` points it at another host (tests, EU region).

Errors, as `send_notification` expects them:
- 429, 5xx, timeouts, connection errors → `ProviderUnavailable` (Temporal retries);
- the address is on SendGrid's bounce list, or SendGrid calls it invalid → `RecipientUnreachable`
  (final for email; the case records it);
- any other 4xx (bad key, bad sender, malformed request) → `ProviderRejected` with SendGrid's own
  reason (final, shown in the case).

Idempotency: SendGrid's Mail Send has no idempotency key. The key travels as the custom arg
`idempotency_key` (it comes back in event webhooks, with the custom args `customer_id` and
`case_id`, so a bounce or spam report finds its customer: starter/api/routes/sendgrid_webhook.py) and the header `X-Idempotency-Key`, and the
backend remembers keys it already sent in this process. The residual risk: a 5xx or timeout
*after* SendGrid accepted the message makes the activity retry send it a second time.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import structlog
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Category, CustomArg, Email, Header, Mail, ReplyTo

from activities.backends import ProviderRejected, ProviderUnavailable, RecipientUnreachable

log = structlog.get_logger(__name__)

DEFAULT_HOST = "https://api.sendgrid.com"
IDEMPOTENCY_HEADER = "X-Idempotency-Key"


def _reason(error: HTTPError) -> str:
    """SendGrid's own words: `{"errors": [{"message": ..., "field": ...}]}`."""
    try:
        body = json.loads(error.body.decode("utf-8") if isinstance(error.body, bytes) else error.body)
        messages = [
            f"{e.get('message')}" + (f" ({e['field']})" if e.get("field") else "") for e in body.get("errors", [])
        ]
        if messages:
            return "; ".join(messages)
    except (ValueError, AttributeError, TypeError):
        pass
    return f"{error.status_code} {error.reason}"


def _is_bad_recipient(error: HTTPError) -> bool:
    try:
        body = json.loads(error.body.decode("utf-8") if isinstance(error.body, bytes) else error.body)
    except (ValueError, AttributeError, TypeError):
        return False
    for item in body.get("errors", []):
        field = str(item.get("field") or "")
        message = str(item.get("message") or "").lower()
        if field.startswith("personalizations") and field.endswith(".email") and ".to." in field:
            return True
        if "does not contain a valid address" in message or "bounce" in message:
            return True
    return False


class RecentKeys(OrderedDict[str, str]):
    """Idempotency key → provider message id for the most recent sends of this process (bounded)."""

    def __init__(self, limit: int = 10_000) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class SendGridEmail:
    """`EmailBackend` for SendGrid."""

    def __init__(
        self,
        api_key: str,
        from_email: str,
        *,
        host: str | None = None,
        timeout: float = 10.0,
        check_bounces: bool = True,
        categories: tuple[str, ...] = ("dunning",),
        reply_to: str | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("SENDGRID_API_KEY is required for the sendgrid email backend")
        self.from_email = from_email
        self.timeout = timeout
        self.check_bounces = check_bounces
        self.categories = categories
        self.reply_to = reply_to  # the messages say "just reply to this email": replies reach support
        self._client = SendGridAPIClient(api_key=api_key, host=(host or DEFAULT_HOST).rstrip("/"))
        self._client.client.timeout = timeout
        self._sent = RecentKeys()

    # --- the protocol --------------------------------------------------------------

    async def send_email(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        html: str | None,
        idempotency_key: str,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        if idempotency_key in self._sent:
            return self._sent[idempotency_key]
        if self.check_bounces:
            await asyncio.to_thread(self._raise_if_bounced, to)
        message_id = await asyncio.to_thread(self._send, to, subject, text, html, idempotency_key, tags)
        self._sent[idempotency_key] = message_id
        log.info("email sent", provider="sendgrid", message_id=message_id, idempotency_key=idempotency_key)
        return message_id

    # --- in a thread -----------------------------------------------------------------

    def build_mail(
        self,
        to: str,
        subject: str,
        text: str,
        html: str | None,
        idempotency_key: str,
        tags: Mapping[str, str] | None = None,
    ) -> Mail:
        mail = Mail(
            from_email=Email(self.from_email),
            to_emails=to,
            subject=subject,
            plain_text_content=text,
            html_content=html,
        )
        mail.custom_arg = CustomArg("idempotency_key", idempotency_key)
        for key, value in (tags or {}).items():
            if value and key != "idempotency_key":
                mail.custom_arg = CustomArg(key, str(value))
        mail.header = Header(IDEMPOTENCY_HEADER, idempotency_key)
        if self.reply_to:
            mail.reply_to = ReplyTo(self.reply_to)
        for category in self.categories:
            mail.category = Category(category)
        return mail

    def _send(
        self, to: str, subject: str, text: str, html: str | None, idempotency_key: str, tags: Mapping[str, str] | None
    ) -> str:
        mail = self.build_mail(to, subject, text, html, idempotency_key, tags)
        try:
            response = self._client.send(mail)
        except HTTPError as error:
            self._classify(error)
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as error:
            raise ProviderUnavailable(f"SendGrid unreachable: {error}") from error
        headers = getattr(response, "headers", None) or {}
        message_id = headers.get("X-Message-Id") if hasattr(headers, "get") else None
        return str(message_id or f"sendgrid:{idempotency_key}")

    def _raise_if_bounced(self, to: str) -> None:
        """SendGrid silently drops mail to bounced addresses (and still answers 202): ask first."""
        path = urllib.parse.quote(to, safe="@")
        try:
            response = self._client.client.suppression.bounces._(path).get()
            entries: Any = json.loads(response.body or b"[]")
        except HTTPError as error:
            if error.status_code == 404:
                return
            # No permission for suppressions, or an outage: the send itself will tell.
            log.warning("bounce check failed", status=error.status_code, reason=_reason(error))
            return
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError, ValueError) as error:
            log.warning("bounce check failed", error=str(error))
            return
        if isinstance(entries, list) and entries:
            reason = entries[0].get("reason") or entries[0].get("status") or "bounced"
            raise RecipientUnreachable(f"email address bounced before: {reason}")

    @staticmethod
    def _classify(error: HTTPError) -> None:
        status = int(error.status_code)
        reason = _reason(error)
        if status == 429 or status >= 500:
            raise ProviderUnavailable(f"SendGrid {status}: {reason}") from error
        if _is_bad_recipient(error):
            raise RecipientUnreachable(f"SendGrid rejected the address: {reason}") from error
        raise ProviderRejected(f"SendGrid {status}: {reason}") from error
