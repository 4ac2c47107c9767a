"""Any policy file the start-up check accepts runs a whole case without a workflow task failure.

A policy the loader let through but the workflow could not compute with (`grace = "P999999999D"`:
"date value out of range") failed the workflow task of every case on it, forever. Here random
policy files are written as TOML text, those `load_checked_policies` accepts (what the worker and
the API run at start) are pinned into a case, and the case runs to its end on the time-skipping
server: its result returns and its history holds no WORKFLOW_TASK_FAILED.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType

from activities.messages import TEMPLATES
from activities.policy_check import load_checked_policies
from dunning.policy import PolicyError
from tests.helpers.case_harness import CaseRunner, failure

#: Real seconds a case may take to reach its end with time skipping; a stuck case is a failure.
CASE_TIMEOUT = 30.0


# --- a tiny TOML writer for what a policy file holds --------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def toml_text(policy: dict[str, Any]) -> str:
    lines = [f"{key} = {toml_value(value)}" for key, value in policy.items() if key != "notify"]
    for step in policy.get("notify", []):
        lines += ["", "[[notify]]", *(f"{key} = {toml_value(value)}" for key, value in step.items())]
    return "\n".join(lines) + "\n"


# --- policies ------------------------------------------------------------------------------------

SECONDS = {"W": 604800, "D": 86400, "H": 3600, "M": 60, "S": 1}


def iso(amount: int, unit: str) -> str:
    return f"P{amount}{unit}" if unit in ("W", "D") else f"PT{amount}{unit}"


durations = st.one_of(
    st.sampled_from(["PT0S", "PT30S", "PT1M", "PT20H", "P1D", "P3D", "P7D", "P14D", "P30D", "P365D"]),
    st.builds(iso, st.integers(0, 400), st.sampled_from(["D", "H"])),
    st.builds(iso, st.integers(0, 10_000), st.sampled_from(["M", "S"])),
    st.builds(iso, st.integers(0, 53), st.just("W")),
    st.sampled_from(["P99999D", "P999999999D"]),  # what a typo or a "never" makes of a duration
)


def seconds(duration: str) -> int:
    return int(duration.strip("PT")[:-1]) * SECONDS[duration[-1]]


channels = st.lists(st.sampled_from(["email", "sms", "in_app"]), min_size=1, max_size=3, unique=True)
clock = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 59]))


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "name": "default",
        "retry_after": sorted(set(draw(st.lists(durations, max_size=6))), key=seconds),
        "grace": draw(durations),
        "cancel_after_suspension": draw(durations),
    }
    optional = {
        "retry_local_hour": st.integers(0, 23),
        "max_attempts_per_card_30d": st.integers(1, 35),
        "quiet_hours": st.lists(clock, min_size=2, max_size=2),
        "min_gap_between_messages": durations,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            policy[key] = draw(strategy)
    timed = sorted(set(draw(st.lists(durations, min_size=1, max_size=4))), key=seconds)
    steps: list[dict[str, Any]] = [
        {"at": at, "channels": draw(channels), "template": draw(st.sampled_from(TEMPLATES))} for at in timed
    ]
    for event in draw(st.lists(st.sampled_from(["suspended", "recovered", "canceled", "card_expiring"]), max_size=3)):
        steps.insert(
            draw(st.integers(0, len(steps))),
            {"on": event, "channels": draw(channels), "template": draw(st.sampled_from(TEMPLATES))},
        )
    policy["notify"] = steps
    return policy


outcomes = st.lists(st.sampled_from(["insufficient_funds", "generic_decline", "expired_card", None]), max_size=6)
first_declines = st.sampled_from(["insufficient_funds", "generic_decline", "expired_card", "authentication_required"])


@settings(
    max_examples=int(os.environ.get('FUZZ_EXAMPLES', 40)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
@given(policy=policies(), charges=outcomes, first_decline=first_declines)
async def test_any_policy_the_start_check_accepts_runs_a_whole_case(time_env, policy, charges, first_decline):
    text = toml_text(policy)
    with TemporaryDirectory() as folder:
        (Path(folder) / "default.toml").write_text(text)
        try:
            loaded = load_checked_policies(Path(folder))["default"]
        except PolicyError:
            assume(False)  # refused at start: no case ever runs on it
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", charges)
        case = await runner.open(failure(decline_code=first_decline), policy=loaded)
        try:
            status = await asyncio.wait_for(case.handle.result(), CASE_TIMEOUT)
        except TimeoutError:
            status = None
        history = await case.handle.fetch_history()
        task_failures = [
            event.workflow_task_failed_event_attributes.failure.message
            for event in history.events
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        assert not task_failures, f"workflow task failed: {task_failures[0]}\n{text}"
        assert status is not None, f"the case did not end within {CASE_TIMEOUT}s\n{text}"
        assert status.outcome is not None, text
