"""One way to connect to Temporal for every process: envconfig conventions, pydantic converter,
and payload encryption when `DUNNING_ENCRYPTION_KEYS` is set (see runtime/codec.py)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from runtime.codec import data_converter
from runtime.settings import Settings


class TemporalUnreachable(ConnectionError):
    """Temporal could not be reached at the configured address (or the address is not one).
    The message names the address and why, in one line: it is what an operator reads."""


async def connect(settings: Settings | None = None, runtime: Runtime | None = None) -> Client:
    """Connect using `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, TLS variables
    or a Temporal profile file; `localhost:7233` when nothing is set.

    The worker, the API and the CLI all connect here, so they all encrypt and decrypt with the
    same keys: a case started by the API is readable by the worker and the CLI. Without
    `settings`, they are read from the environment.

    Raises `runtime.codec.EncryptionConfigError` for malformed keys (before any connection) and
    `TemporalUnreachable` when the address is malformed or nothing answers there."""
    settings = settings or Settings()
    converter = data_converter(settings.dunning_encryption_keys)
    config = ClientConfigProfile.load().to_client_connect_config()
    config.setdefault("target_host", "localhost:7233")
    address = config["target_host"]
    try:
        if runtime is not None:
            return await Client.connect(**config, data_converter=converter, runtime=runtime)
        return await Client.connect(**config, data_converter=converter)
    except (RuntimeError, ValueError) as err:  # the SDK's "Failed client connect", "invalid target URL"
        reason = " ".join(str(err).split())  # the Rust error spans lines
        raise TemporalUnreachable(f"cannot reach Temporal at {address}: {reason}") from err


def metrics_runtime(port: int, host: str = "0.0.0.0") -> Runtime | None:
    """A Temporal SDK runtime that serves its own metrics (workflow task latency, schedule-to-start,
    sticky cache, activity failures…) for Prometheus on `host:port`; None when `port` is 0."""
    if not port:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}")))
