"""Helpers shared by every tier of tests (`from tests.helpers import new_worker, eventually`)."""

from tests.helpers.workers import TEST_LINK_KEYS, binary, eventually, new_worker

__all__ = ["TEST_LINK_KEYS", "binary", "eventually", "new_worker"]
