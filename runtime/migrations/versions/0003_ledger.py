"""The recovery ledger: one row per case (its facts, overwritten by newer records) and one per
milestone (written once), as the `record_case` activity writes them (runtime/ledger.py).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_cases",
        sa.Column("case_id", sa.String(255), primary_key=True),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("subscription_id", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False, index=True),
        sa.Column("policy", sa.String(120), nullable=False),
        sa.Column("arm", sa.String(120), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("recovered_amount", sa.BigInteger(), nullable=False),
        sa.Column("decline_category", sa.String(32), nullable=True),
        sa.Column("decline_code", sa.String(120), nullable=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trigger", sa.String(32), nullable=True),
        sa.Column("trigger_attempt", sa.Integer(), nullable=True),
        sa.Column("hours_to_recover", sa.Float(), nullable=True),
        sa.Column("last_template", sa.String(120), nullable=True),
        sa.Column("last_channel", sa.String(16), nullable=True),
        sa.Column("last_step", sa.String(120), nullable=True),
        sa.Column("charge_attempts", sa.Integer(), nullable=False),
        sa.Column("messages_sent", sa.Integer(), nullable=False),
        sa.Column("customer_extensions", sa.Integer(), nullable=False),
        sa.Column("feedback_reason", sa.String(32), nullable=True),
        sa.Column("feedback_comment", sa.Text(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ledger_events",
        sa.Column("case_id", sa.String(255), primary_key=True),
        sa.Column("milestone", sa.String(255), primary_key=True),
        sa.Column("customer_id", sa.String(255), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(64), nullable=True),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("template", sa.String(120), nullable=True),
        sa.Column("step", sa.String(120), nullable=True),
        sa.Column("invoice_id", sa.String(255), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("decline_code", sa.String(120), nullable=True),
        sa.Column("trigger", sa.String(255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ledger_events_kind", "ledger_events", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_ledger_events_kind", "ledger_events")
    op.drop_table("ledger_events")
    op.drop_table("ledger_cases")
