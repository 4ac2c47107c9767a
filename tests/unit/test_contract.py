"""The contract's names, spelled here once (DESIGN.md §2) and nowhere else in the service.

Webhooks, operators, dashboards and running cases depend on these names; a second spelling in
some module drifts the day one of them changes. So this file holds the literal list, checks
that `dunning/contract.py` and what the worker registers match it, and reads the service's
source to find any module that types one of them again instead of importing it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import temporalio.activity
import temporalio.workflow

from dunning import contract

ROOT = Path(__file__).resolve().parents[2]

WORKFLOW_TYPE = "DunningWorkflow"
TASK_QUEUE = "dunning"
SIGNALS = [
    "payment_failed",
    "card_updated",
    "invoice_paid",
    "subscription_canceled",
    "pause",
    "resume",
    "extend_grace",
]
UPDATES = ["retry_now"]
QUERIES = ["status"]
ACTIVITIES = [
    "charge_invoice",
    "send_notification",
    "suspend_access",
    "restore_access",
    "cancel_subscription",
    "get_customer",
    "record_case",
    "list_saved_cards",
]
SEARCH_ATTRIBUTES = {
    "DunningStage": "Keyword",
    "CustomerId": "Keyword",
    "SubscriptionId": "Keyword",
    "AmountDue": "Int",
    "Currency": "Keyword",
    "DeclineCategory": "Keyword",
    "RetryAttempts": "Int",
    "NextActionAt": "Datetime",
    "DunningOutcome": "Keyword",
    "DunningPolicy": "Keyword",
    "ExperimentArm": "Keyword",
}
WORKFLOW_ID_PREFIX = "dunning-"
# Pre-dunning (DESIGN.md §2): its own workflow type and id; it takes the cases' `card_updated`.
CARD_EXPIRY_WORKFLOW_TYPE = "CardExpiryWorkflow"
CARD_EXPIRY_ID_PREFIX = "card-expiry-"
CARD_EXPIRY_SIGNALS = ["renewal_upcoming", "card_updated"]


# --- the contract module and what the worker registers ------------------------------------


def test_contract_module_spells_the_names_of_the_design() -> None:
    assert contract.WORKFLOW_TYPE == WORKFLOW_TYPE
    assert contract.TASK_QUEUE == TASK_QUEUE
    assert contract.workflow_id("sub_123") == "dunning-sub_123"
    assert contract.subscription_of("dunning-sub_123") == "sub_123"
    assert [signal.value for signal in contract.Signal] == SIGNALS
    assert [contract.UPDATE_RETRY_NOW] == UPDATES
    assert [contract.QUERY_STATUS] == QUERIES
    assert [activity.name for activity in contract.ACTIVITIES] == ACTIVITIES
    assert contract.search_attribute_types() == SEARCH_ATTRIBUTES
    assert contract.CARD_EXPIRY_WORKFLOW_TYPE == CARD_EXPIRY_WORKFLOW_TYPE
    assert contract.card_expiry_workflow_id("sub_123") == "card-expiry-sub_123"
    assert [signal.value for signal in contract.CardExpirySignal] == CARD_EXPIRY_SIGNALS


def test_the_workflow_and_the_activities_register_under_the_contracts_names() -> None:
    from activities.case_activities import NotificationActivities, PaymentActivities, case_activities
    from activities.ledger_activities import LedgerActivities
    from activities.sandbox import MemoryConsentStore, SandboxLinks, SandboxOutbox, SandboxPayments
    from runtime.ledger import MemoryLedger
    from workflows.dunning_workflow import DunningWorkflow

    # The SDK keeps the registered names on private definitions; no public API reads them.
    definition = temporalio.workflow._Definition.must_from_class(DunningWorkflow)
    assert definition.name == WORKFLOW_TYPE
    assert sorted(definition.signals) == sorted(SIGNALS)
    assert sorted(definition.updates) == UPDATES
    assert sorted(definition.queries) == QUERIES

    from workflows.card_expiry_workflow import CardExpiryWorkflow

    reminders = temporalio.workflow._Definition.must_from_class(CardExpiryWorkflow)
    assert reminders.name == CARD_EXPIRY_WORKFLOW_TYPE
    assert sorted(reminders.signals) == sorted(CARD_EXPIRY_SIGNALS)
    assert sorted(reminders.queries) == QUERIES

    payments, outbox = SandboxPayments(), SandboxOutbox()
    registered = [
        *case_activities(
            PaymentActivities(payments), NotificationActivities(payments, outbox, outbox, MemoryConsentStore(), SandboxLinks())
        ),
        *LedgerActivities(MemoryLedger()).activities(),
    ]
    names = [temporalio.activity._Definition.must_from_callable(fn).name for fn in registered]
    assert sorted(names) == sorted(ACTIVITIES)


# --- nobody else spells them ---------------------------------------------------------------

# The service's own code: everything that runs in production, but not tests, bench or docs.
SERVICE = ["dunning", "workflows", "activities", "runtime", "starter", "worker.py"]
CONTRACT_MODULE = "dunning/contract.py"

# Names unlikely to mean anything else: any string constant equal to one is a second spelling.
DISTINCTIVE = {WORKFLOW_TYPE, WORKFLOW_ID_PREFIX, CARD_EXPIRY_WORKFLOW_TYPE, CARD_EXPIRY_ID_PREFIX, *SEARCH_ATTRIBUTES} | {
    name for name in SIGNALS + CARD_EXPIRY_SIGNALS + UPDATES + ACTIVITIES if "_" in name
}
# Everyday words ("status", "pause", "dunning"): only where Temporal reads them as a name.
EVERYDAY = {TASK_QUEUE, *SIGNALS, *UPDATES, *QUERIES} - DISTINCTIVE

# A call whose name says it talks to Temporal (or to a helper that does): its string arguments
# are signal, update, query, activity or workflow names.
TEMPORAL_CALLEE = re.compile(r"signal|query|update|workflow|activity|^defn$|^Worker$", re.IGNORECASE)
TEMPORAL_KEYWORDS = {"task_queue", "start_signal", "signal", "query", "update", "workflow", "activity"}
# A visibility filter naming the workflow type or a search attribute (contract.cases_query's job).
_SA = "|".join(SEARCH_ATTRIBUTES)
VISIBILITY_FILTER = re.compile(
    rf"WorkflowType\s*=\s*['\"]?{WORKFLOW_TYPE}\b"
    rf"|\b(?:{_SA})\s*(?:=|!=|<>|>=|<=|>|<|\bIN\b|\bIS\b|\bBETWEEN\b|\bSTARTS_WITH\b)"
    rf"|ORDER BY\s+(?:{_SA})\b"
)

# (module, name) pairs that use a contract word for something else; each says what instead.
ALLOWED = {
    # The first ladder template is called like the signal; templates are named by policy files.
    ("activities/messages.py", "payment_failed"),
    # A demo persona's scripted action; it steers the case through ops.extend_grace.
    ("starter/cli/demo.py", "extend_grace"),
}


def service_files() -> Iterator[Path]:
    for entry in SERVICE:
        path = ROOT / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _terminal_name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def _string(node: ast.AST | None) -> ast.Constant | None:
    return node if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _in_temporal_position(tree: ast.AST) -> set[int]:
    """ids of the string constants that Temporal would read as a name."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            args = [*node.args, *(kw.value for kw in node.keywords)]
            task_queue_env = any((s := _string(a)) and "TASK_QUEUE" in s.value.upper() for a in args)
            if TEMPORAL_CALLEE.search(_terminal_name(node.func)) or task_queue_env:
                found.update(id(a) for a in args if _string(a))
            found.update(id(kw.value) for kw in node.keywords if kw.arg in TEMPORAL_KEYWORDS and _string(kw.value))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any("task_queue" in _terminal_name(t).lower() for t in targets) and _string(node.value):
                found.add(id(node.value))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # Defaults line up with the last positional parameters; kw_defaults holds None for none.
            positional = [*node.args.posonlyargs, *node.args.args]
            pairs = list(zip(positional[len(positional) - len(node.args.defaults) :], node.args.defaults, strict=True))
            pairs += list(zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True))
            found.update(id(d) for p, d in pairs if "task_queue" in p.arg.lower() and _string(d))
    return found


