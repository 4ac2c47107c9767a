"""The case's data: signal payloads, activity inputs/results and the `status` view.

Everything that crosses the Temporal boundary is a pydantic model so that the
pydantic data converter renders it as readable JSON in the UI.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from dunning.policy import Policy


class _Model(BaseModel):
    # Operators type signal payloads by hand in the UI: reject typos loudly.
    model_config = ConfigDict(extra="forbid")


#: Fields that arrived with experiments: left out of the payload while unset, so a case outside
#: any experiment carries the same JSON as before, which a worker of the previous release
#: (`extra="forbid"`) still reads during a rolling deploy.
_EXPERIMENT_FIELDS = ("experiment", "arm")


class _PinnedModel(_Model):
    @model_serializer(mode="wrap")
    def _experiment_only_when_set(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in _EXPERIMENT_FIELDS:
                if data.get(name, ...) is None:
                    data.pop(name)
        return data


class Stage(StrEnum):
    RETRYING = "retrying"
    AWAITING_PAYMENT_METHOD = "awaiting_payment_method"
    FINAL_NOTICE = "final_notice"
    SUSPENDED = "suspended"
    PAUSED = "paused"
    RECOVERED = "recovered"
    CANCELED = "canceled"
    WRITTEN_OFF = "written_off"
    CLOSED_BY_CUSTOMER = "closed_by_customer"


MAX_AMOUNT = 10**12 - 1  # minor units; Stripe allows at most 12 digits

OUTCOMES = frozenset({Stage.RECOVERED, Stage.CANCELED, Stage.WRITTEN_OFF, Stage.CLOSED_BY_CUSTOMER})


class DeclineCategory(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    AUTHENTICATION = "authentication"
    UNKNOWN = "unknown"


class AccessState(StrEnum):
    ACTIVE = "active"
    GRACE = "grace"
    SUSPENDED = "suspended"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    IN_APP = "in_app"


# --- signals and update payloads -------------------------------------------------


class PaymentFailed(_Model):
    """`invoice.payment_failed`: an invoice of the subscription could not be paid."""

    invoice_id: str
    # Bounded like Stripe's amounts (at most 12 digits), so the case's AmountDue search attribute
    # (a 64-bit integer) always takes it; an ISO 4217 code, as Stripe sends it.
    amount_due: int = Field(ge=0, le=MAX_AMOUNT, description="minor units")
    currency: str = Field(pattern=r"^[A-Za-z]{3}$")
    customer_id: str | None = None
    subscription_id: str | None = None
    failure_code: str | None = None
    decline_code: str | None = None
    advice_code: str | None = None
    message: str | None = None
    payment_method_id: str | None = None
    hosted_invoice_url: str | None = None
    occurred_at: datetime | None = None
    event_id: str | None = None


class CardUpdated(_Model):
    """A payment method was attached, auto-updated or made the default."""

    payment_method_id: str | None = None
    event_id: str | None = None
    source: str | None = None


class InvoicePaid(_Model):
    invoice_id: str
    event_id: str | None = None


class CancelReason(StrEnum):
    """Why a customer leaves, as the customer page asks it (the contract's `reason` values)."""

    TOO_EXPENSIVE = "too_expensive"
    NOT_USING = "not_using"
    MISSING_FEATURES = "missing_features"
    SWITCHING = "switching"
    TEMPORARY = "temporary"
    OTHER = "other"


class CustomerFeedback(_Model):
    """What a customer who canceled on their page told us."""

    reason: CancelReason
    comment: str | None = Field(None, max_length=2000)


class SubscriptionCanceled(_Model):
    reason: str | None = None
    event_id: str | None = None
    cancellation_reason: str | None = Field(
        None,
        description="Stripe's `cancellation_details.reason`: `payment_failed` means Stripe's own dunning canceled it",
    )
    source: Literal["customer"] | None = Field(
        None, description="`customer`: asked on their page; the case cancels the subscription in Stripe itself"
    )
    feedback: CustomerFeedback | None = None


class Pause(_Model):
    reason: str = "paused by operator"


class Resume(_Model):
    reason: str = "resumed by operator"


MAX_GRACE_EXTENSION = timedelta(days=365)


class ExtendGrace(_Model):
    """More time before suspension. An operator gives `days` or an ISO 8601 `duration`; a customer
    who asks on their page (`source: customer`) gets the pinned policy's `self_service_grace`, at
    most `self_service_grace_limit` times. The same `request_id` twice extends once."""

    days: int | None = Field(None, ge=1, le=365)
    duration: timedelta | None = Field(None, description="ISO 8601, e.g. P7D or PT36H")
    reason: str = "grace extended by operator"
    source: Literal["operator", "customer"] = "operator"
    request_id: str | None = Field(None, max_length=120)

    @model_validator(mode="after")
    def _one_length(self) -> ExtendGrace:
        if self.source == "customer":
            if self.days is not None or self.duration is not None:
                raise ValueError("a customer's extension is the policy's self_service_grace: leave out days and duration")
        elif (self.days is None) == (self.duration is None):
            raise ValueError("give `days` or an ISO 8601 `duration` (e.g. \"P7D\"), one of them")
        if self.duration is not None and not timedelta(0) < self.duration <= MAX_GRACE_EXTENSION:
            raise ValueError("duration must be positive and at most P365D")
        return self

    def length(self, self_service_grace: timedelta) -> timedelta:
        if self.source == "customer":
            return self_service_grace
        return self.duration if self.duration is not None else timedelta(days=self.days or 0)


class RetryNow(_Model):
    reason: str = "retry requested by operator"


# --- activity inputs and results ---------------------------------------------------


class ChargeRequest(_Model):
    invoice_id: str
    customer_id: str
    subscription_id: str
    attempt: int = Field(ge=1, description="attempt number of this invoice within the case")
    idempotency_key: str
    payment_method_id: str | None = None
    card_budget_limit: int | None = Field(
        None,
        description="the charging case's `max_attempts_per_card_30d`: the charge reserves an attempt in the card's"
        " budget across every case first (None: counted, never refused; cases started before the shared budget)",
    )


class CardBudget(_Model):
    """What a charge learned of its card's 30-day budget, counted per card (Stripe's fingerprint)
    across every case that charges it, whoever the customer."""

    fingerprint: str
    payment_method_id: str | None = None
    limit: int = Field(description="the charging case's limit")
    used: int = Field(description="attempts on this card in the 30 days up to the charge, every case's")
    used_by: list[str] = Field([], description="the cases (workflow ids) whose attempts those are")
    frees_at: datetime | None = Field(None, description="when the oldest of them leaves the 30-day window")
    blocked_code: str | None = Field(None, description="a never-retry decline on this card ends every case's retries")
    blocked_by: str | None = None

    @property
    def left(self) -> int:
        return 0 if self.blocked_code else max(self.limit - self.used, 0)


class SavedCard(_Model):
    """One of the customer's saved cards, as a backup after a hard decline on the one charged."""

    payment_method_id: str
    fingerprint: str | None = None
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    is_default: bool = False


class ChargeResult(_Model):
    """What happened to one charge. A decline is a result, never an exception."""

    invoice_id: str
    status: Literal["succeeded", "declined", "already_paid", "voided", "refused"] = Field(
        description="`refused`: the card's budget (or a never-retry decline on it) stopped the charge before"
        " Stripe saw it; not an attempt"
    )
    category: DeclineCategory | None = None
    code: str | None = None
    decline_code: str | None = None
    advice_code: str | None = None
    message: str | None = None
    payment_method_id: str | None = None
    payment_intent_id: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    card_budget: CardBudget | None = None


class CustomerProfile(_Model):
    """What the case needs to know about the customer: no raw contact details.

    Email addresses and phone numbers stay with the provider and are looked up by
    `send_notification` at send time, so they never land in workflow history.
    """

    customer_id: str
    name: str | None = None
    locale: str = "en"
    timezone: str | None = Field(None, description="the zone the case uses (the middle candidate when several remain)")
    timezone_candidates: list[str] = Field(
        [], description="every zone the customer may be in; an SMS goes only when it is daytime in all of them"
    )
    timezone_source: str | None = Field(
        None, description="what located them: metadata, address, phone, shipping, tax_location or locale"
    )
    timezone_narrowed_by: list[str] = Field([], description="later hints that agreed and narrowed the candidates")
    has_email: bool = True
    has_phone: bool = False
    sms_opted_out: bool = False
    plan_name: str | None = None
    default_payment_method_id: str | None = None


class AccessRequest(_Model):
    customer_id: str
    subscription_id: str
    reason: str


class NotificationRequest(_Model):
    case_id: str
    customer_id: str
    subscription_id: str
    channel: Channel
    template: str
    idempotency_key: str
    invoice_ids: list[str] = []
    check_invoices_open: bool = Field(True, description="re-check the invoices right before sending; skip when paid")
    context: dict[str, str | int | float | bool | None] = {}


PAID_ELSEWHERE = "invoice already paid"
"""The reason a message is skipped because the invoice turned out to be paid."""


class NotificationResult(_Model):
    channel: Channel
    status: Literal["sent", "skipped", "failed"]
    reason: str | None = None
    provider_message_id: str | None = None
    fallback_channel: Channel | None = None


# --- the case ---------------------------------------------------------------------


class InvoiceState(_Model):
    invoice_id: str
    amount_due: int
    currency: str
    failed_at: datetime
    status: Literal["open", "paid", "voided"] = "open"
    attempts: int = 0
    hosted_invoice_url: str | None = None


class AttemptRecord(_Model):
    at: datetime
    invoice_id: str
    attempt: int
    trigger: str
    idempotency_key: str | None = None
    result: ChargeResult


class NotificationRecord(_Model):
    at: datetime
    template: str
    channel: Channel
    status: str
    reason: str | None = None
    step: str


class TimelineEntry(_Model):
    at: datetime
    event: str
    detail: str = ""


class DunningInput(_PinnedModel):
    """Workflow input. `state` is only set when the case continues as new."""

    subscription_id: str
    customer_id: str
    policy: Policy
    state: CaseState | None = None
    carried_failures: list[PaymentFailed] = Field(
        [], description="failures that arrived while the previous case was closing; they open this one"
    )
    history_event_limit: int = 10_000
    requested_policy: str | None = Field(
        None, description="the subscription's `dunning_policy` metadata, when it named a policy we do not have"
    )
    experiment: str | None = Field(None, description="the experiment that chose the policy (dunning/experiments.py)")
    arm: str | None = Field(None, description="the case's arm of that experiment (a policy name)")


class LedgerProgress(_Model):
    """What the case has already handed to the recovery ledger (dunning/ledger.py), carried across continue-as-new."""

    seq: int = 0
    opened: bool = False
    attempts: int = 0
    notifications: int = 0
    extensions: int = 0
    suspended: bool = False
    closed: bool = False


class CaseState(_PinnedModel):
    """Everything the case remembers; carried whole across continue-as-new."""

    case_id: str
    subscription_id: str
    customer_id: str
    opened_at: datetime
    anchor: datetime = Field(description="first failure, shifted by time spent paused")
    invoices: list[InvoiceState] = []
    attempts: list[AttemptRecord] = []
    notifications: list[NotificationRecord] = []
    timeline: list[TimelineEntry] = []
    customer: CustomerProfile | None = None
    decline_category: DeclineCategory | None = None
    last_decline: ChargeResult | None = None
    current_card: str | None = None
    card_blocked: bool = False
    card_budget: CardBudget | None = Field(None, description="the card's budget across cases, as the last charge learned it")
    cards_tried: list[str] = Field([], description="backup cards tried in this case (each once)")
    card_update_pending: bool = False
    next_retry_index: int = Field(0, description="first retry offset of the policy not used yet")
    ladder_steps_done: list[int] = []
    pending_sms: list[PendingSms] = []
    banner_template: str | None = None
    settled_before_failure: list[str] = Field(
        [], description="invoices reported paid before their failure reached the case"
    )
    cancel_requested: str | None = None
    canceled_by_stripe_dunning: bool = Field(False, description="Stripe's own dunning canceled the subscription")
    late_failures: list[PaymentFailed] = []
    last_message_at: datetime | None = None
    grace_extension_days: int = Field(0, description="operator extensions of earlier releases, in days")
    grace_extension: timedelta = timedelta(0)
    customer_extensions: int = Field(0, description="times the customer took more time on their page")
    canceled_by_customer: bool = Field(False, description="the customer canceled on their page")
    feedback: CustomerFeedback | None = None
    closed_at: datetime | None = None
    paused: bool = False
    pause_reason: str | None = None
    paused_at: datetime | None = None
    access: AccessState = AccessState.GRACE
    suspended_at: datetime | None = None
    outcome: Stage | None = None
    seen_event_ids: list[str] = []
    ledger: LedgerProgress = Field(default_factory=LedgerProgress)
    experiment: str | None = Field(None, description="pinned at the opening, carried across continue-as-new")
    arm: str | None = None


class PendingSms(_Model):
    """An SMS held back by the customer's quiet hours: a durable timer, never a drop."""

    due_at: datetime
    template: str
    step: str
    step_channels: list[Channel] = Field(
        description="the step's channels: an SMS failure falls back to email only if email was not among them"
    )


class CaseStatus(_Model):
    """The `status` query: the whole case as an operator reads it."""

    case_id: str
    subscription_id: str
    customer_id: str
    policy: str
    stage: Stage
    outcome: Stage | None
    access: AccessState
    opened_at: datetime
    amount_due: int
    currency: str | None
    outstanding_invoices: list[InvoiceState]
    invoices: list[InvoiceState]
    decline_category: DeclineCategory | None
    attempts: list[AttemptRecord]
    notifications: list[NotificationRecord]
    timeline: list[TimelineEntry]
    paused: bool
    pause_reason: str | None
    grace_ends_at: datetime | None
    next_action: str | None
    next_action_at: datetime | None
    banner_template: str | None = Field(
        None, description="template of the in-app banner the SaaS app should show, None when none"
    )
    closed_at: datetime | None = None
    suspended_at: datetime | None = None
    cancel_at: datetime | None = Field(None, description="when the subscription is canceled if still unpaid")
    next_retry_at: datetime | None = None
    customer_locale: str | None = None
    customer_timezone: str | None = None
    customer_timezone_source: str | None = Field(None, description="where the zone came from (None: not known)")
    customer_timezone_candidates: list[str] = Field([], description="the zones the customer may be in")
    plan_name: str | None = None
    self_service_grace: timedelta | None = Field(None, description="what 'I need more time' gives")
    self_service_grace_left: int = Field(0, description="how often the customer may still take more time")
    customer_extensions: int = 0
    feedback: CustomerFeedback | None = None
    card_budget: CardBudget | None = Field(
        None, description="the card's 30-day budget across every case charging it, as the last charge learned it"
    )
    card_budget_note: str | None = Field(None, description="the card's budget in words: left, spent and by which cases")


class RetryNowResult(_Model):
    results: list[ChargeResult]
    stage: Stage


DunningInput.model_rebuild()
CaseState.model_rebuild()
