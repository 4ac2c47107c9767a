"""SMS consent: opt-outs, their audit trail, and which customer we texted at which number
(the tables of the former `consent.sqlite3`, same columns).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_consent",
        sa.Column("customer_id", sa.String(255), primary_key=True),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "consent_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(255), nullable=False, index=True),
        sa.Column("opted_out", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "sms_recipients",
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("customer_id", sa.String(255), primary_key=True),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sms_recipients")
    op.drop_table("consent_events")
    op.drop_table("sms_consent")
