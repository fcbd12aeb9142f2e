"""Verify and rebuild spread over processes, one range of job ids each.

Every check and every fold concerns one job at a time, so the work splits by
job id: range ``k`` covers ``bound[k-1] < job_id <= bound[k]``, the first and
last open-ended. :func:`plan` takes the bounds at equal numbers of events, in the
database's own job-id order, so the ranges are about equal whatever the
collation. There are a few ranges per worker, handed out as workers become
free, and the results come back in range order, so the outcome does not depend
on which worker did what.

Each worker process opens its own connection (:class:`Source`: the engine's URL,
read by the engine's dialect, and the backend's bulk adapter, which connects). On
PostgreSQL it imports the coordinating transaction's snapshot, so every worker
reads the same state of the database, as one transaction would. SQLite cannot
share a snapshot; each worker reads its own, which still shows every job whole
(a job's events and projection row commit together and are read by one worker).

Workers are forked, which is cheap (no import, no pickling) and safe as long
as the coordinator runs no other thread: a child forked beside other threads
may inherit a lock one of them held (in libpq, SQLite, OpenSSL) and hang on it.
A forked child never uses the connections it inherits (nor closes them: it
ends with ``os._exit``), and opens its own. Its SQLite library may take the
coordinator's file locks for its own; they are real, and held until every
worker has finished, since the coordinator keeps its transaction open until
then. Spawned workers are no option: they would import the caller's main
module again, as every spawned process does. So with other threads running,
or where fork is missing or unsafe (Windows, macOS), the work stays in one
process.

A worker must not outlive its coordinator, nor keep its sessions alive
(:func:`_bind_to`). A coordinator killed with SIGKILL runs no cleanup: the
kernel closes its sockets, and the server ends its session (rolling back,
releasing a rebuild's lock) only if no other process holds the same socket.
So a worker first lets go of every socket it inherited: the coordinator's
database connections, and the pipe ends of the other workers and its own far
end, whose copies would keep a pipe open after the coordinator died. It dies
with the coordinator (Linux's parent-death signal), and elsewhere finds it
gone at its next message, on a pipe whose far end is closed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from ..children import die_with_parent
from ..errors import DatabaseUnavailable
from ..schema import events

if TYPE_CHECKING:
    from .bulk import Bulk

#: Ranges per worker: small enough that a slow worker does fewer, not the last one alone.
RANGES_PER_WORKER = 4
#: ``(lower, upper)``: the jobs with ``lower < job_id <= upper``; ``None`` is open-ended.
Range = tuple[str | None, str | None]
#: How a task reports to the coordinator: ``emit(kind, payload)``.
Emit = Callable[[str, Any], None]
#: Work on one range: ``task(bulk, lower, upper, emit)``; its result goes to the coordinator.
Task = Callable[["Bulk", str | None, str | None, Emit], Any]


@dataclass(frozen=True)
class Source:
    """How a worker process connects to the coordinator's database."""

    #: The bulk adapter that connects, and that the worker reads through.
    bulk: type[Bulk]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: PostgreSQL: the exported snapshot every worker reads.
    snapshot: str | None = None

    def open(self) -> contextlib.AbstractContextManager[Bulk]:
        """A connection with a read transaction (in the shared snapshot), as a Bulk."""
        return self.bulk.open_worker(self)


def plan(conn: Connection, count: int, parts: int) -> list[Range]:
    """Ranges of job ids holding about ``count / parts`` events each.

    Each bound is the job id ``count / parts`` events past the previous one,
    read off the ``(job_id, version)`` index; a job larger than a share makes
    fewer ranges.
    """
    step = max(1, count // max(1, parts))
    bounds: list[str] = []
    for _ in range(parts - 1):
        query = select(events.c.job_id).order_by(events.c.job_id, events.c.version)
        if bounds:
            query = query.where(events.c.job_id > bounds[-1])
        bound = conn.execute(query.offset(step - 1).limit(1)).scalar()
        if bound is None:
            break
        bounds.append(bound)
    return list(zip([None, *bounds], [*bounds, None], strict=True))


def run(
    task: Task,
    source: Source,
    ranges: list[Range],
    workers: int,
    handle: Emit,
    side: Iterator[None] | None = None,
) -> list[Any] | None:
    """Run ``task`` on every range in ``workers`` processes; the results in range order.

    A worker takes the next range as soon as it has finished one, so that a
    worker on a slower CPU (shared machines have them) does fewer ranges
    instead of holding up the others. Messages a task emits go to ``handle`` (in
    the coordinator) as they arrive. ``None``, with nothing handled, if a worker
    could not connect: the caller then does the work itself. Any other failure
    in a worker is raised here, and the other workers are stopped.

    ``side`` is work of the coordinator's own, done a step at a time while no
    worker's message waits (see :func:`_collect`); what is left of it when the
    workers are done is the caller's to finish.
    """
    context = multiprocessing.get_context("fork")
    pipes: list[Pipe] = []
    processes = []
    try:
        for _ in range(min(workers, len(ranges))):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_work, args=(task, source, ranges, theirs, os.getpid()), daemon=True
            )
            process.start()
            theirs.close()
            pipes.append(mine)
            processes.append(process)
        # Each worker first says whether it connected: nothing is handled before all
        # have, so the caller can still fall back to doing the work alone.
        for pipe in pipes:
            kind, payload = _receive(pipe)
            if kind == "unavailable":
                return None
            if kind != "ready":
                raise payload
        return _collect(pipes, len(ranges), handle, side)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
        for pipe in pipes:
            pipe.close()


