"""Decline classification: what a Stripe decline means for the next step.

Hard declines are never retried on the same card (networks penalise it and the
answer will not change); soft declines follow the retry schedule; authentication
declines need the customer to confirm the payment themselves.
Sources: Stripe's decline-code table and its `advice_code` values.
"""

from __future__ import annotations

from dunning.models import DeclineCategory

HARD_DECLINE_CODES = frozenset(
    {
        "stolen_card",
        "lost_card",
        "pickup_card",
        "restricted_card",
        "security_violation",
        "fraudulent",
        "merchant_blacklist",
        "incorrect_number",
        "invalid_number",
        "invalid_account",
        "expired_card",
        "card_not_supported",
        "currency_not_supported",
        "do_not_honor_permanent",
        "do_not_try_again",
        "new_account_information_available",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "stop_payment_order",
        "transaction_not_allowed",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "incorrect_cvc",
        "invalid_cvc",
    }
)

SOFT_DECLINE_CODES = frozenset(
    {
        "insufficient_funds",
        "generic_decline",
        "do_not_honor",
        "try_again_later",
        "processing_error",
        "issuer_not_available",
        "reenter_transaction",
        "approve_with_id",
        "call_issuer",
        "withdrawal_count_limit_exceeded",
        "not_permitted",
        "no_action_taken",
        "service_not_allowed",
        "duplicate_transaction",
        "offline_pin_required",
        "online_or_offline_pin_required",
        "pin_try_exceeded",
        "testmode_decline",
        "card_velocity_exceeded",
    }
)

#: Hard declines about the data we sent (an expiry, a CVC, a currency), not the card itself: a card
#: update with the same number (same fingerprint) may well pay.
DATA_DECLINE_CODES = frozenset(
    {
        "expired_card",
        "incorrect_cvc",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "card_not_supported",
        "currency_not_supported",
    }
)

#: Visa's category 1 ("issuer will never approve": lost, stolen, pick up, closed or invalid
#: account, stop payment…) and Mastercard's equivalents: never retried on that card, by any case.
NEVER_RETRY_CODES = HARD_DECLINE_CODES - DATA_DECLINE_CODES

AUTHENTICATION_CODES = frozenset({"authentication_required", "authentication_not_handled"})

# Stripe's `advice_code` overrides the decline code when it speaks.
ADVICE = {
    "do_not_try_again": DeclineCategory.HARD,
    "confirm_card_data": DeclineCategory.HARD,
    "try_again_later": DeclineCategory.SOFT,
}


def classify_decline(
    decline_code: str | None = None,
    code: str | None = None,
    advice_code: str | None = None,
) -> DeclineCategory:
    """Category of a decline from Stripe's `decline_code`, error `code` and `advice_code`."""
    if advice_code in ADVICE:
        return ADVICE[advice_code]
    if code in AUTHENTICATION_CODES or decline_code in AUTHENTICATION_CODES:
        return DeclineCategory.AUTHENTICATION
    # The issuer's decline code is the precise one; the error code only speaks when it is absent
    # (`card_declined` alone says nothing more than "declined").
    reason = decline_code or code
    if reason in HARD_DECLINE_CODES:
        return DeclineCategory.HARD
    if reason in SOFT_DECLINE_CODES:
        return DeclineCategory.SOFT
    return DeclineCategory.UNKNOWN


def is_retryable_on_same_card(category: DeclineCategory) -> bool:
    """Unknown declines are treated as soft: retrying on schedule is the safe, common default."""
    return category in (DeclineCategory.SOFT, DeclineCategory.UNKNOWN)


def never_retry_card(decline_code: str | None = None, code: str | None = None, advice_code: str | None = None) -> bool:
    """A decline that ends retries on this card everywhere (the card's fingerprint), not just in
    the case that saw it: Visa's category 1, or Stripe's advice `do_not_try_again`."""
    if advice_code == "do_not_try_again":
        return True
    return (decline_code or code) in NEVER_RETRY_CODES
