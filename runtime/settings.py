"""Configuration from the environment, with the names of the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dunning.policy import SHIPPED_POLICY_DIR


class ConfigError(ValueError):
    """The configuration cannot work (a chosen provider lacks what it needs): stop at start, say which."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    dunning_task_queue: str = "dunning"
    dunning_max_cached_cases: int = Field(
        1000, ge=0, description="cases a worker keeps in memory (~260 KiB each, docs/performance.md)"
    )
    dunning_policy_dir: Path = SHIPPED_POLICY_DIR
    dunning_api_token: str | None = Field(None, repr=False)
    dunning_payments: Literal["stripe", "sandbox"] | None = None
    dunning_email: Literal["sendgrid", "sandbox"] | None = None
    dunning_sms: Literal["twilio", "sandbox"] | None = None
    dunning_email_from: str | None = None  # SendGrid's verified sender; required with it, no made-up default
    dunning_state_dir: Path = Path(".dunning")
    # What every message may say about the sender (templates degrade gracefully without them).
    dunning_company_name: str | None = None
    dunning_support_email: str | None = None
    dunning_provider_timeout: float = 10.0

    stripe_api_key: str | None = Field(None, repr=False)
    stripe_webhook_secret: str | None = Field(None, repr=False)
    stripe_api_base: str | None = None
    stripe_portal_return_url: str | None = None  # where the billing portal sends the customer back

    sendgrid_api_key: str | None = Field(None, repr=False)
    sendgrid_api_host: str | None = None

    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = Field(None, repr=False)
    twilio_from_number: str | None = None
    twilio_api_base: str | None = None

    def payments_backend(self) -> str:
        return self.dunning_payments or ("stripe" if self.stripe_api_key else "sandbox")

    def email_backend(self) -> str:
        return self.dunning_email or ("sendgrid" if self.sendgrid_api_key else "sandbox")

    def sms_backend(self) -> str:
        return self.dunning_sms or ("twilio" if self.twilio_auth_token else "sandbox")
