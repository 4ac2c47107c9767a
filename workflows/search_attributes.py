"""The contract's custom search attributes: what operators filter cases by in the UI and CLI."""

from temporalio.common import SearchAttributeKey

DUNNING_STAGE = SearchAttributeKey.for_keyword("DunningStage")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
SUBSCRIPTION_ID = SearchAttributeKey.for_keyword("SubscriptionId")
AMOUNT_DUE = SearchAttributeKey.for_int("AmountDue")
CURRENCY = SearchAttributeKey.for_keyword("Currency")
DECLINE_CATEGORY = SearchAttributeKey.for_keyword("DeclineCategory")
RETRY_ATTEMPTS = SearchAttributeKey.for_int("RetryAttempts")
NEXT_ACTION_AT = SearchAttributeKey.for_datetime("NextActionAt")
DUNNING_OUTCOME = SearchAttributeKey.for_keyword("DunningOutcome")

ALL = (
    DUNNING_STAGE,
    CUSTOMER_ID,
    SUBSCRIPTION_ID,
    AMOUNT_DUE,
    CURRENCY,
    DECLINE_CATEGORY,
    RETRY_ATTEMPTS,
    NEXT_ACTION_AT,
    DUNNING_OUTCOME,
)


def dev_server_flags() -> list[str]:
    """`--search-attribute Name=Type` flags for `temporal server start-dev`."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int", "DATETIME": "Datetime"}
    return [flag for key in ALL for flag in ("--search-attribute", f"{key.name}={kinds[key.indexed_value_type.name]}")]
