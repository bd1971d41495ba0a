"""The dashboard's pages (issue #11): server-rendered HTML, one small script.

- Every page is a GET that renders a Jinja2 template (autoescape on for everything:
  job args, results, errors and names are data, shown as text, never markup).
- Every action is a POST form carrying the CSRF token (the security middleware of
  app.py checks it), answered by a 303 back to the page with a short message in
  the query string (``?msg=``), shown escaped; a refused action (no such job, a
  state that does not allow it) is a message, never a traceback.
- Lists read ``Store.list`` with a LIMIT and a ``before`` cursor (keyset paging,
  newest first): never OFFSET, never a count of the jobs table. Counts come from
  the shared snapshot (snapshot.py), as do the live updates: /events streams one
  Server-Sent Event per snapshot, whatever the number of open tabs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import orjson
from aiohttp import web
from yarl import URL

from distqueue._version import __version__
from distqueue.errors import DistQueueError, JobNotFound, StoreError
from distqueue.jobs import TERMINAL_STATES, Job, JobState, check_name
from distqueue.web.app import CSP, SERVER_KEY, SNAPSHOT_KEY, csrf_token

__all__ = ["BULK_MAX", "PAGE", "setup"]

#: jobs per list page
PAGE = 50
#: ids one bulk action takes
BULK_MAX = 500
#: characters of args / result JSON shown on a job's page (the rest: a download)
PREVIEW = 64 * 1024
#: seconds an /events stream waits for a new snapshot before a keep-alive comment
KEEPALIVE = 15.0
#: longest flash message shown (from the query string)
MSG_MAX = 300
#: states in the order the pages list them
STATES = [
    JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING, JobState.RETRYING,
    JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED,
]  # fmt: skip
#: the biggest id a link may carry (the stores' ids are 64-bit signed)
MAX_ID = 2**63 - 1

STATIC = Path(__file__).parent / "static"
TEMPLATES_KEY: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
CLOSING_KEY: web.AppKey[asyncio.Event] = web.AppKey("closing", asyncio.Event)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- formatting (Jinja filters) -----------------------------------------------------------


def fmt_time(value: float | None) -> str:
    """Epoch seconds as UTC text; empty for None."""
    if value is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value)) + f".{int(value % 1 * 1000):03d}"


def fmt_iso(value: float | None) -> str:
    if value is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_size(n: int | None) -> str:
    if n is None:
        return ""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def fmt_rate(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def pretty_json(value: Any) -> str:
    """A JSON value as indented text (shown in a <pre>, escaped by the template)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("distqueue.web", "templates"),
        autoescape=True,  # every template, every value: job data is text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=fmt_time, iso=fmt_iso, duration=fmt_duration, size=fmt_size, rate=fmt_rate,
        pretty=pretty_json,
    )  # fmt: skip
    env.globals.update(states=[s.value for s in STATES], version=__version__)
    return env


