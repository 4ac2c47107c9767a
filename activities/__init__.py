"""Adapters between the case and the outside world: payments, messages, in-app state."""
