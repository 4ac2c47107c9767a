"""What the service's database keeps about one customer: exported as JSON, or forgotten.

`dunning customer export CUSTOMER_ID` and `dunning customer forget CUSTOMER_ID` (a data subject's
access and erasure requests). The database holds the customer's SMS consent and its audit trail,
the numbers we texted, the email addresses SendGrid told us to stop writing to (and those
events), the links of their cases (and whether they clicked them) and the recovery
ledger's rows of their cases. What it does not hold stays where it is: the cases themselves are
Temporal workflow histories, which expire with the namespace's retention period
(docs/operations.md), and the providers (Stripe, SendGrid, Twilio) keep their own records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, select, update

from runtime.card_budget import card_attempts, card_blocks
from runtime.consent import consent_events, sms_consent, sms_recipients
from runtime.database import Database
from runtime.email_suppression import email_events, email_suppressions
from runtime.ledger import ledger_cases, ledger_events
from runtime.links import customer_links

#: Every table with a `customer_id`, in the order they are exported and forgotten.
CUSTOMER_TABLES: tuple[Table, ...] = (
    sms_consent,
    consent_events,
    sms_recipients,
    customer_links,
    ledger_cases,
    ledger_events,
    email_suppressions,
    email_events,
    card_attempts,
    card_blocks,
)
#: Kept, but no longer theirs, when a customer is forgotten: the card networks count a card's
#: attempts for 30 days whoever made them, so erasing them would hand the card a fresh budget.
ANONYMIZED_TABLES: tuple[Table, ...] = (card_attempts, card_blocks)
FORGOTTEN = "forgotten"


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def export_customer(database: Database, customer_id: str) -> dict[str, Any]:
    """Every row the database keeps about the customer, table by table (JSON-ready)."""

    def read(db: Connection) -> dict[str, Any]:
        tables = {}
        for table in CUSTOMER_TABLES:
            rows = db.execute(select(table).where(table.c.customer_id == customer_id)).mappings().all()
            tables[table.name] = [{k: _plain(v) for k, v in row.items()} for row in rows]
        return {"customer_id": customer_id, "tables": tables}

    return database.run(read)


def forget_customer(database: Database, customer_id: str) -> dict[str, int]:
    """Deletes every row about the customer, in one transaction; returns how many per table.

    The SMS opt-out goes too, so run it once the customer's cases are closed: a case still open
    would find no opt-out and could text them again (the CLI warns about open cases). Their email
    suppressions go too: SendGrid's own suppression list still drops mail to a bounced address.
    Their cards' attempts stay, as `forgotten`'s, for the per-card budget (`ANONYMIZED_TABLES`)."""

    def erase(db: Connection) -> dict[str, int]:
        counts = {}
        for table in CUSTOMER_TABLES:
            mine = table.c.customer_id == customer_id
            change = update(table).where(mine).values(customer_id=FORGOTTEN) if table in ANONYMIZED_TABLES else delete(table).where(mine)
            counts[table.name] = int(db.execute(change).rowcount or 0)
        return counts

    return database.run(erase)
