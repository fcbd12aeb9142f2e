"""The Starlette application: read-only pages and their JSON twins under ``/api``.

Only GET (and HEAD) routes exist, so no request can change anything. Every value
from the ledger reaches a page through Jinja2 with autoescaping on, after
:func:`jobledger.terminal.visible` (control and bidi characters shown as escapes,
as in the terminal); JSON inside a page goes through ``tojson``, which escapes
``<``, ``>``, ``&`` and quotes. The Content-Security-Policy allows scripts and
styles only from this server, so even a missed escape could not run inline code.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import terminal
from ..cli.output import to_json
from ..encoding import canonical_json
from ..errors import InvalidJobId, LedgerError, UnknownJob
from ..lifecycle import State
from ..timeline import duration
from .auth import Guard
from .background import VerifyWatch
from .reads import ROWS, Board, JobPage
from .timeline import drawing

HERE = Path(__file__).parent
#: Timeline rows on a job's page: a longer history shows its first and last half of these.
TIMELINE_ROWS = 200

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def create_app(
    board: Board,
    verify: VerifyWatch,
    *,
    secret: str | None = None,
    database: str = "",
    refresh_seconds: float = 5.0,
) -> ASGIApp:
    """The ASGI app; ``database`` is the masked URL shown in the footer."""
    pages = Pages(board, verify, database, refresh_seconds)
    routes = [
        Route("/", pages.overview),
        Route("/attention", pages.attention),
        Route("/jobs/{job_id:path}", pages.job),
        Route("/job", pages.job),  # ?id=: for the ids "." and "..", see job_url
        Route("/verify", pages.verify),
        Route("/search", pages.search),
        Route("/api/overview", pages.api_overview),
        Route("/api/queues", pages.api_queues),
        Route("/api/status", pages.api_status),
        Route("/api/processes", pages.api_processes),
        Route("/api/attention", pages.api_attention),
        Route("/api/verify", pages.api_verify),
        Route("/api/jobs", pages.api_jobs),
        Route("/api/jobs/{job_id:path}", pages.api_job),
        Route("/api/history/{job_id:path}", pages.api_history),
        Route("/api/history", pages.api_history),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            404: pages.not_found,
            400: pages.bad_request,
            LedgerError: pages.unavailable,
        },
    )
    return SecurityHeaders(Guard(app, secret))


class SecurityHeaders:
    """ASGI middleware adding :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def environment() -> jinja2.Environment:
    """Templates with autoescaping everywhere and every value made visible first."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        finalize=_visible,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["job_url"] = job_url
    env.filters["history_url"] = lambda job_id: job_url(job_id, "/api/history", "/api/history")
    env.filters["ago"] = _seconds
    env.filters["since"] = duration
    env.filters["canonical"] = canonical_json
    env.filters["when"] = _when
    return env


def _when(moment: datetime | None) -> str:
    """A UTC instant to the millisecond: ``2026-11-27 22:07:47.056``."""
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _visible(value: Any) -> Any:
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return terminal.visible(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def _ends(steps: list[Any], limit: int) -> tuple[list[Any], int]:
    """``steps`` if there are at most ``limit``, else the first and last ``limit // 2``."""
    if len(steps) <= limit:
        return steps, 0
    half = limit // 2
    return steps[:half] + steps[-half:], len(steps) - 2 * half


def _json(value: Any, status_code: int = 200) -> Response:
    return Response(to_json(value) + "\n", status_code, media_type="application/json")


def job_url(job_id: str, path: str = "/jobs", by_query: str = "/job") -> str:
    """Where a job's page (or, with other routes, its history) is.

    The id goes into the path, every reserved character escaped. Browsers resolve ``.``
    and ``..`` path segments, escaped or not, so those two ids go in the query instead.
    """
    if job_id in (".", ".."):
        return f"{by_query}?id={quote(job_id, safe='')}"
    return f"{path}/{quote(job_id, safe='')}"


def _job_id(request: Request) -> str:
    """The job id of a request: in the path, or (``/job``, ``/api/history``) as ``?id=``."""
    job_id = request.path_params.get("job_id", request.query_params.get("id"))
    if job_id is None:
        raise HTTPException(400, "which job? (/jobs/ID, or ?id=ID)")
    return str(job_id)


