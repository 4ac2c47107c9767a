"""The card budget: every charge attempt reserved per card (Stripe's card fingerprint) across all
cases, keyed by the charge's idempotency key, and the cards no case may retry (a never-retry
decline), as runtime/card_budget.py writes them.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_attempts",
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(255), nullable=False),
        sa.Column("case_ref", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("decline_code", sa.String(120), nullable=True),
    )
    op.create_index("ix_card_attempts_fingerprint_at", "card_attempts", ["fingerprint", "at"])
    op.create_table(
        "card_blocks",
        sa.Column("fingerprint", sa.String(255), primary_key=True),
        sa.Column("decline_code", sa.String(120), nullable=False),
        sa.Column("case_ref", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("card_blocks")
    op.drop_index("ix_card_attempts_fingerprint_at", "card_attempts")
    op.drop_table("card_attempts")
