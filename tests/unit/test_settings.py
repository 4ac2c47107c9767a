"""Every variable the service reads is a `Settings` field: secrets never show in its repr."""

from __future__ import annotations

import pytest

from runtime.settings import Settings, reveal


def test_the_environment_lands_in_settings_and_secrets_stay_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "DUNNING_API_TOKEN": "op-token-123456",
        "DUNNING_ENCRYPTION_KEYS": "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "STRIPE_API_KEY": "sk_test_hidden",
        "STRIPE_WEBHOOK_SECRET": "whsec_hidden",
        "SENDGRID_API_KEY": "SG.hidden",
        "TWILIO_AUTH_TOKEN": "twilio-hidden",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DUNNING_LOG_LEVEL", "debug")
    monkeypatch.setenv("DUNNING_LOG_FORMAT", "console")
    monkeypatch.setenv("DUNNING_PUBLIC_URL", "https://dunning.example.com")
    monkeypatch.setenv("DUNNING_CODEC_CORS_ORIGINS", "https://ui.example.com/, https://other.example.com")

    settings = Settings()

    assert reveal(settings.dunning_encryption_keys) == secrets["DUNNING_ENCRYPTION_KEYS"]
    assert reveal(settings.dunning_api_token) == secrets["DUNNING_API_TOKEN"]
    assert (settings.dunning_log_level, settings.dunning_log_format) == ("debug", "console")
    assert settings.dunning_public_url == "https://dunning.example.com"
    assert settings.codec_cors_origins() == {"https://ui.example.com", "https://other.example.com"}
    for value in secrets.values():
        assert value not in repr(settings) and value not in str(settings)


def test_defaults() -> None:
    settings = Settings(_env_file=None)
    assert settings.dunning_public_url is None  # the request's own URL
    assert settings.codec_cors_origins() == {"http://localhost:8233", "http://127.0.0.1:8233"}
    assert reveal(settings.dunning_api_token) == ""


def test_an_empty_policy_dir_means_the_shipped_policies(monkeypatch) -> None:
    from dunning.policy import SHIPPED_POLICY_DIR

    monkeypatch.setenv("DUNNING_POLICY_DIR", "")  # compose passes a variable it has no value for
    assert Settings().dunning_policy_dir == SHIPPED_POLICY_DIR
