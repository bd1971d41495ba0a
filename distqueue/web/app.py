"""The admin port's aiohttp application: security, health, metrics; the dashboard's
pages are added by dashboard.py.

Security, for a port a browser may reach:

- With a server token, every path but /livez and /readyz (which say nothing but
  up or down) needs it: ``Authorization: Bearer <token>`` (Prometheus, curl), or
  a session cookie from the login form (browsers). Wrong tokens are throttled like
  the protocol's (the same AuthThrottle, per address).
- Every state-changing request is a POST carrying the CSRF token (double submit: a
  random cookie, SameSite=Strict, echoed in the form or an ``X-CSRF-Token``
  header); a request authenticated by its bearer header carries no cookie a
  cross-site page could ride on, and needs none.
- A strict Content-Security-Policy (nothing but this origin's own files; no
  inline script), no framing, no sniffing, no referrer.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from distqueue import codec
from distqueue.web.prom import exposition, registry_for
from distqueue.web.snapshot import Snapshot

if TYPE_CHECKING:
    from distqueue.server.server import Server

__all__ = ["SERVER_KEY", "SNAPSHOT_KEY", "AdminSite", "csrf_token", "require_csrf"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVER_KEY: web.AppKey[Server] = web.AppKey("server")
SNAPSHOT_KEY: web.AppKey[Snapshot] = web.AppKey("snapshot")
SECRET_KEY: web.AppKey[bytes] = web.AppKey("secret")
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("registry")
#: this request's CSRF token (set by csrf_token), and whether a bearer header authenticated it
CSRF_KEY: web.RequestKey[str] = web.RequestKey("csrf", str)
BEARER_KEY: web.RequestKey[bool] = web.RequestKey("bearer", bool)

SESSION_COOKIE = "dq_session"
CSRF_COOKIE = "dq_csrf"
#: paths anyone may read: they say up or down, nothing more (and /static/, the
#: dashboard's own style and script, which the sign-in page needs)
OPEN_PATHS = frozenset({"/livez", "/readyz", "/login"})
#: a login session lasts this long (seconds)
SESSION_AGE = 12 * 3600

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _session_value(secret: bytes, expires: int) -> str:
    mac = hmac.new(secret, f"session:{expires}".encode(), "sha256").hexdigest()
    return f"{expires}.{mac}"


def _session_ok(secret: bytes, value: str | None) -> bool:
    if not value or "." not in value:
        return False
    expires, _, _ = value.partition(".")
    if not expires.isdigit() or int(expires) < time.time():
        return False
    return hmac.compare_digest(value, _session_value(secret, int(expires)))


def _bearer_ok(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


def csrf_token(request: web.Request) -> str:
    """The CSRF token a page puts in its forms (set as a cookie on its response)."""
    token = request.get(CSRF_KEY)
    if not isinstance(token, str):
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        request[CSRF_KEY] = token
    return token


async def require_csrf(request: web.Request) -> None:
    """Raise 403 unless a POST carries the CSRF token of its cookie (or came with a
    bearer token, which a cross-site page cannot send)."""
    if request.get(BEARER_KEY):
        return
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get("X-CSRF-Token", "")
    if not sent and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        sent = str((await request.post()).get("csrf", ""))
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and retry")


@web.middleware
async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
    server = request.app[SERVER_KEY]
    token = server.config.token
    open_path = request.path in OPEN_PATHS or request.path.startswith("/static/")
    if token is not None and not open_path:
        if _bearer_ok(request, token):
            request[BEARER_KEY] = True
        elif not _session_ok(request.app[SECRET_KEY], request.cookies.get(SESSION_COOKIE)):
            if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
                raise web.HTTPSeeOther(f"/login?next={request.path_qs}")
            raise web.HTTPUnauthorized(
                text="the server's token is needed: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="distqueue"'},
            )
    if request.method not in ("GET", "HEAD") and request.path != "/login":
        await require_csrf(request)
    response = await handler(request)
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cache-Control", "no-store")
    csrf = request.get(CSRF_KEY)
    if isinstance(csrf, str) and request.cookies.get(CSRF_COOKIE) != csrf:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="Strict", path="/")
    return response


# -- health -------------------------------------------------------------------------------


async def livez(request: web.Request) -> web.Response:
    """The process serves HTTP: never touches the store."""
    return web.Response(text="ok\n")


def _readiness(request: web.Request) -> str | None:
    """Why this server is not ready, or None."""
    server = request.app[SERVER_KEY]
    snapshot = request.app[SNAPSHOT_KEY]
    if server.draining:
        return "draining: the server is stopping"
    error = server.service.health.error
    if error is not None:
        return f"store unavailable: {error}"
    if snapshot.fresh_at == 0.0:
        return "starting: the store has not answered yet"
    if time.monotonic() - snapshot.fresh_at > max(5.0, 5 * snapshot.interval):
        return "store unavailable: no answer for a while"
    return None


async def readyz(request: web.Request) -> web.Response:
    """The store answers, recovery finished, not draining: 200; else 503 and why."""
    why = _readiness(request)
    if why is None:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=why + "\n")


def health_report(request: web.Request) -> tuple[int, dict[str, Any]]:
    server = request.app[SERVER_KEY]
    snapshot = request.app[SNAPSHOT_KEY]
    service = server.service
    stats = snapshot.stats or {}
    jobs = stats.get("jobs", {})
    workers = list(service.workers.values())
    idle = sum(1 for w in workers if not w.held)
    queued = jobs.get("queued", 0)
    still = time.monotonic() - service.metrics.last_progress
    status = "ok"
    why = _readiness(request)
    if why is not None:
        status = why.split(":", 1)[0]
    elif queued and idle and still > server.config.stuck_after and not service.flow_held:
        status = "stuck"
        why = (
            f"stuck: {queued} jobs queued and {idle} workers idle, nothing handed out"
            f" or finished for {still:.0f}s (do the workers serve these queues and types?)"
        )
    xact_age = stats.get("oldest_transaction_age")
    warnings = []
    if xact_age is not None and xact_age > server.config.long_transaction:
        warnings.append(
            f"a transaction on the store's database has been open {xact_age:.0f}s: it holds"
            " back vacuum, and the queue tables bloat (find it in pg_stat_activity)"
        )
    body = {
        "status": status,
        "reason": why,
        "warnings": warnings,
        "oldest_transaction_age": xact_age,
        "store": service.health.to_wire(),
        "queue_depth": queued,
        "jobs": jobs,
        "oldest_ready_age": stats.get("oldest_ready_age"),
        "workers": {"connected": len(workers), "idle": idle, "active": len(workers) - idle},
        "seconds_since_progress": round(still, 3),
        "snapshot_age": round(time.monotonic() - snapshot.taken_at, 3)
        if snapshot.taken_at
        else None,
    }
    return (200 if status == "ok" else 503), body


async def health(request: web.Request) -> web.Response:
    """/health: the JSON report; 503 when not ready or stuck."""
    status, body = health_report(request)
    return web.Response(status=status, body=codec.dumps(body), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY_KEY]
    return web.Response(
        body=exposition(registry),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


# -- login --------------------------------------------------------------------------------

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>distqueue: sign in</title>
<link rel="stylesheet" href="/static/dashboard.css"></head>
<body class="login"><main><h1>distqueue</h1>
<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label>Server token <input type="password" name="token" autofocus required></label>
<button type="submit">Sign in</button></form>{error}</main></body></html>
"""


