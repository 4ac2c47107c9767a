"""Alembic's entry point, configured by `runtime.migrations.upgrade` (no alembic.ini): it hands
over the connection that holds the migration lock, so the migrations run under it."""

from __future__ import annotations

from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
