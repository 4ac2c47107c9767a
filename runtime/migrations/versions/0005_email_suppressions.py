"""Email suppressions: addresses SendGrid's Event Webhook told us to stop emailing (bounce,
dropped, spam report, unsubscribe), and every such event once (SendGrid retries: `sg_event_id`).

Revision ID: 0005
Revises: 0004

(Written beside 0004, the per-card budget, and chained after it; the two touch different tables.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_suppressions",
        sa.Column("email", sa.String(320), primary_key=True),  # lower-cased
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True, index=True),
        sa.Column("case_id", sa.String(255), nullable=True),
        sa.Column("suppressed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "email_events",
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True, index=True),
        sa.Column("case_id", sa.String(255), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("email_events")
    op.drop_table("email_suppressions")
