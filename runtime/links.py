"""The customer's link: `{DUNNING_PUBLIC_URL}/c/{token}`, the one link in every message.

A token is 32 URL-safe characters: a link id (16) and its signature (16). The id is derived
from the case (`case_id`, stable across continue-as-new), so every message of a case carries
the same link and a retried activity issues no new one; the signature is an HMAC under one of
`DUNNING_LINK_KEYS`. The first key signs, every key verifies: a new key goes first, the old
ones stay until the links they signed have expired (30 days after their case closed).

A forged or altered token fails the signature before anything is read. A genuine one is looked
up in the service's database (`customer_links`), which says which workflow and run it belongs
to; the page then asks Temporal for the case. Provider sessions (the billing portal) are never
in a link: they are created when the customer clicks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, Connection, DateTime, MetaData, String, Table, select, update

from runtime.database import Database
from runtime.settings import ConfigError

#: A link still opens the page this long after its case closed; then it says it has expired.
LINK_VALID_AFTER_CLOSE = timedelta(days=30)
#: Bytes of the link id and of its signature (16 base64url characters each).
_ID_BYTES = _MAC_BYTES = 12
TOKEN_LENGTH = 32
#: The shortest key accepted: 128 bits.
MIN_KEY_BYTES = 16

_metadata = MetaData()
customer_links = Table(
    "customer_links",
    _metadata,
    Column("link_id", String(16), primary_key=True),
    Column("case_id", String(255), nullable=False),
    Column("workflow_id", String(255), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("customer_id", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_issued_at", DateTime(timezone=True), nullable=False),
    Column("update_clicked_at", DateTime(timezone=True)),
)


def parse_link_keys(value: str | None) -> list[bytes]:
    """`DUNNING_LINK_KEYS`: comma-separated secrets, the first signs; each at least 16 bytes."""
    keys = [k.strip().encode() for k in (value or "").split(",") if k.strip()]
    for index, key in enumerate(keys):
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"DUNNING_LINK_KEYS: key {index + 1} has {len(key)} characters; use at least {MIN_KEY_BYTES}"
                " random ones (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
    return keys


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _mac(key: bytes, purpose: str, message: str, size: int) -> bytes:
    return hmac.new(key, f"{purpose}\0{message}".encode(), hashlib.sha256).digest()[:size]


@dataclass(frozen=True)
class LinkRecord:
    link_id: str
    case_id: str
    workflow_id: str
    run_id: str
    customer_id: str
    created_at: datetime
    last_issued_at: datetime
    update_clicked_at: datetime | None


class LinkSigner:
    """Tokens and form secrets: no storage, only the keys."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError(
                "DUNNING_LINK_KEYS is not set: the customers' links (/c/{token}) can't be signed."
                " Set one random key of at least 16 characters (`dunning up` makes one for local use)."
            )
        self.keys = list(keys)

    def token_for(self, case_id: str) -> tuple[str, str]:
        """`(link_id, token)` of a case, under the signing key."""
        link_id = _b64(_mac(self.keys[0], "link", case_id, _ID_BYTES))
        return link_id, link_id + _b64(_mac(self.keys[0], "token", link_id, _MAC_BYTES))

    def link_id_of(self, token: str) -> str | None:
        """The link id of a genuine token; None for a forged, altered or malformed one."""
        if len(token) != TOKEN_LENGTH:
            return None
        link_id, signature = token[:16], _unb64(token[16:])
        if signature is None or _unb64(link_id) is None:
            return None
        for key in self.keys:
            if hmac.compare_digest(signature, _mac(key, "token", link_id, _MAC_BYTES)):
                return link_id
        return None

    def form_secret(self, link_id: str, form: str, state: str = "") -> str:
        """The CSRF field of one form of one page: bound to the link, the form and the case's
        state the form was rendered for (a stale form can't act twice)."""
        return _b64(_mac(self.keys[0], "csrf", f"{link_id}\0{form}\0{state}", 16))

    def form_secret_ok(self, supplied: str, link_id: str, form: str, state: str = "") -> bool:
        return any(
            hmac.compare_digest(supplied.encode(), _b64(_mac(key, "csrf", f"{link_id}\0{form}\0{state}", 16)).encode())
            for key in self.keys
        )


class CaseLinks:
    """Issues a case's link (the worker, when it sends a message; the API, for the banner) and
    finds the case behind a token (the customer page)."""

    def __init__(self, signer: LinkSigner, public_url: str, database: Database) -> None:
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self.database = database

    def url(self, token: str, suffix: str = "") -> str:
        return f"{self.public_url}/c/{token}{suffix}"

    async def issue(self, *, case_id: str, workflow_id: str, run_id: str, customer_id: str) -> str:
        """The case's link, remembered (once per case and key; the run is kept up to date).
        `run_id` may be "" where the caller does not know it (the in-app banner)."""
        link_id, token = self.signer.token_for(case_id)
        now = datetime.now(UTC)

        def remember(db: Connection) -> None:
            insert = self.database.insert(customer_links).values(
                link_id=link_id,
                case_id=case_id,
                workflow_id=workflow_id,
                run_id=run_id,
                customer_id=customer_id,
                created_at=now,
                last_issued_at=now,
            )
            # The latest run that issued it (a message); the API's banner knows no run and leaves it.
            refresh: dict[str, object] = {"last_issued_at": now, **({"run_id": run_id} if run_id else {})}
            db.execute(insert.on_conflict_do_update(index_elements=[customer_links.c.link_id], set_=refresh))

        await asyncio.to_thread(self.database.run, remember)
        return self.url(token)

    async def find(self, token: str) -> LinkRecord | None:
        """The case behind a genuine token; None when forged or unknown (both: the 404 page)."""
        link_id = self.signer.link_id_of(token)
        if link_id is None:
            return None

        def read(db: Connection) -> LinkRecord | None:
            row = db.execute(select(customer_links).where(customer_links.c.link_id == link_id)).mappings().first()
            if row is None:
                return None
            return LinkRecord(
                link_id=row["link_id"],
                case_id=row["case_id"],
                workflow_id=row["workflow_id"],
                run_id=row["run_id"],
                customer_id=row["customer_id"],
                created_at=_utc(row["created_at"]),
                last_issued_at=_utc(row["last_issued_at"]),
                update_clicked_at=_utc(row["update_clicked_at"]) if row["update_clicked_at"] else None,
            )

        return await asyncio.to_thread(self.database.run, read)

    async def update_clicked(self, link_id: str) -> None:
        """The customer followed the page's update link: the report attributes a card update that
        follows to the page (`customer_page`). The first click counts."""
        now = datetime.now(UTC)

        def mark(db: Connection) -> None:
            db.execute(
                update(customer_links)
                .where(customer_links.c.link_id == link_id, customer_links.c.update_clicked_at.is_(None))
                .values(update_clicked_at=now)
            )

        await asyncio.to_thread(self.database.run, mark)


def _utc(at: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)
