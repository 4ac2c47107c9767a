"""One way to connect to Temporal for every process: envconfig conventions, pydantic converter,
and payload encryption when `DUNNING_ENCRYPTION_KEYS` is set (see runtime/codec.py)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile

from runtime.codec import data_converter
from runtime.settings import Settings


async def connect(settings: Settings | None = None) -> Client:
    """Connect using `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS variables
    or a Temporal profile file; `localhost:7233` when nothing is set.

    The worker, the API and the CLI all connect here, so they all encrypt and decrypt with the
    same keys: a case started by the API is readable by the worker and the CLI. Without
    `settings`, they are read from the environment."""
    settings = settings or Settings()
    config = ClientConfigProfile.load().to_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    return await Client.connect(**config, data_converter=data_converter(settings.dunning_encryption_keys))
