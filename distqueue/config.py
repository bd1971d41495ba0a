"""Settings of the server, with their defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from distqueue.policy import DEFAULT_LEASE, Retention

__all__ = ["DEFAULT_PORT", "DEFAULT_SERVER", "ServerConfig", "server_addresses"]

DEFAULT_PORT = 7700
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
#: the environment variable naming the server(s) for clients, workers and the CLI
SERVER_ENV = "DISTQUEUE_SERVER"


@dataclass(kw_only=True)
class ServerConfig:
    #: the address to listen on
    host: str = "127.0.0.1"
    #: the port to listen on (0 = any free port)
    port: int = DEFAULT_PORT
    #: the store: a directory for the embedded store, or a store URL
    data: str = "./distqueue-data"
    #: "full": every answered change is fsynced (survives power loss); "normal": it is
    #: written to the OS (survives the server being killed) and fsynced at checkpoints
    durability: str = "full"
    #: when set, every connection must present it (HELLO ... TOKEN t, or AUTH t) first
    token: str | None = None
    #: seconds a FETCH leases a job for; workers heartbeat at a third of it
    lease: float = DEFAULT_LEASE
    #: the largest request accepted, in bytes (a payload plus its command)
    max_payload: int = 64 * 1024 * 1024
    #: seconds a worker-declared job type is still accepted after its last worker left
    type_memory: float = 7 * 86_400.0
    #: how long finished jobs are kept
    retention: Retention = field(default_factory=Retention)
    #: seconds an unauthenticated connection may stay silent before it is closed
    auth_timeout: float = 10.0
    #: seconds a half-sent request may stall before the connection is closed
    frame_timeout: float = 30.0
    #: seconds between a blocked FETCH's or WAIT's own looks at the store; what this
    #: server does wakes them at once, and so do other servers' events on a shared store
    poll: float = 1.0


def server_addresses(value: str | None) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` (default: $DISTQUEUE_SERVER, else 127.0.0.1:7700)."""
    text = value or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    out: list[tuple[str, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep:
            host, port = part, str(DEFAULT_PORT)
        host = host.strip("[]") or "127.0.0.1"
        try:
            number = int(port)
        except ValueError:
            raise ValueError(f"bad server address {part!r}: expected HOST:PORT") from None
        if not 0 < number < 65536:
            raise ValueError(f"bad server address {part!r}: port out of range")
        out.append((host, number))
    if not out:
        raise ValueError(f"no server address in {text!r}")
    return out