def _documentation(tree: ast.AST) -> set[int]:
    """ids of docstrings and other bare string statements: prose may name anything."""
    return {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and _string(node.value)}


def second_spellings(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every contract name the module types instead of importing."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    prose = _documentation(tree)
    temporal = _in_temporal_position(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        constant = _string(node)
        if constant is None or id(constant) in prose:
            continue
        value = constant.value
        if value in DISTINCTIVE or (value in EVERYDAY and id(constant) in temporal):
            found.append((constant.lineno, value))
        elif match := VISIBILITY_FILTER.search(value):
            found.append((constant.lineno, match.group(0)))
    return sorted(found)


def test_no_module_of_the_service_types_a_contract_name_again() -> None:
    offenders = []
    for path in service_files():
        module = path.relative_to(ROOT).as_posix()
        if module == CONTRACT_MODULE:
            continue
        for line, name in second_spellings(path):
            if (module, name) not in ALLOWED:
                offenders.append(f"{module}:{line}: {name!r}")
    assert not offenders, "import these from dunning.contract instead:\n" + "\n".join(offenders)


def test_the_check_sees_each_way_of_spelling_a_name_again(tmp_path: Path) -> None:
    """The scanner itself: what it must catch, and the everyday words it must leave alone."""
    source = tmp_path / "module.py"
    source.write_text(
        '''"""Docstrings may say DunningWorkflow, `payment_failed` and dunning-sub_1."""
from temporalio import workflow

@workflow.signal(name="pause")                      # caught: a signal name on a decorator
def on_pause(self): ...

async def steer(handle, client):
    await handle.signal("extend_grace", {})           # caught: distinctive anywhere
    await handle.query("status")                      # caught: an everyday word as a query
    await _signal_open_case(client, "resume", None)   # caught: a helper named for signals
    await client.start_workflow("X", id=f"dunning-{1}", task_queue="dunning")  # caught twice
    q = f"CustomerId = '{1}'"                         # caught: a search attribute in a filter
    body = {"status": "ok"}                          # left: a JSON field
    typer_name = "dunning"                            # left: the CLI's name
    print("pause the case first")                     # left: prose

class Settings:
    dunning_task_queue: str = "dunning"               # caught: the task queue's default

def connect(address, *, task_queue: str = "dunning"): ...  # caught: a parameter's default
'''
    )
    assert [name for _, name in second_spellings(source)] == [
        "pause",
        "extend_grace",
        "status",
        "resume",
        "dunning",
        "dunning-",
        "CustomerId =",
        "dunning",
        "dunning",
    ]
