"""The HTTP API, one router per caller: Stripe, Twilio, the SaaS app, operators.

`starter.api:app` is the ASGI app of the contract; it is built on first access so that
importing one router does not build the whole app.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "create_app"):
        from starter.api import app as module

        return getattr(module, name)
    raise AttributeError(name)