def _safe_next(value: str) -> str:
    """Only a path on this site (no //host, no scheme): no open redirect."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


async def login_page(request: web.Request) -> web.Response:
    import html

    nxt = html.escape(_safe_next(request.query.get("next", "/")), quote=True)
    error = request.query.get("error")
    shown = '<p class="error">Wrong token.</p>' if error else ""
    return web.Response(text=LOGIN_PAGE.format(next=nxt, error=shown), content_type="text/html")


async def login(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    form = await request.post()
    nxt = _safe_next(str(form.get("next", "/")))
    token = server.config.token
    if token is None:
        raise web.HTTPSeeOther(nxt)
    host = request.remote or ""
    throttle = server.auth_throttle
    wait = throttle.wait(host)
    if wait is None:
        raise web.HTTPTooManyRequests(text="too many token tries from this address")
    if wait:
        await asyncio.sleep(wait)
    if not hmac.compare_digest(str(form.get("token", "")).encode(), token.encode()):
        throttle.failed(host)
        raise web.HTTPSeeOther(f"/login?error=1&next={nxt}")
    throttle.succeeded(host)
    response = web.HTTPSeeOther(nxt)
    expires = int(time.time()) + SESSION_AGE
    response.set_cookie(
        SESSION_COOKIE, _session_value(request.app[SECRET_KEY], expires),
        httponly=True, samesite="Strict", path="/", max_age=SESSION_AGE,
    )  # fmt: skip
    raise response


def create_app(server: Server, snapshot: Snapshot) -> web.Application:
    app = web.Application(middlewares=[security], client_max_size=1024 * 1024)
    app[SERVER_KEY] = server
    app[SNAPSHOT_KEY] = snapshot
    app[SECRET_KEY] = secrets.token_bytes(32)  # sessions end with the process
    app[REGISTRY_KEY] = registry_for(server, snapshot)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    from distqueue.web import dashboard

    dashboard.setup(app)
    return app


class AdminSite:
    """The admin port of one server: its snapshot task and its HTTP listener."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.snapshot = Snapshot(server)
        self.app = create_app(server, self.snapshot)
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.snapshot.start()

    async def close(self) -> None:
        await self.snapshot.stop()
        await self._runner.cleanup()
