"""Policy values that pass a lax loader and then hurt customers are refused at start.

Each test meets the problem where a user meets it: the loader's one-line error (file, field,
why), or the API refusing to start. The worker's own refusal runs the process:
tests/integration/test_policy_start.py.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from activities import messages
from activities.messages import missing_templates
from activities.policy_check import load_checked_policies
from dunning.policy import SHIPPED_POLICY_DIR, PolicyError, iso_duration, load_policies, load_policy_file
from runtime.settings import Settings
from starter.api.main import create_app
from tests.helpers.policy_files import LADDER, policy_text, write

def refused(path: Path) -> str:
    with pytest.raises(PolicyError) as error:
        load_policy_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message.removeprefix(f"{path}: ")


# --- durations: ISO 8601 strings only, within a year ------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        # pydantic alone reads a bare number as seconds: the case suspended 14 s after failing
        ("grace", "14", 'grace: must be an ISO 8601 duration string such as "P14D", not 14'),
        ("grace", "14.5", 'grace: must be an ISO 8601 duration string such as "P14D", not 14.5'),
        ("grace", '"14"', 'grace: must be an ISO 8601 duration string such as "P14D", not "14"'),
        ("grace", '"14 days"', 'must be an ISO 8601 duration string such as "P14D", not "14 days"'),
        ("grace", "00:00:14", 'grace: must be an ISO 8601 duration string such as "P14D", not 00:00:14'),
        ("grace", '"-P1D"', "grace: must be an ISO 8601 duration string"),
        ("cancel_after_suspension", "30", "cancel_after_suspension: must be an ISO 8601 duration string"),
        ("min_gap_between_messages", "72000", 'must be an ISO 8601 duration string such as "PT20H", not 72000'),
        ("retry_after", '["P1D", 259200]', "retry_after.1: must be an ISO 8601 duration string"),
        ("grace", '"P1M"', 'grace: months and years have no fixed length: write days or weeks, such as "P30D"'),
        ("cancel_after_suspension", '"P1Y"', "cancel_after_suspension: months and years have no fixed length"),
    ],
)
def test_a_duration_is_an_iso_8601_string(tmp_path: Path, field: str, value: str, why: str) -> None:
    assert why in refused(write(tmp_path, policy_text(**{field: value})))


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        # every case on such a policy failed its workflow task forever: "date value out of range"
        ("grace", '"P999999999D"', 'grace: must be at most P365D (a year), not "P999999999D"'),
        ("retry_after", '["P1D", "P99999D"]', 'retry_after.1: must be at most P365D (a year), not "P99999D"'),
        ("cancel_after_suspension", '"P53W"', "cancel_after_suspension: must be at most P365D"),
        ("min_gap_between_messages", '"PT9000H"', "min_gap_between_messages: must be at most P365D"),
        ("grace", '"P99999999999999999999999D"', "grace: must be at most P365D"),
    ],
)
def test_a_duration_is_at_most_a_year(tmp_path: Path, field: str, value: str, why: str) -> None:
    assert why in refused(write(tmp_path, policy_text(**{field: value})))


def test_a_ladder_step_at_far_in_the_future_is_refused(tmp_path: Path) -> None:
    ladder = LADDER.replace('at = "P10D"', 'at = "P999999999D"')
    assert "notify.1.at: must be at most P365D" in refused(write(tmp_path, policy_text(ladder=ladder)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("P14D", timedelta(days=14)), ("PT20H", timedelta(hours=20)), ("P2W", timedelta(weeks=2)),
     ("PT1M30S", timedelta(seconds=90)), ("P1DT12H", timedelta(days=1, hours=12)), ("PT0.5S", timedelta(seconds=0.5)),
     ("P365D", timedelta(days=365))],
)
def test_iso_durations_within_bounds_are_read_exactly(tmp_path: Path, text: str, expected: timedelta) -> None:
    policy = load_policy_file(write(tmp_path, policy_text(grace=f'"{text}"', retry_after="[]")))
    assert policy.grace == expected


def test_durations_are_reported_the_way_files_write_them() -> None:
    assert [iso_duration(d) for d in (timedelta(0), timedelta(days=14), timedelta(hours=20), timedelta(seconds=90))] == [
        "PT0S", "P14D", "PT20H", "PT1M30S"
    ]


# --- other values a file may get subtly wrong ------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("quiet_hours", '["25:00", "08:00"]', 'quiet_hours: must be two local times as "HH:MM" strings'),
        ("quiet_hours", '["21:00"]', "quiet_hours: must be two local times"),
        ("quiet_hours", "[75600, 28800]", "quiet_hours: must be two local times"),
        ("quiet_hours", '["21:00+02:00", "08:00"]', "quiet_hours: must be two local times"),
        ("retry_local_hour", "true", "retry_local_hour: must be a whole number, not true"),
        ("retry_local_hour", '"9"', 'retry_local_hour: must be a whole number, not "9"'),
        ("max_attempts_per_card_30d", "10.0", "max_attempts_per_card_30d: must be a whole number, not 10.0"),
    ],
)
def test_times_and_counts_are_written_plainly(tmp_path: Path, field: str, value: str, why: str) -> None:
    assert why in refused(write(tmp_path, policy_text(**{field: value})))


# --- the ladder and the schedule make sense -------------------------------------------------


def test_retry_after_must_be_written_out(tmp_path: Path) -> None:
    message = refused(write(tmp_path, policy_text(retry_after=None)))
    assert message.startswith("retry_after: missing") and "retry_after = []" in message


def test_a_policy_without_any_ladder_step_is_refused(tmp_path: Path) -> None:
    # used to be accepted silently: the customer lost access without a word
    message = refused(write(tmp_path, policy_text(ladder="")))
    assert message.startswith("notify: no step with `at` falls due within grace (P14D)")


def test_a_ladder_of_events_only_is_refused(tmp_path: Path) -> None:
    ladder = '[[notify]]\non = "suspended"\nchannels = ["email"]\ntemplate = "suspended"\n'
    assert "notify: no step with `at` falls due within grace" in refused(write(tmp_path, policy_text(ladder=ladder)))


def test_the_first_message_must_come_before_suspension(tmp_path: Path) -> None:
    ladder = '[[notify]]\nat = "P20D"\nchannels = ["email"]\ntemplate = "reminder"\n'
    assert "notify: no step with `at` falls due within grace (P14D)" in refused(
        write(tmp_path, policy_text(ladder=ladder))
    )


def test_ladder_steps_are_written_in_the_order_they_run(tmp_path: Path) -> None:
    ladder = LADDER.replace('at = "P10D"', 'at = "PT0S"')
    assert "notify.1.at: PT0S is not after notify.0.at (PT0S)" in refused(write(tmp_path, policy_text(ladder=ladder)))
    ladder = LADDER + '[[notify]]\nat = "P3D"\nchannels = ["email"]\ntemplate = "reminder"\n'
    assert "notify.3.at: P3D is not after notify.1.at (P10D)" in refused(write(tmp_path, policy_text(ladder=ladder)))


def test_nothing_is_scheduled_after_the_case_is_canceled(tmp_path: Path) -> None:
    text = policy_text(grace='"P7D"', cancel_after_suspension='"P7D"', retry_after='["P1D", "P20D"]')
    message = refused(write(tmp_path, text))
    assert "retry_after.1: P20D comes after the case is canceled at P14D (grace + cancel_after_suspension)" in message
    assert "notify.1.at: P10D" not in message  # day 10 is during suspension: still reached
    text = policy_text(grace='"P3D"', cancel_after_suspension='"P5D"', retry_after="[]")
    assert "notify.1.at: P10D comes after the case is canceled at P8D" in refused(write(tmp_path, text))


def test_a_step_names_each_channel_once(tmp_path: Path) -> None:
    ladder = LADDER.replace('["email", "in_app"]', '["email", "in_app", "email"]')
    assert "notify.0.channels: email listed more than once" in refused(write(tmp_path, policy_text(ladder=ladder)))


# --- templates: checked where they live, at every start ---------------------------------------


def test_missing_templates_lists_every_file_a_name_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_templates(["payment_failed", "reminder", "card_expiring"]) == []
    assert missing_templates(["thank_you"]) == [
        f"{lang}/thank_you.{suffix}" for lang in messages.LANGUAGES for suffix in messages.TEMPLATE_FILES
    ]
    # a template written in English only is missing for German customers
    templates = tmp_path / "templates"
    shutil.copytree(messages.TEMPLATE_DIR, templates)
    for suffix in messages.TEMPLATE_FILES:
        (templates / "en" / f"thank_you.{suffix}").write_text("Thanks")
    (templates / "de" / "reminder.sms.txt").unlink()
    monkeypatch.setattr(messages, "TEMPLATE_DIR", templates)
    assert missing_templates(["thank_you", "reminder"]) == [
        *(f"de/thank_you.{suffix}" for suffix in messages.TEMPLATE_FILES),
        "de/reminder.sms.txt",
    ]


def test_an_unknown_template_stops_the_start(tmp_path: Path) -> None:
    # used to load, then fail the first email with UnknownTemplate
    path = write(tmp_path, policy_text(ladder=LADDER.replace('"final_notice"', '"final_notise"')))
    load_policy_file(path)  # the loader alone cannot know which templates exist
    with pytest.raises(PolicyError) as error:
        load_checked_policies(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{path}: notify.1.template: no template 'final_notise' in every language")
    assert "en/final_notise.email.txt" in message and "\n" not in message


def test_the_api_refuses_to_start_on_a_bad_policy(tmp_path: Path) -> None:
    for text, why in [
        (policy_text(grace="14"), "grace: must be an ISO 8601 duration string"),
        (policy_text(ladder=LADDER.replace('template = "suspended"', 'template = "no_such"')), "notify.2.template"),
    ]:
        path = write(tmp_path, text)
        with pytest.raises(PolicyError, match=why) as error:
            create_app(Settings(dunning_policy_dir=tmp_path))
        assert str(error.value).startswith(str(path))


def test_shipped_policies_pass_every_check_and_are_logged_at_start() -> None:
    with capture_logs() as logs:
        policies = load_checked_policies()
    assert policies.keys() == load_policies(SHIPPED_POLICY_DIR).keys()
    loaded = {entry["policy"]: entry for entry in logs if entry["event"] == "policy loaded"}
    assert loaded["default"]["retries"] == 6 and loaded["default"]["ladder_steps"] == 3
    assert not [entry for entry in logs if entry["log_level"] == "warning"]


def test_a_policy_that_never_retries_is_accepted_and_said_at_start(tmp_path: Path) -> None:
    write(tmp_path, policy_text(retry_after="[]"))
    with capture_logs() as logs:
        policy = load_checked_policies(tmp_path)["default"]
    assert policy.retry_after == []
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [(w["policy"], w["event"]) for w in warnings] == [
        ("default", "policy never retries the charge: it only asks the customer for a new card")
    ]
