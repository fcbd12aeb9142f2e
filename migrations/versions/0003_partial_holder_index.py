"""Index only the claims in flight: jobs.claimed_by WHERE claimed_by IS NOT NULL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NAME, _TABLE = "ix_jobledger_jobs_claimed_by", "jobledger_jobs"
_HELD = sa.text("claimed_by IS NOT NULL")


def upgrade() -> None:
    op.drop_index(_NAME, table_name=_TABLE)
    op.create_index(_NAME, _TABLE, ["claimed_by"], postgresql_where=_HELD, sqlite_where=_HELD)


def downgrade() -> None:
    op.drop_index(_NAME, table_name=_TABLE)
    op.create_index(_NAME, _TABLE, ["claimed_by"])
