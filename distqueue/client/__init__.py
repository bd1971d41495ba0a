"""Clients of a distqueue server."""

from distqueue.client.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]
