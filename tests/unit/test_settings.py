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


def test_secrets_come_from_files_named_after_their_variables(tmp_path, monkeypatch) -> None:
    """Compose `secrets:` and Kubernetes Secret volumes hand the service files, not variables."""
    (tmp_path / "stripe_webhook_secret").write_text("whsec_from_file,whsec_old\n")
    (tmp_path / "dunning_database_url").write_text("postgresql+psycopg://dunning:s3cret@db:5432/dunning\n")
    (tmp_path / "stripe_api_key").write_text("")  # an optional secret left empty: the sandbox
    monkeypatch.setenv("DUNNING_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    monkeypatch.delenv("DUNNING_DATABASE_URL", raising=False)

    settings = Settings()

    assert settings.stripe_webhook_secrets() == ["whsec_from_file", "whsec_old"]
    assert settings.database_url() == "postgresql+psycopg://dunning:s3cret@db:5432/dunning"
    assert settings.payments_backend() == "sandbox"
    assert "s3cret" not in repr(settings)


def test_a_variable_in_the_environment_wins_over_its_secret_file(tmp_path, monkeypatch) -> None:
    (tmp_path / "dunning_api_token").write_text("from-file")
    monkeypatch.setenv("DUNNING_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("DUNNING_API_TOKEN", "from-env")
    assert reveal(Settings().dunning_api_token) == "from-env"


def test_without_a_secrets_folder_settings_come_from_the_environment_alone(tmp_path, monkeypatch) -> None:
    import runtime.settings as settings_module

    monkeypatch.delenv("DUNNING_SECRETS_DIR", raising=False)
    monkeypatch.setattr(settings_module, "DEFAULT_SECRETS_DIR", tmp_path / "absent")
    assert settings_module.secrets_dir() is None
    monkeypatch.setenv("DUNNING_API_TOKEN", "from-env")
    assert reveal(Settings().dunning_api_token) == "from-env"
