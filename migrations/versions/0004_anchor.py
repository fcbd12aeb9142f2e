"""The ledger-wide anchor: every event once, in commit order, digest-chained.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
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
        "jobledger_anchor",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=False,
        ),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_jobledger_anchor"),
        sa.UniqueConstraint("position", name="uq_jobledger_anchor_position"),
    )


def downgrade() -> None:
    op.drop_table("jobledger_anchor")
