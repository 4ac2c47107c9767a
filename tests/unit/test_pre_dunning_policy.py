"""`[[pre_dunning]]` in a policy file: held to the same strictness as the rest of the file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from activities.policy_check import load_checked_policies
from dunning.policy import SHIPPED_POLICY_DIR, PolicyError, load_policies, load_policy_file
from tests.helpers.policy_files import LADDER, policy_text, write


def reminder(before: str = '"P14D"', channels: str = '["email"]', template: str = '"card_expiring"') -> str:
    return f"\n[[pre_dunning]]\nbefore = {before}\nchannels = {channels}\ntemplate = {template}\n"


def refused(path: Path) -> str:
    with pytest.raises(PolicyError) as error:
        load_policy_file(path)
    return str(error.value).removeprefix(f"{path}: ")


def test_reminders_load_with_their_offsets(tmp_path: Path) -> None:
    path = write(tmp_path, policy_text(ladder=LADDER + reminder('"P14D"') + reminder('"P3D"', '["email", "sms"]')))
    policy = load_policy_file(path)
    assert [(r.before, r.channels) for r in policy.pre_dunning] == [
        (timedelta(days=14), ["email"]),
        (timedelta(days=3), ["email", "sms"]),
    ]


def test_no_reminders_is_pre_dunning_off(tmp_path: Path) -> None:
    assert load_policy_file(write(tmp_path, policy_text())).pre_dunning == []


@pytest.mark.parametrize(
    ("before", "why"),
    [
        ("14", 'pre_dunning.0.before: must be an ISO 8601 duration string such as "P14D", not 14'),
        ('"P1M"', "pre_dunning.0.before: months and years have no fixed length"),
        ('"PT0S"', "pre_dunning.0.before: must be positive"),
        ('"P366D"', "pre_dunning.0.before: must be at most P365D (a year)"),
    ],
)
def test_before_is_a_strict_positive_duration_within_a_year(tmp_path: Path, before: str, why: str) -> None:
    assert why in refused(write(tmp_path, policy_text(ladder=LADDER + reminder(before))))


def test_each_before_once(tmp_path: Path) -> None:
    path = write(tmp_path, policy_text(ladder=LADDER + reminder('"P3D"') + reminder('"PT72H"')))
    assert "pre_dunning.1.before: P3D is already pre_dunning.0.before: one reminder per time" in refused(path)


@pytest.mark.parametrize(
    ("channels", "why"),
    [
        ('["email", "email"]', "pre_dunning.0.channels: email listed more than once"),
        ('["fax"]', "pre_dunning.0.channels.0:"),
        ("[]", "pre_dunning.0.channels:"),
        ('["in_app"]', "pre_dunning.0.channels: in_app is not shown before a renewal"),
    ],
)
def test_channels(tmp_path: Path, channels: str, why: str) -> None:
    assert why in refused(write(tmp_path, policy_text(ladder=LADDER + reminder(channels=channels))))


def test_the_template_must_exist_in_every_language(tmp_path: Path) -> None:
    write(tmp_path, policy_text(ladder=LADDER + reminder(template='"card_expiring_soon"')))
    with pytest.raises(PolicyError) as error:
        load_checked_policies(tmp_path)
    assert "pre_dunning.0.template: no template 'card_expiring_soon' in every language" in str(error.value)


def test_shipped_policies_high_value_on_default_off() -> None:
    policies = load_policies(SHIPPED_POLICY_DIR)
    assert policies["default"].pre_dunning == []
    assert [(r.before, r.channels, r.template) for r in policies["high_value"].pre_dunning] == [
        (timedelta(days=14), ["email"], "card_expiring"),
        (timedelta(days=3), ["email"], "card_expiring"),
    ]


def test_a_policy_without_pre_dunning_is_pinned_into_cases_as_before() -> None:
    """Cases of a policy without pre-dunning carry the payload of the previous release, which a
    worker of that release (it forbids unknown fields) still decodes during a rolling deploy."""
    policies = load_policies(SHIPPED_POLICY_DIR)
    assert "pre_dunning" not in policies["default"].model_dump(mode="json")
    assert "pre_dunning" in policies["high_value"].model_dump(mode="json")
    assert type(policies["default"]).model_validate(policies["default"].model_dump(mode="json")) == policies["default"]
