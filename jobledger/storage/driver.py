"""Statements compiled once and run straight on a DBAPI cursor, values converted as
SQLAlchemy would convert them.

Commands are the hot path: they skip SQLAlchemy's per-execution machinery and
replay only what matters of it, the column types' bind and result processors,
so what is stored and read back is exactly what SQLAlchemy would store and read.
Why, and what it bought: ``benchmarks/README.md``, "What was slow".
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import JSON, Dialect
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.pool import PoolProxiedConnection

from ..schema import UtcDateTime


class DriverStatement:
    """A statement compiled once for one dialect and run straight on a DBAPI cursor.

    The caller passes its values as one flat tuple laid out as ``source`` names
    them (say ``("expected", "j_job_id", ...)``): picking the statement's
    parameters out of it is then a single ``itemgetter`` call, with no dict built.
    """

    def __init__(
        self,
        statement: Any,
        dialect: Dialect,
        source: Sequence[str] = (),
        column_keys: Sequence[str] | None = None,
    ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql: str = compiled.string
        #: Whether the statement returns rows (a SELECT, or RETURNING); an insert that
        #: returns none tells its row by the cursor's ``lastrowid``.
        dml = compiled.isinsert or compiled.isupdate or compiled.isdelete
        self.returns_rows: bool = not dml or bool(compiled.effective_returning)
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        #: Bind names in the order the driver takes them (positional dialects) or any order.
        self.names: tuple[str, ...] = tuple(compiled.positiontup or binds)
        self._positional = bool(dialect.positional)
        # Literals the statement carries (SQLite's strftime format, a NULL tx_id) are
        # processed once, here; the caller supplies every other value.
        fixed: dict[str, Any] = {}
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(self.names):
            bind = binds[name]
            process = _bind_processor(bind.type, dialect)
            if not bind.required:
                value = bind.effective_value
                fixed[name] = process(value) if process is not None else value
            elif process is not None:
                processors.append((index, process))
        # Fixed values ride at the end of the caller's tuple.
        where = {name: i for i, name in enumerate((*source, *fixed))}
        pick = _tuple_getter([where[name] for name in self.names])
        #: The processed values, in the order of :attr:`names`: ``row(values)``.
        self.row: Callable[[tuple[Any, ...]], list[Any]] = _row_function(
            pick, tuple(fixed.values()), processors
        )
        columns = getattr(statement, "selected_columns", ())
        self._readers = [
            (index, reader)
            for index, column in enumerate(columns)
            if (reader := _result_processor(column.type, dialect))
        ]

    def parameters(self, values: tuple[Any, ...]) -> Any:
        """The driver's parameters for ``values`` (laid out as ``source`` says)."""
        out = self.row(values)
        if self._positional:
            return out
        return dict(zip(self.names, out, strict=True))

    def read(self, row: Sequence[Any]) -> list[Any]:
        """A result row with every column converted as SQLAlchemy would."""
        out = list(row)
        for index, reader in self._readers:
            out[index] = reader(out[index])
        return out


def command_cursor(conn: PoolProxiedConnection) -> Any:
    """``conn``'s cursor for commands, made once per DBAPI connection.

    Every command reads its results to the end before the next statement, so
    one cursor per connection serves them all (why: ``benchmarks/README.md``).
    """
    dbapi_connection = conn.dbapi_connection
    made = conn.info.get(_CURSOR)
    if made is None or made[0] is not dbapi_connection:
        made = conn.info[_CURSOR] = (dbapi_connection, conn.cursor())
    return made[1]


_CURSOR = "jobledger.command_cursor"


def first_value(cursor: Any) -> int | None:
    """The first column of the cursor's first row, or ``None`` if it returned no row."""
    rows = cursor.fetchall()  # to the end: SQLite cannot commit while a statement is pending
    return int(rows[0][0]) if rows else None


