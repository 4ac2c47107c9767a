"""SMS through Twilio's Messages API with the official `twilio` SDK.

The SDK's sync client runs in a thread (`asyncio.to_thread`) with a request timeout.
`TWILIO_API_BASE` replaces the `https://api.twilio.com` domain of the SDK's `api` domain
(`client.api.base_url`), which is where `client.messages` sends, so tests and sandboxes
point the real SDK at a loopback server.

Errors, as `send_notification` expects them:
- 21610 (recipient replied STOP), 21211 (invalid number), 21614 (not a mobile number), and
  similar "can't reach this number" codes → `RecipientUnreachable`: final for SMS, the case
  falls back to email;
- 429, 5xx, timeouts, connection errors → `ProviderUnavailable` (Temporal retries);
- any other 4xx → `ProviderRejected` with Twilio's code and message (final).

Idempotency: Twilio's Messages API has no idempotency key. To avoid a second text when the
activity is retried after a send whose answer was lost (timeout, 5xx after acceptance, worker
crash), a *retry* first looks in Twilio's own message log for a message to the same number,
from our sender, created since the activity was first scheduled, with the same body, and
returns that message instead of sending again. Successful sends are also remembered per
idempotency key in this process. The residual risk: Twilio's log is not instantly consistent,
so a retry within a second or two of a lost answer may still send twice; and a `failed` or
`undelivered` earlier message is deliberately sent again.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import requests
import structlog
from temporalio import activity
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from activities.backends import ProviderRejected, ProviderUnavailable, RecipientOptedOut, RecipientUnreachable
from activities.sendgrid_backend import RecentKeys

log = structlog.get_logger(__name__)

# Codes that mean "this number can't get our SMS": final for the channel, not for the case.
UNREACHABLE_CODES = {
    21610: "recipient opted out (replied STOP)",
    21211: "invalid phone number",
    21614: "number is not a mobile number",
    21612: "number cannot be reached from our sender",
    21408: "sending to this region is not enabled",
    30004: "message blocked",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
}
NOT_DELIVERED = {"failed", "undelivered", "canceled"}
_URL = re.compile(r"https?://\S+")


def _comparable(body: str, shortened: bool) -> str:
    """Bodies compare equal after Twilio's own link shortening, if it was on."""
    text = _URL.sub("<link>", body) if shortened else body
    return " ".join(text.split())


def _retry_since() -> datetime | None:
    """When this activity was first scheduled, if this is a retry of it; None on a first attempt."""
    if not activity.in_activity():
        return None
    info = activity.info()
    if info.attempt <= 1:
        return None
    return info.scheduled_time


class TwilioSms:
    """`SmsBackend` for Twilio. `from_number` may be a messaging service SID (`MG…`): then
    Twilio picks the sender and shortens links (Twilio link shortening needs a service)."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str,
        *,
        api_base: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not (account_sid and auth_token and from_number):
            raise ValueError("TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM_NUMBER are required for twilio")
        self.from_number = from_number
        self.uses_service = from_number.startswith("MG")
        self.timeout = timeout
        self._client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout))
        if api_base:
            self._client.api.base_url = api_base.rstrip("/")
        self._sent = RecentKeys()

    async def send_sms(self, *, to: str, body: str, idempotency_key: str) -> str:
        if idempotency_key in self._sent:
            return self._sent[idempotency_key]
        since = _retry_since()
        sid = await asyncio.to_thread(self._send, to, body, since)
        self._sent[idempotency_key] = sid
        log.info("sms sent", provider="twilio", sid=sid, idempotency_key=idempotency_key, retry=since is not None)
        return sid

    # --- in a thread -----------------------------------------------------------------

    def _send(self, to: str, body: str, since: datetime | None) -> str:
        try:
            if since is not None:
                earlier = self._lookup_earlier(to, body, since)
                if earlier:
                    log.info("sms already sent by an earlier attempt", sid=earlier)
                    return earlier
            sender = (
                {"messaging_service_sid": self.from_number, "shorten_urls": True}
                if self.uses_service
                else {"from_": self.from_number}
            )
            message = self._client.messages.create(to=to, body=body, **sender)
            return str(message.sid)
        except TwilioRestException as error:
            self._classify(error)
            raise  # pragma: no cover - _classify always raises
        except (requests.Timeout, requests.ConnectionError) as error:
            raise ProviderUnavailable(f"Twilio unreachable: {error}") from error
        except TwilioException as error:
            raise ProviderUnavailable(f"Twilio error: {error}") from error

    def _lookup_earlier(self, to: str, body: str, since: datetime) -> str | None:
        """The message an earlier attempt sent, if Twilio's log has it. An outage while looking
        is retried like any outage; a refusal (e.g. a key without read access) only costs the
        protection, not the message."""
        try:
            return self._already_sent(to, body, since)
        except TwilioException as error:
            # Pages fail as TwilioException("Unable to fetch page", response), single calls as
            # TwilioRestException(status, ...): find the HTTP status either way.
            response = error.args[1] if len(error.args) > 1 else None
            status = int(getattr(error, "status", None) or getattr(response, "status_code", 0) or 0)
            if status == 429 or status >= 500 or status == 0:
                raise ProviderUnavailable(f"Twilio message log unavailable ({status or error})") from error
            log.warning("cannot read Twilio's message log; sending without the duplicate check", status=status)
            return None

    def _already_sent(self, to: str, body: str, since: datetime) -> str | None:
        wanted = _comparable(body, self.uses_service)
        filters = {} if self.uses_service else {"from_": self.from_number}
        for message in self._client.messages.list(to=to, limit=20, **filters):
            created = message.date_created
            if isinstance(created, datetime):
                if created.tzinfo is None:
                    created = created.replace(tzinfo=UTC)
                if created < since - timedelta(minutes=1):
                    continue
            if str(message.status) in NOT_DELIVERED:
                continue
            if _comparable(message.body or "", self.uses_service) == wanted:
                return str(message.sid)
        return None

    @staticmethod
    def _classify(error: TwilioRestException) -> None:
        status, code, text = int(error.status), error.code, error.msg
        reason = f"Twilio {code or status}: {text}"
        if code == 21610:
            raise RecipientOptedOut(f"{UNREACHABLE_CODES[code]} ({reason})") from error
        if code in UNREACHABLE_CODES:
            raise RecipientUnreachable(f"{UNREACHABLE_CODES[code]} ({reason})") from error
        if status == 429 or status >= 500 or code == 20429:
            raise ProviderUnavailable(reason) from error
        raise ProviderRejected(reason) from error
