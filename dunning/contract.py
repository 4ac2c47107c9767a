"""The contract's names, typed once: what webhooks, operators, deployments and tests depend on.

Every other module imports these; none spells a workflow type, signal, activity or search
attribute name of its own (tests/unit/test_contract.py holds the literal list and checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, TypeVar

from temporalio.common import SearchAttributeKey

from dunning.card_expiry import RenewalUpcoming
from dunning.ledger import CaseRecord
from dunning.models import (
    AccessRequest,
    CardUpdated,
    ChargeRequest,
    ChargeResult,
    CustomerProfile,
    ExtendGrace,
    InvoicePaid,
    NotificationRequest,
    NotificationResult,
    Pause,
    PaymentFailed,
    Resume,
    SavedCard,
    SubscriptionCanceled,
)

# --- the workflow -------------------------------------------------------------------

WORKFLOW_TYPE = "DunningWorkflow"
TASK_QUEUE = "dunning"
"""The default task queue; `DUNNING_TASK_QUEUE` overrides it."""
WORKFLOW_ID_PREFIX = "dunning-"


def workflow_id(subscription_id: str) -> str:
    """One case per subscription: a new failure after a case closed starts a new run of this id."""
    return f"{WORKFLOW_ID_PREFIX}{subscription_id}"


def subscription_of(case_workflow_id: str) -> str:
    """The subscription id inside a case's workflow id (the id itself when it is not a case's)."""
    return case_workflow_id.removeprefix(WORKFLOW_ID_PREFIX)


class Signal(StrEnum):
    PAYMENT_FAILED = "payment_failed"
    CARD_UPDATED = "card_updated"
    INVOICE_PAID = "invoice_paid"
    SUBSCRIPTION_CANCELED = "subscription_canceled"
    PAUSE = "pause"
    RESUME = "resume"
    EXTEND_GRACE = "extend_grace"


SIGNAL_PAYLOADS: dict[Signal, type] = {
    Signal.PAYMENT_FAILED: PaymentFailed,
    Signal.CARD_UPDATED: CardUpdated,
    Signal.INVOICE_PAID: InvoicePaid,
    Signal.SUBSCRIPTION_CANCELED: SubscriptionCanceled,
    Signal.PAUSE: Pause,
    Signal.RESUME: Resume,
    Signal.EXTEND_GRACE: ExtendGrace,
}

UPDATE_RETRY_NOW = "retry_now"
QUERY_STATUS = "status"

# --- pre-dunning: reminders before a renewal the card on file can't pay -------------------

CARD_EXPIRY_WORKFLOW_TYPE = "CardExpiryWorkflow"
CARD_EXPIRY_ID_PREFIX = "card-expiry-"


def card_expiry_workflow_id(subscription_id: str) -> str:
    """One pre-dunning workflow per subscription and renewal (a later renewal starts a new run)."""
    return f"{CARD_EXPIRY_ID_PREFIX}{subscription_id}"


class CardExpirySignal(StrEnum):
    """CardExpiryWorkflow's signals: the renewal's event (signal-with-start), and the same
    `card_updated` the cases take, which ends the reminders."""

    RENEWAL_UPCOMING = "renewal_upcoming"
    CARD_UPDATED = Signal.CARD_UPDATED.value


CARD_EXPIRY_SIGNAL_PAYLOADS: dict[CardExpirySignal, type] = {
    CardExpirySignal.RENEWAL_UPCOMING: RenewalUpcoming,
    CardExpirySignal.CARD_UPDATED: CardUpdated,
}

# --- activities ---------------------------------------------------------------------

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class ActivityDef(Generic[ArgT, ResultT]):
    """An activity of the contract: its name, its one argument's type and its result's type.

    The workflow calls activities through these (never by a string of its own), and the
    activity classes register under `name`.
    """

    name: str
    arg_type: type[ArgT]
    result_type: type[ResultT]


CHARGE_INVOICE = ActivityDef("charge_invoice", ChargeRequest, ChargeResult)
SEND_NOTIFICATION = ActivityDef("send_notification", NotificationRequest, NotificationResult)
SUSPEND_ACCESS = ActivityDef("suspend_access", AccessRequest, type(None))
RESTORE_ACCESS = ActivityDef("restore_access", AccessRequest, type(None))
CANCEL_SUBSCRIPTION = ActivityDef("cancel_subscription", AccessRequest, type(None))
GET_CUSTOMER = ActivityDef("get_customer", str, CustomerProfile)
#: The customer's saved cards, for backup cards after a hard decline (policy `try_backup_cards`).
LIST_SAVED_CARDS = ActivityDef("list_saved_cards", str, list[SavedCard])
#: Writes the case's facts to the recovery ledger, idempotent per case and milestone.
RECORD_CASE = ActivityDef("record_case", CaseRecord, type(None))

ACTIVITIES: tuple[ActivityDef[Any, Any], ...] = (
    CHARGE_INVOICE,
    SEND_NOTIFICATION,
    SUSPEND_ACCESS,
    RESTORE_ACCESS,
    CANCEL_SUBSCRIPTION,
    GET_CUSTOMER,
    RECORD_CASE,
    LIST_SAVED_CARDS,
)

# --- search attributes and visibility -------------------------------------------------

DUNNING_STAGE = SearchAttributeKey.for_keyword("DunningStage")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
SUBSCRIPTION_ID = SearchAttributeKey.for_keyword("SubscriptionId")
AMOUNT_DUE = SearchAttributeKey.for_int("AmountDue")
CURRENCY = SearchAttributeKey.for_keyword("Currency")
DECLINE_CATEGORY = SearchAttributeKey.for_keyword("DeclineCategory")
RETRY_ATTEMPTS = SearchAttributeKey.for_int("RetryAttempts")
NEXT_ACTION_AT = SearchAttributeKey.for_datetime("NextActionAt")
DUNNING_OUTCOME = SearchAttributeKey.for_keyword("DunningOutcome")
#: The policy pinned into the case.
DUNNING_POLICY = SearchAttributeKey.for_keyword("DunningPolicy")
#: `{experiment}:{arm}` (dunning/experiments.py `arm_label`); empty outside experiments.
EXPERIMENT_ARM = SearchAttributeKey.for_keyword("ExperimentArm")

SEARCH_ATTRIBUTES = (
    DUNNING_STAGE,
    CUSTOMER_ID,
    SUBSCRIPTION_ID,
    AMOUNT_DUE,
    CURRENCY,
    DECLINE_CATEGORY,
    RETRY_ATTEMPTS,
    NEXT_ACTION_AT,
    DUNNING_OUTCOME,
    DUNNING_POLICY,
    EXPERIMENT_ARM,
)

_KIND_NAMES = {"KEYWORD": "Keyword", "INT": "Int", "DATETIME": "Datetime"}


def search_attribute_types() -> dict[str, str]:
    """Name → type as the `temporal` CLI spells it (`Keyword`, `Int`, `Datetime`)."""
    return {key.name: _KIND_NAMES[key.indexed_value_type.name] for key in SEARCH_ATTRIBUTES}


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Type` flags for `temporal server start-dev`."""
    return [flag for name, kind in search_attribute_types().items() for flag in ("--search-attribute", f"{name}={kind}")]


