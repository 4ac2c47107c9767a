"""The HTTP API, one router per caller (`routes/`), their dependencies (`deps.py`), the app (`main.py`).

`starter.api:app` is the ASGI app of the contract; it is built on first access so that
importing one router does not build the whole app. The app is built in `main.py`, not in
a module named `app`, which Python would bind over this package's `app` attribute.
"""

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "create_app"):
        return getattr(importlib.import_module("starter.api.main"), name)
    raise AttributeError(name)