class Pages:
    """The route handlers; each reads through the :class:`Board` and renders or dumps."""

    def __init__(
        self, board: Board, verify: VerifyWatch, database: str, refresh_seconds: float
    ) -> None:
        self.board = board
        self.verify_watch = verify
        self.database = database
        self.refresh_seconds = refresh_seconds
        self.env = environment()

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        template = self.env.get_template(name)
        page = template.render(
            request=request,
            database=self.database,
            refresh=self.refresh_seconds,
            states=[state.value for state in State],
            rows=ROWS,
            **context,
        )
        return HTMLResponse(page, status_code)

    # -- pages -------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", view=self.board.overview(ROWS))

    def attention(self, request: Request) -> Response:
        return self.render(request, "attention.html", view=self.board.attention())

    def job(self, request: Request) -> Response:
        page = self._job_page(_job_id(request))
        shown, hidden = _ends(page.steps, TIMELINE_ROWS)
        return self.render(
            request,
            "job.html",
            view=page,
            drawing=drawing(page.steps),
            title=page.status.job_id,
            shown=shown,
            hidden=hidden,
        )

    def verify(self, request: Request) -> Response:
        watch = self.verify_watch
        return self.render(
            request,
            "verify.html",
            last=watch.last,
            running_since=watch.running_since,
            interval=watch.interval,
        )

    def search(self, request: Request) -> Response:
        text = request.query_params.get("q", "").strip()
        if not text:
            return RedirectResponse("/", 303)
        try:
            if self.board.exists(text):
                return RedirectResponse(job_url(text), 303)
            found = self.board.search(text)
        except InvalidJobId as exc:
            raise HTTPException(400, str(exc)) from None
        return self.render(request, "search.html", 200 if found else 404, query=text, found=found)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return self._error(request, 404, getattr(exc, "detail", "not found"))

    async def bad_request(self, request: Request, exc: Exception) -> Response:
        return self._error(request, 400, getattr(exc, "detail", "bad request"))

    async def unavailable(self, request: Request, exc: Exception) -> Response:
        """The database or liveness backend failed: 503, with jobledger's (masked) message."""
        return self._error(request, 503, f"{type(exc).__name__}: {exc}")

    def _error(self, request: Request, status_code: int, detail: str) -> Response:
        if request.url.path.startswith("/api/"):
            return _json({"error": detail}, status_code)
        return self.render(request, "error.html", status_code, detail=detail, code=status_code)

    def _job_page(self, job_id: str) -> JobPage:
        try:
            return self.board.job(job_id)
        except UnknownJob:
            raise HTTPException(404, f"no job {job_id!r}") from None
        except InvalidJobId as exc:
            raise HTTPException(400, str(exc)) from None

    # -- the same data for scripts -------------------------------------------------------

    def api_overview(self, request: Request) -> Response:
        view = self.board.overview()
        return _json(
            {
                "queues": [_queue_stat(s) for s in view.queues],
                "states": view.states,
                "processes": [_holder(h) for h in view.processes],
                "dead_holders": [_holder(h) for h in view.dead_holders],
                "counted_through": view.counted_through,
                "last_position": view.last_position,
            }
        )

    def api_queues(self, request: Request) -> Response:
        """``jobledger queues --json``, as one array."""
        return _json([_queue_stat(s) for s in self.board.overview().queues])

    def api_status(self, request: Request) -> Response:
        """``jobledger status --json`` (no job): jobs per state, from the queue figures."""
        return _json(self.board.overview().states)

    def api_processes(self, request: Request) -> Response:
        """``jobledger processes --json``: each live process and its jobs (see ``HELD_ROWS``)."""
        view = self.board.overview()
        found = []
        held_by = self.board.held_by([holder.identity for holder in view.processes])
        for holder in view.processes:
            held = held_by.get(holder.identity, [])
            info = asdict(holder.info) if holder.info else {"identity": holder.identity}
            found.append(
                {
                    **info,
                    "held": held,
                    "held_count": holder.held,
                    "refreshed_seconds_ago": holder.refreshed_ago,
                }
            )
        return _json(found)

    def api_attention(self, request: Request) -> Response:
        view = self.board.attention()
        return _json(
            {
                "dead_holders": [_holder(h) for h in view.dead_holders],
                "held_by_dead": view.dead,
                "silent": view.silent,
                "abandoned": view.abandoned,
                "exhausted": view.exhausted,
                "rejected": [_event(e) for e in view.rejected],
                "max_attempts": view.settings.max_attempts,
                "silent_after_seconds": view.settings.silent_after,
                "rejected_window_events": view.window,
            }
        )

    def api_verify(self, request: Request) -> Response:
        last = self.verify_watch.last
        running = self.verify_watch.running_since
        body: dict[str, Any] = {"running_since": running, "last": None}
        if last is not None:
            report = last.report
            body["last"] = {
                "started_at": last.started_at,
                "seconds": last.seconds,
                "error": last.error,
                **(
                    {
                        "ok": report.ok,
                        "jobs": report.jobs,
                        "events": report.events,
                        "problem_count": report.problem_count,
                        "problems": [str(p) for p in report.problems[:ROWS]],
                    }
                    if report is not None
                    else {}
                ),
            }
        return _json(body)

    def api_jobs(self, request: Request) -> Response:
        """``jobledger jobs --json``, as one array; ``limit`` at most 1000 (default 100)."""
        params = request.query_params
        state, queue = params.get("state"), params.get("queue")
        try:
            limit = int(params.get("limit", "100"))
        except ValueError:
            raise HTTPException(400, "limit must be a whole number") from None
        if not 1 <= limit <= 1000:
            raise HTTPException(400, "limit must be between 1 and 1000")
        try:
            found = self.board.jobs(state, queue, limit)
        except (ValueError, InvalidJobId) as exc:
            raise HTTPException(400, str(exc)) from None
        return _json(found)

    def api_job(self, request: Request) -> Response:
        """``jobledger status JOB --json``."""
        return _json(self._job_page(_job_id(request)).status)

    def api_history(self, request: Request) -> Response:
        """``jobledger history JOB --json``, as one array, with the chain's status."""
        page = self._job_page(_job_id(request))
        return _json(
            {
                "steps": [step.as_dict() for step in page.steps],
                "chain": {"ok": page.chain.ok, "problems": page.chain.problems},
                "fold_error": page.fold_error,
            }
        )


def _queue_stat(stat: Any) -> dict[str, Any]:
    return {**asdict(stat), "mean_run_seconds": stat.mean_run_seconds}


def _holder(holder: Any) -> dict[str, Any]:
    return {
        "identity": holder.identity,
        "alive": holder.alive,
        "held": holder.held,
        "refreshed_seconds_ago": holder.refreshed_ago,
        "info": asdict(holder.info) if holder.info else None,
    }


def _event(event: Any) -> dict[str, Any]:
    return asdict(event)
