"""The card's budget across cases and backup cards, as the case's pure rules decide them."""

from __future__ import annotations

from datetime import timedelta

from dunning.declines import never_retry_card
from dunning.models import CardBudget, ChargeResult, SavedCard, Stage
from dunning.policy import load_policies
from tests.helpers.case_harness import make_policy
from tests.unit.test_case_rules import CARD, DAY, T0, after_first_email, opened

SPENT = CardBudget(
    fingerprint="fp_1", payment_method_id=CARD, limit=3, used=3, used_by=["dunning-sub_2", "dunning-sub_1"],
    frees_at=T0 + 20 * DAY,
)


def refused(budget: CardBudget) -> ChargeResult:
    code = "card_blocked" if budget.blocked_code else "card_budget_exhausted"
    return ChargeResult(invoice_id="in_1", status="refused", code=code, payment_method_id=CARD, card_budget=budget)


def test_a_refusal_is_no_attempt_and_the_next_retry_waits_for_the_card_to_free_up() -> None:
    case = after_first_email(opened())
    request = case.budgeted_charge_request(case.open_invoices()[0])
    assert request.card_budget_limit == case.policy.max_attempts_per_card_30d
    case.record_charge(request, "scheduled retry 1/6", refused(SPENT), T0 + DAY)
    assert [a.attempt for a in case.state.attempts] == [0]
    assert case.state.invoices[0].attempts == 0  # the same idempotency key next time
    assert case.stage() is Stage.RETRYING
    assert not case.card_budget_left(T0 + 2 * DAY) and case.card_budget_left(T0 + 20 * DAY)
    retry = case.next_retry()
    assert retry is not None and retry[1] == T0 + 20 * DAY
    refusal = case.retry_now_refusal(T0 + 2 * DAY, charging=False)
    assert refusal == "this card reached its budget of 3 attempts in 30 days across cases (used by dunning-sub_2, dunning-sub_1)"
    status = case.status(case.plan())
    assert status.card_budget == SPENT
    assert status.card_budget_note == (
        "Card budget spent: 3 of 3 attempts in 30 days, by dunning-sub_2, dunning-sub_1;"
        " the next attempt frees 2026-11-22 10:00 UTC"
    )
    assert status.card_budget_note in case.details(case.plan())


def test_a_never_retry_decline_in_another_case_ends_this_ones_retries_on_that_card() -> None:
    case = after_first_email(opened())
    blocked = SPENT.model_copy(update={"used": 1, "blocked_code": "stolen_card", "blocked_by": "dunning-sub_2"})
    case.record_charge(case.budgeted_charge_request(case.open_invoices()[0]), "scheduled retry 1/6", refused(blocked), T0 + DAY)
    assert case.stage() is Stage.AWAITING_PAYMENT_METHOD and case.next_retry() is None
    assert "new payment method" in (case.retry_now_refusal(T0 + DAY, charging=False) or "")
    assert case.card_budget_line() == "Card blocked for every case: stolen_card in dunning-sub_2"


def test_a_new_card_forgets_what_the_old_one_learned() -> None:
    from dunning.models import CardUpdated

    case = after_first_email(opened())
    case.record_charge(case.budgeted_charge_request(case.open_invoices()[0]), "retry", refused(SPENT), T0 + DAY)
    case.card_updated(CardUpdated(payment_method_id="pm_new", event_id="evt_1"), T0 + 2 * DAY)
    assert case.card_budget_left(T0 + 2 * DAY) and case.shared_budget() is None


def test_never_retry_codes_are_visa_category_one_not_data_errors() -> None:
    for code in ("stolen_card", "lost_card", "pickup_card", "invalid_account", "incorrect_number", "restricted_card",
                 "do_not_try_again", "revocation_of_authorization"):
        assert never_retry_card(code), code
    assert never_retry_card("generic_decline", advice_code="do_not_try_again")
    for code in ("expired_card", "incorrect_cvc", "insufficient_funds", "generic_decline", None):
        assert not never_retry_card(code), code


def cards() -> list[SavedCard]:
    return [
        SavedCard(payment_method_id=CARD, fingerprint="fp_1", is_default=True),
        SavedCard(payment_method_id="pm_same_number", fingerprint="fp_1"),
        SavedCard(payment_method_id="pm_expired", fingerprint="fp_2", exp_month=1, exp_year=2020),
        SavedCard(payment_method_id="pm_backup", fingerprint="fp_3", brand="mastercard", last4="4444", exp_month=1, exp_year=2030),
        SavedCard(payment_method_id="pm_backup_2", fingerprint="fp_4"),
    ]


def test_backup_cards_are_other_unexpired_cards_each_tried_once() -> None:
    case = opened(policy=make_policy(try_backup_cards=True), first=None)
    case.record_charge(
        case.charge_request(case.open_invoices()[0]),
        "scheduled retry 1/6",
        ChargeResult(invoice_id="in_1", status="declined", category="hard", decline_code="lost_card", payment_method_id=CARD),
        T0 + DAY,
    )
    backup = case.backup_card(cards(), T0 + DAY)
    assert backup is not None and backup.payment_method_id == "pm_backup"
    case.switch_to_backup(backup, T0 + DAY)
    assert case.state.current_card == "pm_backup" and not case.state.card_blocked
    assert case.state.timeline[-1].detail == "trying the customer's saved Mastercard ending 4444"
    case.state.card_blocked = True  # the backup declined hard as well
    nxt = case.backup_card(cards(), T0 + DAY)
    assert nxt is not None and nxt.payment_method_id == "pm_backup_2"
    case.switch_to_backup(nxt, T0 + DAY)
    case.state.card_blocked = True
    assert case.backup_card(cards(), T0 + DAY) is None


def test_backup_cards_only_when_the_policy_says_so_and_the_shipped_high_value_does() -> None:
    case = opened()
    case.state.card_blocked = True
    assert case.backup_card(cards(), T0) is None
    assert make_policy().try_backup_cards is False
    assert "try_backup_cards" not in make_policy().model_dump()  # pinned policies read by the previous release
    shipped = load_policies()
    assert shipped["high_value"].try_backup_cards is True and shipped["default"].try_backup_cards is False


def test_the_thank_you_names_the_card_that_paid() -> None:
    case = after_first_email(opened())
    paid = ChargeResult(invoice_id="in_1", status="succeeded", payment_method_id="pm_backup", card_brand="mastercard", card_last4="4444")
    case.record_charge(case.charge_request(case.open_invoices()[0]), "backup card", paid, T0 + DAY + timedelta(hours=1))
    context = case.message_context(T0 + 2 * DAY)
    assert (context["paid_with_brand"], context["paid_with_last4"]) == ("Mastercard", "4444")
