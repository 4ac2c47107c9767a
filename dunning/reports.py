"""How much came back: the recovery reports, computed over the ledger's cases (pure).

The definitions are written down in docs/analytics.md. In short: the population is the cohort of
cases *opened* in a period, and cases still open stay in the denominator (Churn Buster's
cohort-by-campaign-start), so a young cohort's rate rises as its cases settle; amounts are never
summed across currencies; time to recover runs from the first failure to the recovery.
`GET /v1/reports/recovery`, `dunning report` and the dashboard all call `recovery_report`.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from dunning.ledger import CaseFacts, Trigger, is_simulated
from dunning.models import Stage

Grouping = Literal["policy", "arm", "decline_category", "trigger", "channel", "step"]
GROUPINGS: tuple[Grouping, ...] = ("policy", "arm", "decline_category", "trigger", "channel", "step")
#: The key of a group for cases that have no value there (no arm, not recovered, no message yet).
NONE = "none"

#: The contract's JSON keys of `GET /v1/reports/recovery`, in order.
CONTRACT_KEYS = (
    "cases",
    "closed",
    "recovered",
    "recovery_rate",
    "recovered_amount",
    "median_hours_to_recover",
    "groups",
)


@dataclass(frozen=True)
class ReportRow:
    """One case of the cohort: its ledger facts, and when the customer first followed the update
    link on their page (None: never), which tells a card update made there from any other."""

    facts: CaseFacts
    update_clicked_at: datetime | None = None

    @property
    def simulated(self) -> bool:
        """A case of `dunning simulate` (its subscription id is `sim_…`)."""
        return is_simulated(self.facts.subscription_id)

    @property
    def recovered(self) -> bool:
        return self.facts.outcome == Stage.RECOVERED.value

    @property
    def closed(self) -> bool:
        return self.facts.outcome is not None

    @property
    def trigger(self) -> str | None:
        """The ledger's trigger, with a card update that followed a click on the page's update
        link told apart as `customer_page`."""
        facts = self.facts
        if (
            facts.trigger == Trigger.CARD_UPDATE.value
            and self.update_clicked_at is not None
            and facts.closed_at is not None
            and self.update_clicked_at <= facts.closed_at
        ):
            return Trigger.CUSTOMER_PAGE.value
        return facts.trigger

    def key(self, by: Grouping) -> str:
        facts = self.facts
        value = {
            "policy": facts.policy,
            "arm": facts.arm,
            "decline_category": facts.decline_category,
            "trigger": self.trigger,
            "channel": facts.last_channel,
            "step": facts.last_template,
        }[by]
        return value or NONE


class Figures(BaseModel):
    """Counts, the rate by count and the amounts of one set of cases."""

    cases: int
    closed: int
    recovered: int
    recovery_rate: float
    recovered_amount: dict[str, int]


class Group(Figures):
    key: str


class RecoveryReport(Figures):
    median_hours_to_recover: float | None
    groups: list[Group]
    # Beyond the contract's JSON (the CLI's --json and the dashboard show these too):
    by: str | None = None
    p90_hours_to_recover: float | None = None
    opened_amount: dict[str, int] = {}
    amount_recovery_rate: dict[str, float] = {}
    outcomes: dict[str, int] = {}
    open_cases: int = 0
    involuntary_churn: int = 0
    closed_by_customer: int = 0
    feedback: dict[str, int] = {}
    comments: list[str] = []
    simulated_cases: int = 0
    """How many of the cases are simulated (`dunning simulate`): shown only when asked for."""

    def contract_json(self) -> dict[str, Any]:
        """Exactly the contract's JSON (DESIGN.md §2, `GET /v1/reports/recovery`)."""
        full = self.model_dump(mode="json")
        groups = [{k: g[k] for k in ("key", "cases", "closed", "recovered", "recovery_rate", "recovered_amount")} for g in full["groups"]]
        return {**{k: full[k] for k in CONTRACT_KEYS if k != "groups"}, "groups": groups}


def rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _sum_by_currency(pairs: Iterable[tuple[str | None, int]]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for currency, amount in pairs:
        if currency:
            totals[currency.lower()] += amount
    return dict(sorted(totals.items()))


def figures(rows: Sequence[ReportRow]) -> Figures:
    recovered = [r for r in rows if r.recovered]
    return Figures(
        cases=len(rows),
        closed=sum(1 for r in rows if r.closed),
        recovered=len(recovered),
        recovery_rate=rate(len(recovered), len(rows)),
        recovered_amount=_sum_by_currency((r.facts.currency, r.facts.recovered_amount) for r in recovered),
    )


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (p90 of ten values is the ninth); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def hours_to_recover(rows: Iterable[ReportRow]) -> list[float]:
    return [r.facts.hours_to_recover for r in rows if r.recovered and r.facts.hours_to_recover is not None]


def groups(rows: Sequence[ReportRow], by: Grouping) -> list[Group]:
    """The cases split by one grouping, largest group first (then by key)."""
    keyed: dict[str, list[ReportRow]] = {}
    for row in rows:
        keyed.setdefault(row.key(by), []).append(row)
    found = [Group(key=key, **figures(members).model_dump()) for key, members in keyed.items()]
    return sorted(found, key=lambda g: (-g.cases, g.key))


def recovery_report(rows: Sequence[ReportRow], by: Grouping | None = None) -> RecoveryReport:
    """The whole report over a cohort (the caller chose the cases opened in the period)."""
    total = figures(rows)
    hours = hours_to_recover(rows)
    opened = _sum_by_currency((r.facts.currency, r.facts.amount) for r in rows)
    recovered_amount = total.recovered_amount
    outcomes = Counter(r.facts.outcome or "open" for r in rows)
    by_customer = [r for r in rows if r.facts.outcome == Stage.CLOSED_BY_CUSTOMER.value]
    return RecoveryReport(
        **total.model_dump(),
        median_hours_to_recover=round(statistics.median(hours), 2) if hours else None,
        groups=groups(rows, by) if by else [],
        by=by,
        p90_hours_to_recover=percentile(hours, 0.9),
        opened_amount=opened,
        amount_recovery_rate={c: rate(recovered_amount.get(c, 0), amount) for c, amount in opened.items()},
        outcomes=dict(sorted(outcomes.items())),
        open_cases=outcomes.get("open", 0),
        involuntary_churn=outcomes.get(Stage.CANCELED.value, 0),
        closed_by_customer=len(by_customer),
        feedback=dict(Counter(r.facts.feedback_reason or NONE for r in by_customer).most_common()),
        comments=[r.facts.feedback_comment for r in by_customer if r.facts.feedback_comment],
        simulated_cases=sum(1 for r in rows if r.simulated),
    )


# --- what the dashboard draws -------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    week: date  # the Monday the week starts on (UTC)
    figures: Figures


def week_of(at: datetime) -> date:
    day = at.date()
    return day - timedelta(days=day.weekday())


def weekly_cohorts(rows: Sequence[ReportRow]) -> list[Cohort]:
    """Cases by the week they opened, oldest first: each week's recovery rate and amounts."""
    weeks: dict[date, list[ReportRow]] = {}
    for row in rows:
        weeks.setdefault(week_of(row.facts.opened_at), []).append(row)
    return [Cohort(week, figures(members)) for week, members in sorted(weeks.items())]


#: Buckets of the time-to-recover distribution: (label, upper bound in hours).
RECOVERY_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 1 day", 24),
    ("1–3 days", 72),
    ("3–7 days", 168),
    ("7–14 days", 336),
    ("14–30 days", 720),
    ("> 30 days", math.inf),
)


def recovery_time_histogram(rows: Sequence[ReportRow]) -> list[tuple[str, int]]:
    counts = Counter[str]()
    for hours in hours_to_recover(rows):
        label = next(label for label, bound in RECOVERY_BUCKETS if hours < bound)
        counts[label] += 1
    return [(label, counts.get(label, 0)) for label, _ in RECOVERY_BUCKETS]

