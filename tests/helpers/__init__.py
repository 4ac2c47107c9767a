"""Helpers shared by every tier of tests (`from tests.helpers import new_worker, eventually`)."""

from tests.helpers.workers import binary, eventually, new_worker

__all__ = ["binary", "eventually", "new_worker"]