def _bind_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    processor = type_.dialect_impl(dialect).bind_processor(dialect)
    if isinstance(type_, UtcDateTime) and processor is not None:
        return _verified(_fast_datetime_bind(dialect), processor, _BIND_PROBES)
    if isinstance(type_.dialect_impl(dialect), JSON) and processor is not None:
        if dialect.bind_typing is BindTyping.RENDER_CASTS:
            # Every bind is cast in the SQL (``%s::JSONB``): the server parses JSON text
            # into the type, so the text the driver would send for its wrapper will do.
            processor = _json_as_sent(processor)
        return _verified(_fast_json_bind(processor), processor, _JSON_PROBES)
    return processor  # type: ignore[no-any-return]


def _json_as_sent(reference: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The JSON text the driver sends for ``reference``'s result.

    psycopg's processor wraps the value (``Jsonb``), and psycopg encodes the wrapped
    value with the wrapper's ``dumps`` or ``json.dumps`` as it sends it: encoding it
    once with a C encoder made once saves that call (it builds a new encoder each time).
    """

    def sent(value: Any) -> Any:
        wrapper = reference(value)
        if not hasattr(wrapper, "obj"):
            return wrapper
        return (getattr(wrapper, "dumps", None) or json.dumps)(wrapper.obj)

    return sent


def _result_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    processor = type_.dialect_impl(dialect).result_processor(dialect, None)
    if isinstance(type_, UtcDateTime) and processor is not None:
        probes = _TEXT_PROBES if _stores_text(dialect) else _BIND_PROBES
        return _verified(_fast_datetime_result(dialect), processor, probes)
    return processor  # type: ignore[no-any-return]


# One-step versions of UtcDateTime's processors (SQLAlchemy's own are a chain of
# three calls); used only if they give exactly SQLAlchemy's results on the probes.
_UTC = timezone.utc
# Formatting the fields with ``%`` takes a third of ``replace(tzinfo=None).isoformat()``'s
# time (``replace`` alone costs more than the formatting); the probes check the output.
_STORED_TEXT = "%04d-%02d-%02d %02d:%02d:%02d.%06d"
_fields = operator.attrgetter("year", "month", "day", "hour", "minute", "second", "microsecond")


def _stores_text(dialect: Dialect) -> bool:
    """Whether the dialect keeps datetimes as text (SQLite), in SQLAlchemy's format."""
    return dialect.name == "sqlite"


def _fast_datetime_bind(dialect: Dialect) -> Callable[[Any], Any]:
    if _stores_text(dialect):
        return _text_datetime_bind()

    def bind(value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is _UTC:  # the ledger's own instants: nothing to convert
            return value
        if value.tzinfo is None:
            raise ValueError("jobledger stores only timezone-aware datetimes")
        return value.astimezone(_UTC)

    return bind


def _text_datetime_bind() -> Callable[[Any], Any]:
    """SQLAlchemy's SQLite storage format (microseconds always written), remembered.

    A command binds the same few instants several times (the row it writes, the row its
    guard expects, the event's time), and formatting one costs some 40 times a dict
    look-up. Equal aware datetimes are one instant, whose UTC text is the same whatever
    their zones; a naive one never equals an aware one, so it misses and is refused.
    The bind is the dict's own ``__getitem__``: a remembered instant costs no Python call.
    One memory serves every statement and column, since the same instant goes to several
    (a command's time is the event's, the row's ``updated_at`` and, say, its ``claimed_at``).
    """
    return _STORED_MOMENTS.__getitem__


class _StoredMoments(dict[Any, Any]):
    """Instants (and None) to their SQLite text, formatted on a miss; a bounded memory."""

    def __init__(self) -> None:
        super().__init__({None: None})

    def __missing__(self, value: datetime) -> str:
        if value.tzinfo is None:
            raise ValueError("jobledger stores only timezone-aware datetimes")
        text = _STORED_TEXT % _fields(value.astimezone(_UTC))
        if len(self) >= _FORMATTED_KEPT:
            self.clear()
            self[None] = None
        self[value] = text
        return text


def _fast_json_bind(reference: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``json.dumps`` of an event's data (a dict) by a C encoder made once.

    ``json.dumps`` builds a new C encoder on every call, which costs more than encoding a
    small payload. Anything but a dict takes SQLAlchemy's own processor. Payloads are
    checked before they are stored (no cycles, no other types), so the encoder need not
    look for cycles.
    """
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:
        return reference
    default = json.JSONEncoder().default
    # (markers, default, encoder, indent, key_sep, item_sep, sort_keys, skipkeys, allow_nan)
    encoder = make_encoder(
        None, default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )

    def bind(value: Any) -> Any:
        if type(value) is dict:
            return "".join(encoder(value, 0))
        return reference(value)

    return bind


#: How many instants a text bind remembers (a bounded memory: cleared when full).
_FORMATTED_KEPT = 1024
_STORED_MOMENTS = _StoredMoments()


def _fast_datetime_result(dialect: Dialect) -> Callable[[Any], Any]:
    from_text = _stores_text(dialect)

    def result(value: Any) -> datetime | None:
        if value is None:
            return None
        if from_text:
            try:  # stored in UTC without an offset: one parse, no replace()
                return datetime.fromisoformat(value + "+00:00")
            except (TypeError, ValueError):  # not the stored format: the general path
                value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)  # type: ignore[no-any-return]
        return value.astimezone(_UTC)  # type: ignore[no-any-return]

    return result


def _verified(
    fast: Callable[[Any], Any], reference: Callable[[Any], Any], probes: Sequence[Any]
) -> Callable[[Any], Any]:
    """``fast`` if it agrees with ``reference`` (value and type) on every probe."""
    for probe in probes:
        try:
            expected = reference(probe)
        except Exception:  # a probe the reference refuses tells nothing
            continue
        got = fast(probe)
        if got != expected or type(got) is not type(expected) or _zone(got) != _zone(expected):
            return reference
    return fast


def _zone(value: Any) -> Any:
    return value.utcoffset() if isinstance(value, datetime) else None


_BIND_PROBES: tuple[Any, ...] = (
    None,
    datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 7, 1, 0, 0, 0, 5, tzinfo=timezone(timedelta(hours=-7))),
)
_JSON_PROBES: tuple[Any, ...] = (
    None,
    {"attempt": 1},
    {"result": None},
    {"b": [1, 2.5, True, False, None, "\u00e9\n\u2028"], "a": {"z": -12, "y": 1e300}},
    [1, "x"],
    "text",
)
_TEXT_PROBES: tuple[Any, ...] = (
    None,
    "2026-01-02 03:04:05.678901",
    "2026-01-02 03:04:05.000000",
    "2026-01-02 03:04:05.678",  # the SQLite clock's own format (milliseconds)
    "0999-12-31 23:59:59.000001",
)


def _row_function(
    pick: Callable[[tuple[Any, ...]], tuple[Any, ...]],
    tail: tuple[Any, ...],
    processors: Sequence[tuple[int, Callable[[Any], Any]]],
) -> Callable[[tuple[Any, ...]], list[Any]]:
    """``values -> list(pick(values + tail))`` with each processed value converted.

    Written out per statement, one line per processed value: a loop over the processors
    cost more than the conversions (a SQLite command converts a dozen instants).
    """
    namespace: dict[str, Any] = {"_pick": pick, "_tail": tail}
    lines = ["    out = list(_pick(values + _tail))" if tail else "    out = list(_pick(values))"]
    for index, process in processors:
        namespace[f"_process_{index}"] = process
        lines.append(f"    out[{index}] = _process_{index}(out[{index}])")
    exec("def row(values):\n" + "\n".join(lines) + "\n    return out\n", namespace)
    row: Callable[[tuple[Any, ...]], list[Any]] = namespace["row"]
    return row


def _tuple_getter(indexes: Sequence[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """``values -> (values[i] for each i)`` as a tuple, in C (``itemgetter``)."""
    if not indexes:
        return lambda values: ()
    if len(indexes) == 1:
        (index,) = indexes
        return lambda values: (values[index],)
    return operator.itemgetter(*indexes)