def quote(value: str) -> str:
    """A string literal for Temporal's list filter (its SQL-like syntax)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cases_query(
    *,
    stage: str | None = None,
    customer_id: str | None = None,
    min_amount: int | None = None,
    open_only: bool = False,
) -> str:
    """A visibility filter over the cases: by stage, customer, amount, open or not."""
    clauses = [f"WorkflowType = {quote(WORKFLOW_TYPE)}"]
    if stage:
        clauses.append(f"{DUNNING_STAGE.name} = {quote(stage)}")
    if customer_id:
        clauses.append(f"{CUSTOMER_ID.name} = {quote(customer_id)}")
    if min_amount is not None:
        clauses.append(f"{AMOUNT_DUE.name} >= {int(min_amount)}")
    if open_only:
        clauses.append("ExecutionStatus = 'Running'")
    return " AND ".join(clauses)


def open_cases_of_customer(customer_id: str) -> str:
    """The customer's open cases: what the in-app banner shows."""
    return cases_query(customer_id=customer_id, open_only=True)


def card_update_targets(customer_id: str) -> str:
    """Where a card update of the customer goes: their open cases and their pre-dunning reminders."""
    types = f"WorkflowType IN ({quote(WORKFLOW_TYPE)}, {quote(CARD_EXPIRY_WORKFLOW_TYPE)})"
    return f"{types} AND {CUSTOMER_ID.name} = {quote(customer_id)} AND ExecutionStatus = 'Running'"
# --- metrics (GET /metrics) -------------------------------------------------------------

#: The business counters, read from the ledger so that every API replica reports the same totals.
METRIC_CASES_OPENED = "dunning_cases_opened_total"
METRIC_CASES_CLOSED = "dunning_cases_closed_total"  # {outcome}
METRIC_RECOVERED_AMOUNT = "dunning_recovered_amount_total"  # {currency}, minor units
METRIC_CHARGE_ATTEMPTS = "dunning_charge_attempts_total"  # {result}
METRIC_MESSAGES = "dunning_messages_total"  # {channel, status}
