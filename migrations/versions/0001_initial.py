"""Initial schema: events, jobs projection, checkpoints, process leases.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from jobledger.schema import Json, Position, TransactionId, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobledger_events",
        sa.Column("position", Position, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("process", sa.String(255), nullable=True),
        sa.Column("data", Json, nullable=False),
        sa.Column("recorded_at", UtcDateTime, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("tx_id", TransactionId, nullable=True),
        sa.PrimaryKeyConstraint("position", name="pk_jobledger_events"),
        sa.UniqueConstraint("job_id", "version", name="uq_jobledger_events_job_id_version"),
    )
    op.create_index("ix_jobledger_events_tx_id_position", "jobledger_events", ["tx_id", "position"])

    op.create_table(
        "jobledger_jobs",
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("claim_token", sa.Integer, nullable=True),
        sa.Column("enqueued_at", UtcDateTime, nullable=False),
        sa.Column("claimed_at", UtcDateTime, nullable=True),
        sa.Column("heartbeat_at", UtcDateTime, nullable=True),
        sa.Column("finished_at", UtcDateTime, nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_jobledger_jobs"),
    )
    op.create_index("ix_jobledger_jobs_state_queue", "jobledger_jobs", ["state", "queue"])
    op.create_index("ix_jobledger_jobs_claimed_by", "jobledger_jobs", ["claimed_by"])

    op.create_table(
        "jobledger_checkpoints",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("tx_id", sa.BigInteger, nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_jobledger_checkpoints"),
    )

    op.create_table(
        "jobledger_processes",
        sa.Column("identity", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("quiet", sa.Boolean, nullable=False),
        sa.Column("busy", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("identity", name="pk_jobledger_processes"),
    )
    op.create_index("ix_jobledger_processes_expires_at", "jobledger_processes", ["expires_at"])


def downgrade() -> None:
    op.drop_table("jobledger_processes")
    op.drop_table("jobledger_checkpoints")
    op.drop_table("jobledger_jobs")
    op.drop_table("jobledger_events")
