"""The admin port: Prometheus metrics, health endpoints and the web dashboard,
served by aiohttp inside the server's own event loop (``distqueue[web]``).

Everything here reads the service layer (distqueue.service) through one shared
snapshot per interval (snapshot.py): a scrape, a health probe or a dashboard tab
never counts the jobs table, and a hundred open tabs cost one store call a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distqueue.server.server import Server
    from distqueue.web.app import AdminSite

__all__ = ["WEB_MISSING", "start_admin", "web_available"]

#: what a server without the web extra says about its admin port
WEB_MISSING = (
    "the admin port (metrics, health, dashboard) needs the web extra:"
    " pip install 'distqueue[web]' (--http off silences this)"
)


def web_available() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(m) is not None for m in ("aiohttp", "jinja2", "prometheus_client")
    )


async def start_admin(server: Server, host: str, port: int) -> AdminSite:
    """Listen on ``host:port`` with the admin app for ``server``."""
    from distqueue.web.app import AdminSite

    site = AdminSite(server)
    await site.start(host, port)
    return site
