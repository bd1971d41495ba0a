"""The dashboard's pages (being built: issue #11)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the dashboard's routes to the admin app."""
