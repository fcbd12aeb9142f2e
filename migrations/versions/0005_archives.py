"""Archival: a record per archive file, and bridges over the links it removed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobledger.schema import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobledger_archives",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("cutoff", UtcDateTime(), nullable=False),
        sa.Column("jobs", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=True),
        sa.Column("last_seq", sa.BigInteger, nullable=True),
        sa.Column("final_digest", sa.String(64), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("prev_digest", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("deleted_jobs", sa.BigInteger, nullable=False),
        sa.Column("deleted_events", sa.BigInteger, nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobledger_archives"),
    )
    op.create_table(
        "jobledger_anchor_bridges",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            autoincrement=False,
        ),
        sa.Column("prev_digest", sa.String(64), nullable=False),
        sa.Column("archive_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_jobledger_anchor_bridges"),
    )


def downgrade() -> None:
    op.drop_table("jobledger_anchor_bridges")
    op.drop_table("jobledger_archives")
