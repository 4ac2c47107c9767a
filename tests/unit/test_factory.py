"""The worker's backends from the settings: a provider chosen without what it needs stops the start."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.factory import build_activities, build_email_backend
from activities.sandbox import SandboxOutbox
from activities.sendgrid_backend import SendGridEmail
from runtime.settings import ConfigError, Settings

CHOOSERS = ("DUNNING_PAYMENTS", "DUNNING_EMAIL", "DUNNING_SMS", "DUNNING_EMAIL_FROM")
KEYS = ("STRIPE_API_KEY", "SENDGRID_API_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_FROM_NUMBER")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what each test sets: the shell running the tests may carry real provider settings."""
    for var in CHOOSERS + KEYS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DUNNING_STATE_DIR", str(tmp_path))


@pytest.mark.parametrize(
    ("environment", "chosen_by"),
    [
        ({"DUNNING_EMAIL": "sendgrid", "SENDGRID_API_KEY": "SG.test"}, "DUNNING_EMAIL=sendgrid"),
        ({"SENDGRID_API_KEY": "SG.test"}, "SENDGRID_API_KEY is set"),  # the default picks SendGrid
    ],
)
def test_sendgrid_without_a_sender_stops_the_worker_at_start(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], chosen_by: str
) -> None:
    for var, value in environment.items():
        monkeypatch.setenv(var, value)
    settings = Settings()
    assert settings.email_backend() == "sendgrid"
    with pytest.raises(ConfigError) as error:
        build_activities(settings)
    message = str(error.value)
    assert "DUNNING_EMAIL_FROM is not set" in message and chosen_by in message
    assert "\n" not in message
    assert "example.com" not in message


def test_sendgrid_sends_from_the_configured_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test")
    monkeypatch.setenv("DUNNING_EMAIL_FROM", "billing@yourco.example")
    email = build_email_backend(Settings(), SandboxOutbox())
    assert isinstance(email, SendGridEmail) and email.from_email == "billing@yourco.example"
    assert len(build_activities(Settings())) == 8


def test_the_sandbox_needs_no_sender() -> None:
    settings = Settings()
    assert settings.email_backend() == "sandbox" and settings.dunning_email_from is None
    outbox = SandboxOutbox()
    assert build_email_backend(settings, outbox) is outbox
    assert len(build_activities(settings)) == 8


@pytest.mark.parametrize(
    ("environment", "missing"),
    [
        ({"DUNNING_EMAIL": "sendgrid", "DUNNING_EMAIL_FROM": "b@yourco.example"}, "SENDGRID_API_KEY is not set"),
        ({"DUNNING_SMS": "twilio"}, "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN and TWILIO_FROM_NUMBER are not set"),
        ({"TWILIO_AUTH_TOKEN": "tok", "TWILIO_ACCOUNT_SID": "AC1"}, "TWILIO_FROM_NUMBER is not set"),
        ({"DUNNING_PAYMENTS": "stripe"}, "STRIPE_API_KEY is not set"),
    ],
)
def test_a_provider_chosen_without_its_keys_stops_the_worker_in_one_line(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], missing: str
) -> None:
    for var, value in environment.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as error:
        build_activities(Settings())
    assert str(error.value).startswith(missing) and "\n" not in str(error.value)
