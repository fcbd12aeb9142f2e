"""The tables, in one place. Alembic's migrations (``migrations/``) create them;
``tests/integration/test_migrations.py`` proves the two agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import base as postgresql_base
from sqlalchemy.types import TypeDecorator, UserDefinedType

from .names import MAX_NAME_LENGTH

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("jobledger stores only timezone-aware datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text, e.g. from a bare SELECT
            value = datetime.fromisoformat(value)
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc)


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (``pg_current_xact_id()``)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


# Teach the PostgreSQL dialect to reflect xid8, so migration drift checks compare it.
postgresql_base.ischema_names.setdefault("xid8", Xid8)

Json = JSON().with_variant(JSONB(), "postgresql")
#: SQLite only auto-increments an ``INTEGER PRIMARY KEY``, not a ``BIGINT`` one.
Position = BigInteger().with_variant(Integer(), "sqlite")
#: The writing transaction's id on PostgreSQL; NULL elsewhere (SQLite has one writer at a time).
TransactionId = BigInteger().with_variant(Xid8(), "postgresql")

events = Table(
    "jobledger_events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=True),
    Column("job_id", String(MAX_NAME_LENGTH), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(16), nullable=False),
    Column("process", String(255), nullable=True),
    Column("data", Json, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("tx_id", TransactionId, nullable=True),
    UniqueConstraint("job_id", "version"),
    Index(None, "tx_id", "position"),
)

#: What an event records, in column order: all but the position and the writer's
#: transaction id, which the database assigns. Commands write these; audits read them.
EVENT_FIELDS: tuple[str, ...] = tuple(
    c.name for c in events.columns if c.name not in ("position", "tx_id")
)

jobs = Table(
    "jobledger_jobs",
    metadata,
    Column("job_id", String(MAX_NAME_LENGTH), primary_key=True),
    Column("queue", String(MAX_NAME_LENGTH), nullable=False),
    Column("state", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("claimed_by", String(255), nullable=True),
    Column("claim_token", Integer, nullable=True),
    Column("enqueued_at", UtcDateTime, nullable=False),
    Column("claimed_at", UtcDateTime, nullable=True),
    Column("heartbeat_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("last_hash", String(64), nullable=False),
    Index(None, "state", "queue"),
    # Only claimed jobs have a holder, so the index holds just the claims in flight: the
    # recovery sweep lists distinct holders from it with an index-only scan.
    Index(
        None,
        "claimed_by",
        postgresql_where=text("claimed_by IS NOT NULL"),
        sqlite_where=text("claimed_by IS NOT NULL"),
    ),
)

checkpoints = Table(
    "jobledger_checkpoints",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("tx_id", BigInteger, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)

#: The ledger-wide anchor (jobledger.sealer): every event once, in commit order, each row
#: chained to the one before by ``digest`` (jobledger.anchor). ``seq`` is the seal order;
#: ``position`` is unique so that no event is sealed twice, and indexed for verify's join.
anchor = Table(
    "jobledger_anchor",
    metadata,
    Column("seq", Position, primary_key=True, autoincrement=False),
    Column("position", BigInteger, nullable=False),
    Column("job_id", String(MAX_NAME_LENGTH), nullable=False),
    Column("version", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    UniqueConstraint("position"),
)

#: Archives (jobledger.archive): one row per archive file of finished jobs moved out of the
#: database. The row is chained to the one before by ``digest`` (over every column but the
#: counters of what was deleted so far and ``finished_at``, which move while it runs).
archives = Table(
    "jobledger_archives",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("path", Text, nullable=False),
    Column("cutoff", UtcDateTime, nullable=False),
    Column("jobs", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("first_seq", BigInteger, nullable=True),
    Column("last_seq", BigInteger, nullable=True),
    Column("final_digest", String(64), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("prev_digest", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("deleted_jobs", BigInteger, nullable=False),
    Column("deleted_events", BigInteger, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
)

#: Where archival cut links out of the anchor: for each remaining link whose predecessor
#: is gone, that predecessor's digest, so the remaining link's digest still recomputes.
anchor_bridges = Table(
    "jobledger_anchor_bridges",
    metadata,
    Column("seq", Position, primary_key=True, autoincrement=False),
    Column("prev_digest", String(64), nullable=False),
    Column("archive_id", Integer, nullable=False),
)

#: The projection's columns, in table order; ``JobStatus`` has these fields, in this order.
STATUS_FIELDS: tuple[str, ...] = tuple(c.name for c in jobs.columns)

#: The ``queue_stats`` catch-up projection (jobledger.catchup.QueueStats): per queue and
#: state, how many jobs are in it now, and how many claims ended in it and how long they ran.
queue_stats = Table(
    "jobledger_queue_stats",
    metadata,
    Column("queue", String(255), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("jobs", BigInteger, nullable=False),
    Column("runs", BigInteger, nullable=False),
    Column("run_seconds", Double, nullable=False),
    Column("max_run_seconds", Double, nullable=False),
)

processes = Table(
    "jobledger_processes",
    metadata,
    Column("identity", String(255), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("quiet", Boolean, nullable=False),
    Column("busy", Integer, nullable=False),
    Index(None, "expires_at"),
)

#: Alembic's bookkeeping table, kept apart from an application's own.
VERSION_TABLE = "jobledger_alembic_version"
