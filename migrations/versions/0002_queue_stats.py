"""The queue_stats catch-up projection: per-queue counts by state and run durations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobledger_queue_stats",
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("jobs", sa.BigInteger, nullable=False),
        sa.Column("runs", sa.BigInteger, nullable=False),
        sa.Column("run_seconds", sa.Double, nullable=False),
        sa.Column("max_run_seconds", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("queue", "state", name="pk_jobledger_queue_stats"),
    )


def downgrade() -> None:
    op.drop_table("jobledger_queue_stats")
