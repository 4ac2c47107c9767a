"""Configuration from the environment, with the names of the contract.

Every variable the service reads is a field here (secrets as `SecretStr`, hidden from repr and
logs); no other module reads the environment for them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from dunning import contract
from dunning.policy import SHIPPED_POLICY_DIR


#: Where customers reach the API when `DUNNING_PUBLIC_URL` is unset (local use).
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
#: The default database's file name inside `DUNNING_STATE_DIR`.
DATABASE_FILE = "dunning.sqlite3"

#: Where Docker (compose `secrets:`) and Kubernetes (a Secret mounted as a volume) put secret files.
DEFAULT_SECRETS_DIR = Path("/run/secrets")


def secrets_dir() -> Path | None:
    """The folder of secret files: `DUNNING_SECRETS_DIR`, else `/run/secrets` when it exists.

    Each file is named after a variable (`stripe_webhook_secret`) and holds its value, so a secret
    never has to sit in the process environment (where `docker inspect` and child processes see it).
    A variable set in the environment still wins over its file."""
    chosen = os.environ.get("DUNNING_SECRETS_DIR")
    if chosen:
        return Path(chosen)
    return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None


def reveal(secret: SecretStr | None) -> str:
    """A secret's value where a client library needs it ("" when unset)."""
    return secret.get_secret_value() if secret is not None else ""


class ConfigError(ValueError):
    """The configuration cannot work (a chosen provider lacks what it needs): stop at start, say which."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The secrets folder is chosen at each construction, not at import, so it follows the
        environment of the process (and of each test)."""
        return init_settings, env_settings, dotenv_settings, SecretsSettingsSource(settings_cls, secrets_dir())

    dunning_task_queue: str = contract.TASK_QUEUE
    dunning_max_cached_cases: int = Field(
        1000, ge=0, description="cases a worker keeps in memory (~260 KiB each, docs/performance.md)"
    )
    dunning_policy_dir: Path = SHIPPED_POLICY_DIR

    @field_validator("dunning_policy_dir", mode="before")
    @classmethod
    def _empty_means_shipped(cls, value: object) -> object:
        """`DUNNING_POLICY_DIR=` (set but empty, as compose passes it) means the shipped policies,
        not the current folder."""
        return SHIPPED_POLICY_DIR if value in ("", None) else value
    dunning_api_token: SecretStr | None = None
    dunning_payments: Literal["stripe", "sandbox"] | None = None
    dunning_email: Literal["sendgrid", "sandbox"] | None = None
    dunning_sms: Literal["twilio", "sandbox"] | None = None
    dunning_email_from: str | None = None  # SendGrid's verified sender; required with it, no made-up default
    dunning_state_dir: Path = Path(".dunning")
    # The service's own database (consent today); a URL may hold a password, hence secret.
    # Unset: a SQLite file in DUNNING_STATE_DIR (one host); `postgresql+psycopg://…` in production.
    dunning_database_url: SecretStr | None = None
    # What every message may say about the sender (templates degrade gracefully without them).
    dunning_company_name: str | None = None
    dunning_support_email: str | None = None
    # The postal address in every email's footer (lines separated by newlines, `\n` or commas).
    dunning_company_address: str | None = None
    # Development only: with sandbox email and SMS, the worker appends every message it would have
    # sent to this JSON Lines file and the API shows them at GET /dev/mailbox (`dunning up` sets it).
    dunning_sandbox_outbox_file: Path | None = None
    dunning_provider_timeout: float = 10.0
    # `key_id:base64key,…`: the first encrypts every Temporal payload, all decrypt (runtime/codec.py).
    dunning_encryption_keys: SecretStr | None = None
    dunning_log_level: str = "INFO"
    dunning_log_format: str | None = None  # `json` or `console`; unset: console on a terminal, else json
    # Where customers and Twilio reach the API: the customers' links, and the URL Twilio signs
    # (behind a proxy). Unset: links use DEFAULT_PUBLIC_URL, Twilio's check the request's own URL.
    dunning_public_url: str | None = None
    # Comma-separated keys of the customers' links: the first signs, all verify (runtime/links.py).
    dunning_link_keys: SecretStr | None = None
    # The recovery ledger keeps the customers' free-text cancel comments this many days after
    # their case closed, then blanks them (`dunning db prune`, and at every API start). Unset: kept.
    dunning_feedback_retention_days: int | None = Field(None, ge=0)
    # The worker's Prometheus endpoint for the Temporal SDK's own metrics (0: none).
    dunning_worker_metrics_port: int = Field(9464, ge=0, le=65535)
    # Where operators open the Temporal UI: the dashboard links each case there.
    dunning_temporal_ui_url: str = "http://127.0.0.1:8233"
    # Browser origins (comma-separated) allowed to call the codec server: the Temporal UI.
    dunning_codec_cors_origins: str = "http://localhost:8233,http://127.0.0.1:8233"

    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_portal_return_url: str | None = None  # where the billing portal sends the customer back

    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_host: str | None = None
    # The Signed Event Webhook's verification key (Mail Settings → Event Webhook; base64 DER of an
    # ECDSA P-256 public key): `POST /webhooks/sendgrid/events` answers 503 while it is unset.
    sendgrid_webhook_public_key: str | None = None

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from_number: str | None = None
    twilio_api_base: str | None = None

    def stripe_webhook_secrets(self) -> list[str]:
        """`STRIPE_WEBHOOK_SECRET`, comma-separated: an event signed with any of them is Stripe's.

        During a rotation Stripe signs with the old and the new secret at once (two `v1=`
        signatures); list both here, then drop the old one once Stripe stopped using it."""
        return [s.strip() for s in reveal(self.stripe_webhook_secret).split(",") if s.strip()]

    def public_url(self) -> str:
        return (self.dunning_public_url or DEFAULT_PUBLIC_URL).rstrip("/")

    def codec_cors_origins(self) -> set[str]:
        return {o.strip().rstrip("/") for o in self.dunning_codec_cors_origins.split(",") if o.strip()}

    def database_url(self) -> str:
        """`DUNNING_DATABASE_URL`, else `sqlite:///$DUNNING_STATE_DIR/dunning.sqlite3`."""
        return reveal(self.dunning_database_url) or f"sqlite:///{(self.dunning_state_dir / DATABASE_FILE).resolve()}"

    def sandbox_mailbox_file(self) -> Path | None:
        """The sandbox outbox file when the local mailbox is on: `DUNNING_SANDBOX_OUTBOX_FILE` is
        set and no message can leave this machine (email and SMS both on the sandbox). Never
        in production: a real provider turns it off whatever the variable says."""
        if self.dunning_sandbox_outbox_file is None or str(self.dunning_sandbox_outbox_file) in ("", "."):
            return None
        if self.email_backend() != "sandbox" or self.sms_backend() != "sandbox":
            return None
        return self.dunning_sandbox_outbox_file

    def message_defaults(self) -> dict[str, str | None]:
        """What every message may say about the sender (templates drop what is unset)."""
        return {
            "company_name": self.dunning_company_name,
            "support_email": self.dunning_support_email,
            "company_address": self.dunning_company_address,
        }

    def payments_backend(self) -> str:
        return self.dunning_payments or ("stripe" if self.stripe_api_key else "sandbox")

    def email_backend(self) -> str:
        return self.dunning_email or ("sendgrid" if self.sendgrid_api_key else "sandbox")

    def sms_backend(self) -> str:
        return self.dunning_sms or ("twilio" if self.twilio_auth_token else "sandbox")