def _collect(pipes: list[Pipe], count: int, handle: Emit, side: Iterator[None] | None) -> list[Any]:
    """Hand out range numbers to idle workers and gather their results.

    Between messages the coordinator takes steps of ``side``: a step is short, so
    a worker that finished a range waits at most one step for its next.
    """
    results: list[Any] = [None] * count
    pending = iter(range(count))
    working: dict[int, int] = {}  # id(pipe) -> the range it works on

    def next_range(pipe: Pipe) -> bool:
        number = next(pending, None)
        pipe.send(number)  # None: no more work, the worker ends
        if number is not None:
            working[id(pipe)] = number
        return number is not None

    busy = [pipe for pipe in pipes if next_range(pipe)]
    while busy:
        ready = wait(busy, timeout=None if side is None else 0)
        if not ready and side is not None and next(side, _OVER) is _OVER:
            side = None
        for pipe in ready:
            assert isinstance(pipe, Pipe)
            kind, payload = _receive(pipe)
            if kind == "done":
                results[working.pop(id(pipe))] = payload
                if not next_range(pipe):
                    busy.remove(pipe)
            elif kind == "error":
                raise payload
            else:
                handle(kind, payload)
    return results


#: What ``next`` returns from side work that is over.
_OVER = object()


def _receive(pipe: Pipe) -> tuple[str, Any]:
    try:
        message: tuple[str, Any] = pipe.recv()
    except EOFError:
        raise RuntimeError("an audit worker process ended without a result") from None
    return message


def _work(task: Task, source: Source, ranges: list[Range], pipe: Pipe, coordinator: int) -> None:
    """A worker process: connect, then run ``task`` on each range it is given."""
    _bind_to(coordinator, pipe)

    def emit(kind: str, payload: Any) -> None:
        pipe.send((kind, payload))

    try:
        with contextlib.ExitStack() as stack:
            try:
                bulk = stack.enter_context(source.open())
            except DatabaseUnavailable as exc:
                emit("unavailable", str(exc))
                return
            emit("ready", None)
            while (number := pipe.recv()) is not None:
                lower, upper = ranges[number]
                emit("done", task(bulk, lower, upper, emit))
    except BaseException as exc:  # every failure goes to the coordinator
        # An OSError here (EPIPE) means the coordinator is gone: nobody to tell.
        with contextlib.suppress(OSError):
            emit("error", _picklable(exc))
    finally:
        pipe.close()


def _bind_to(coordinator: int, pipe: Pipe) -> None:
    """Make a freshly forked worker end with its coordinator and hold none of its sockets.

    SIGTERM gets its default action back (the coordinator may have set a handler
    of its own), so that :meth:`~multiprocessing.Process.terminate` ends the
    worker; SIGINT is ignored, since a Ctrl-C reaches every process of the
    terminal's group and the coordinator then stops its workers itself.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(coordinator)  # the coordinator forks from its only thread (can_fork)
    _drop_inherited_sockets(keep=pipe.fileno())


def _drop_inherited_sockets(keep: int) -> None:
    """Point every inherited socket but ``keep`` (and stdio) at /dev/null.

    Nothing is sent on them: a connection's proper close would end the
    coordinator's session on its behalf. The descriptors are replaced rather
    than closed, so that their numbers stay taken: the coordinator's objects
    that still name them (this process never uses them) cannot reach a
    connection of the worker's own by a reused number. Files stay open: they
    hold no session, SQLite's state refers to its own, and closing any
    descriptor of a file drops the process's POSIX locks on that file.
    """
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in _descriptors():
            if fd > 2 and fd not in (keep, null) and _is_socket(fd):
                os.dup2(null, fd)
    finally:
        os.close(null)


def _descriptors() -> list[int]:
    """This process's open file descriptors, and perhaps some that are not open."""
    with contextlib.suppress(OSError):  # Linux lists them; elsewhere every number is tried
        return [int(name) for name in os.listdir("/proc/self/fd")]
    return list(range(min(os.sysconf("SC_OPEN_MAX"), 65536)))


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:  # not open (the listing's own descriptor, say)
        return False


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def can_fork() -> bool:
    """Whether workers can be forked safely here and now (see the module's docstring)."""
    return (
        "fork" in multiprocessing.get_all_start_methods()
        and sys.platform != "darwin"
        and threading.active_count() == 1
    )