# -- helpers ------------------------------------------------------------------------------


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    """Render a template with what every page needs (the CSRF token, the flash)."""
    env = request.app[TEMPLATES_KEY]
    msg = request.query.get("msg", "")[:MSG_MAX]
    level = "error" if request.query.get("level") == "error" else "ok"
    text = env.get_template(name).render(
        csrf=csrf_token(request), msg=msg, level=level, path=request.path, **context
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def back(target: str, msg: str, *, error: bool = False) -> web.HTTPSeeOther:
    """A 303 to ``target`` (a path on this site) with a flash message."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = "/"
    url = URL(target)
    query: dict[str, str] = {k: v for k, v in url.query.items() if k not in ("msg", "level")}
    query["msg"] = msg[:MSG_MAX]
    if error:
        query["level"] = "error"
    return web.HTTPSeeOther(str(url.with_query(query)))


def _job_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if len(raw) > 19 or int(raw) > MAX_ID:
        raise JobNotFound(int(raw))
    return int(raw)


def _cursor(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
        raise DistQueueError(f"before must be a job id, not {raw!r}")
    return int(raw)


def _error_page(request: web.Request, exc: DistQueueError) -> web.Response:
    status = 404 if isinstance(exc, JobNotFound) else 503 if isinstance(exc, StoreError) else 400
    return render(request, "error.html", status=status, error=str(exc) or type(exc).__name__)


def page(handler: Handler) -> Handler:
    """A page whose refusals (no such job, the store down) render as a short message."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except DistQueueError as exc:
            return _error_page(request, exc)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


async def _next(request: web.Request, default: str) -> str:
    form = await request.post()
    value = form.get("next")
    return value if isinstance(value, str) and value else default


# -- overview -----------------------------------------------------------------------------


def _history(request: web.Request) -> list[list[float | None]]:
    return [list(point) for point in request.app[SNAPSHOT_KEY].history]


def _queues(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, counts in sorted(stats.get("queues", {}).items()):
        rows.append({"name": name, "counts": counts, "depth": counts.get("queued", 0)})
    return rows


@page
async def overview(request: web.Request) -> web.StreamResponse:
    """Store, jobs by state, queues, throughput, workers, the live chart."""
    snapshot = request.app[SNAPSHOT_KEY]
    stats = snapshot.stats
    return render(
        request, "overview.html", stats=stats, rates=snapshot.rates(),
        queues=_queues(stats or {}), history=orjson.dumps(_history(request)).decode(),
    )  # fmt: skip


# -- job lists ----------------------------------------------------------------------------


async def _list(request: web.Request, state: JobState | None, template: str) -> web.Response:
    q = request.query
    filters: dict[str, str] = {}
    error = ""
    try:
        if state is None and q.get("state"):
            try:
                state = JobState(q["state"])
            except ValueError:
                raise DistQueueError(f"no state {q['state']!r}") from None
            filters["state"] = state.value
        queue = q.get("queue", "").strip() or None
        type_ = q.get("type", "").strip() or None
        if queue is not None:
            filters["queue"] = check_name("queue", queue)
        if type_ is not None:
            filters["type"] = check_name("job type", type_)
        before = _cursor(q.get("before"))
        # one more than a page: whether an older page exists, without counting
        jobs = await request.app[SERVER_KEY].service.store.list(
            state=state, queue=queue, type=type_, limit=PAGE + 1, before=before
        )
    except StoreError:
        raise
    except DistQueueError as exc:
        error, jobs, before = str(exc), [], None
    older = None
    if len(jobs) > PAGE:
        jobs = jobs[:PAGE]
        older = str(URL(request.path).with_query({**filters, "before": str(jobs[-1].id)}))
    newest = str(URL(request.path).with_query(filters)) if before is not None else None
    return render(
        request, template, jobs=jobs, filters=filters, error=error, older=older,
        newest=newest, here=request.path_qs, page_size=PAGE,
        bulk_max=BULK_MAX,
    )  # fmt: skip


@page
async def jobs(request: web.Request) -> web.StreamResponse:
    """Jobs, newest first, filtered by state, queue, type; an id jumps to its page."""
    raw = request.query.get("id", "").strip().lstrip("#")
    if raw:
        if raw.isdigit() and len(raw) <= 19:
            raise web.HTTPSeeOther(f"/jobs/{int(raw)}")
        raise back("/jobs", f"not a job id: {raw[:40]!r}", error=True)
    return await _list(request, None, "jobs.html")


@page
async def dead(request: web.Request) -> web.StreamResponse:
    """The dead letters, with bulk retry and purge."""
    return await _list(request, JobState.DEAD, "dead.html")


# -- one job ------------------------------------------------------------------------------


def _preview(value: Any) -> tuple[str, int]:
    text = pretty_json(value)
    return text[:PREVIEW], len(text)


@page
async def job(request: web.Request) -> web.StreamResponse:
    """The whole job: spec, state, counts, args, result, last error, actions."""
    found: Job = await request.app[SERVER_KEY].service.status(_job_id(request))
    args, args_len = _preview(found.args)
    result_bytes = isinstance(found.result, bytes | bytearray | memoryview)
    result, result_len = ("", 0) if result_bytes else _preview(found.result)
    now = time.time()
    return render(
        request, "job.html", job=found, args=args, args_len=args_len, preview=PREVIEW,
        result=result, result_len=result_len, result_bytes=result_bytes,
        result_size=len(found.result) if result_bytes else 0,
        has_result=found.state is JobState.SUCCEEDED,
        finished=found.state in TERMINAL_STATES,
        can_retry=found.state in (JobState.DEAD, JobState.CANCELLED),
        lease_left=None if found.lease_until is None else found.lease_until - now,
        waited=None if found.started_at is None else found.started_at - found.created_at,
        ran=None if found.started_at is None or found.finished_at is None
        else found.finished_at - found.started_at,
    )  # fmt: skip


@page
async def job_result(request: web.Request) -> web.StreamResponse:
    """A succeeded job's result as a download: bytes as they are, JSON as JSON."""
    found = await request.app[SERVER_KEY].service.status(_job_id(request))
    if found.state is not JobState.SUCCEEDED:
        raise DistQueueError(f"job {found.id} is {found.state.value}: it has no result")
    if isinstance(found.result, bytes | bytearray | memoryview):
        body, kind, ext = bytes(found.result), "application/octet-stream", "bin"
    else:
        body, kind, ext = orjson.dumps(found.result), "application/json", "json"
    return web.Response(body=body, headers={
        "Content-Type": kind,
        "Content-Disposition": f'attachment; filename="job-{found.id}-result.{ext}"',
    })  # fmt: skip


@page
async def job_payload(request: web.Request) -> web.StreamResponse:
    """The job's payload bytes as a download."""
    found = await request.app[SERVER_KEY].service.status(_job_id(request))
    if found.payload is None:
        raise DistQueueError(f"job {found.id} has no payload")
    return web.Response(body=bytes(found.payload), headers={
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'attachment; filename="job-{found.id}-payload.bin"',
    })  # fmt: skip


# -- actions ------------------------------------------------------------------------------


async def _act(request: web.Request, what: str) -> web.StreamResponse:
    service = request.app[SERVER_KEY].service
    try:
        job_id = _job_id(request)
    except JobNotFound as exc:
        raise back("/jobs", str(exc), error=True) from None
    target = await _next(request, f"/jobs/{job_id}")
    try:
        if what == "cancel":
            state = await service.cancel(job_id)
            msg = (
                f"Job {job_id} cancelled."
                if state is JobState.CANCELLED
                else f"Job {job_id} is {state.value}: asked its worker to stop it."
            )
        elif what == "retry":
            await service.retry(job_id)
            msg = f"Job {job_id} queued again."
        else:
            await service.purge(job_id)
            msg = f"Job {job_id} purged."
            if target == f"/jobs/{job_id}":
                target = "/jobs"
    except DistQueueError as exc:  # JobNotFound, IllegalTransition, StoreError ...
        if isinstance(exc, JobNotFound) and target == f"/jobs/{job_id}":
            target = "/jobs"
        raise back(target, f"Cannot {what} job {job_id}: {exc}", error=True) from None
    raise back(target, msg)


async def cancel(request: web.Request) -> web.StreamResponse:
    return await _act(request, "cancel")


async def retry(request: web.Request) -> web.StreamResponse:
    return await _act(request, "retry")


async def purge(request: web.Request) -> web.StreamResponse:
    return await _act(request, "purge")


async def bulk(request: web.Request) -> web.StreamResponse:
    """Retry or purge the dead letters ticked on the page (at most BULK_MAX)."""
    form = await request.post()
    target = await _next(request, "/dead")
    action = form.get("action")
    if action not in ("retry", "purge"):
        raise back(target, "Choose retry or purge.", error=True)
    raw = [str(v) for v in form.getall("ids", [])]
    if not raw:
        raise back(target, "No jobs selected.", error=True)
    if len(raw) > BULK_MAX:
        raise back(target, f"At most {BULK_MAX} jobs at once, not {len(raw)}.", error=True)
    if not all(v.isdigit() and len(v) <= 19 and int(v) <= MAX_ID for v in raw):
        raise back(target, "Job ids are numbers.", error=True)
    ids = sorted({int(v) for v in raw})
    service = request.app[SERVER_KEY].service
    done, failed = 0, []
    for job_id in ids:
        try:
            if action == "retry":
                await service.retry(job_id)
            else:
                await service.purge(job_id)
        except StoreError as exc:
            failed.append(f"job {job_id}: {exc}")
            break  # the store is down: the rest would fail the same way
        except DistQueueError as exc:
            failed.append(f"job {job_id}: {exc}")
        else:
            done += 1
    verb = "Retried" if action == "retry" else "Purged"
    msg = f"{verb} {done} of {len(ids)} jobs."
    if failed:
        msg += " Refused: " + "; ".join(failed[:3]) + (" ..." if len(failed) > 3 else "")
    raise back(target, msg, error=bool(failed))


# -- workers ------------------------------------------------------------------------------


@page
async def workers(request: web.Request) -> web.StreamResponse:
    """Every worker on the queue (the store's registry, when it has one) or those
    connected to this server."""
    service = request.app[SERVER_KEY].service
    rows: dict[str, dict[str, Any]] = {}
    registry = hasattr(service.store, "workers")
    note = ""
    if registry:
        try:
            records = await service.store.workers(service.clock(), max_age=3 * service.config.lease)
        except DistQueueError as exc:
            registry, note = False, f"the store's worker registry did not answer: {exc}"
            records = []
        for rec in records:
            info = rec.info if isinstance(rec.info, dict) else {}
            rows[rec.id] = {
                "id": rec.id, "name": info.get("name", ""), "host": info.get("host", ""),
                "pid": info.get("pid", ""), "types": _names(info.get("types")),
                "queues": _names(info.get("queues"), every="every queue"),
                "concurrency": info.get("concurrency", ""), "server": info.get("server", ""),
                "since": _number(info.get("since")), "seen": rec.seen, "jobs": list(rec.jobs),
                "here": rec.id in service.workers,
            }  # fmt: skip
    for w in service.workers.values():
        if w.id in rows:
            continue
        rows[w.id] = {
            "id": w.id, "name": w.name, "host": "", "pid": "", "types": sorted(w.types),
            "queues": ["every queue"] if w.queues is None else sorted(w.queues),
            "concurrency": w.concurrency, "server": "this server", "since": w.since,
            "seen": None, "jobs": sorted(w.held), "here": True,
        }  # fmt: skip
    return render(
        request, "workers.html", workers=sorted(rows.values(), key=lambda r: str(r["id"])),
        registry=registry, note=note,
    )  # fmt: skip


def _names(value: Any, every: str = "") -> list[str]:
    if value is None:
        return [every] if every else []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# -- live updates -------------------------------------------------------------------------


def event_data(request: web.Request) -> dict[str, Any]:
    """What one SSE event carries: counts, rates, workers, store, the last point."""
    snapshot = request.app[SNAPSHOT_KEY]
    stats = snapshot.stats or {}
    w = stats.get("workers", {})
    return {
        "version": snapshot.version,
        "store": stats.get("store"),
        "jobs": stats.get("jobs", {}),
        "totals": stats.get("totals", {}),
        "queues": stats.get("queues", {}),
        "rates": snapshot.rates(),
        "workers": {k: w.get(k, 0) for k in
                    ("connected", "active", "idle", "waiting", "slots", "busy_slots")},
        "point": list(snapshot.history[-1]) if snapshot.history else None,
        "uptime": stats.get("server", {}).get("uptime"),
    }  # fmt: skip


async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one ``data:`` JSON event per snapshot (shared by every tab),
    a comment every KEEPALIVE seconds without one; ends when the client goes away
    or the admin site shuts down."""
    snapshot = request.app[SNAPSHOT_KEY]
    closing = request.app[CLOSING_KEY]
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no", "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
    })  # fmt: skip
    await response.prepare(request)
    sent = -1
    stop = asyncio.ensure_future(closing.wait())
    try:
        await response.write(b"retry: 2000\n\n")
        while not closing.is_set():
            version = snapshot.version
            if version != sent and snapshot.stats is not None:
                sent = version
                data = orjson.dumps(event_data(request))
                await response.write(b"data: " + data + b"\n\n")
            else:  # no new snapshot for a while (or none yet)
                await response.write(b": keep-alive\n\n")
            waiter = asyncio.ensure_future(snapshot.changed(version, KEEPALIVE))
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
            transport = request.transport
            if transport is None or transport.is_closing():
                break
    except (ConnectionResetError, ConnectionError):
        return response  # the tab went away
    finally:
        stop.cancel()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response


async def _closing(app: web.Application) -> None:
    app[CLOSING_KEY].set()  # open /events streams end now, not at the shutdown timeout


# -- routes -------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """Add the dashboard's routes to the admin app."""
    app[TEMPLATES_KEY] = _environment()
    app[CLOSING_KEY] = asyncio.Event()
    app.on_shutdown.append(_closing)
    r = app.router
    r.add_get("/", overview)
    r.add_get("/jobs", jobs)
    r.add_get(r"/jobs/{id:\d+}", job)
    r.add_get(r"/jobs/{id:\d+}/result", job_result)
    r.add_get(r"/jobs/{id:\d+}/payload", job_payload)
    r.add_post(r"/jobs/{id:\d+}/cancel", cancel)
    r.add_post(r"/jobs/{id:\d+}/retry", retry)
    r.add_post(r"/jobs/{id:\d+}/purge", purge)
    r.add_get("/dead", dead)
    r.add_post("/dead/bulk", bulk)
    r.add_get("/workers", workers)
    r.add_get("/events", events)
    r.add_static("/static", STATIC, append_version=False)
