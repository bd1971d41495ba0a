"""Settings of the server, with their defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from distqueue import defaults
from distqueue.policy import DEFAULT_LEASE, Retention, RetryPolicy

if TYPE_CHECKING:
    from distqueue.store.base import Limit

__all__ = [
    "DEFAULT_HTTP",
    "DEFAULT_PORT",
    "DEFAULT_SERVER",
    "Address",
    "ServerConfig",
    "server_addresses",
]

DEFAULT_PORT = defaults.PORT
#: the admin port's default address (distqueue server --http)
DEFAULT_HTTP = defaults.HTTP
DEFAULT_SERVER = defaults.SERVER
#: the environment variable naming the server(s) for clients, workers and the CLI
SERVER_ENV = "DISTQUEUE_SERVER"


@dataclass(kw_only=True)
class ServerConfig:
    #: the address to listen on
    host: str = defaults.HOST
    #: the port to listen on (0 = any free port)
    port: int = DEFAULT_PORT
    #: the store: a directory for the embedded store, or a store URL
    data: str = defaults.DATA
    #: "full": every answered change is fsynced (survives power loss); "normal": it is
    #: written to the OS (survives the server being killed) and fsynced at checkpoints
    durability: str = defaults.DURABILITY
    #: when set, every connection must present it (HELLO ... TOKEN t, or AUTH t) first
    token: str | None = None
    #: seconds a FETCH leases a job for; workers heartbeat at a third of it
    lease: float = DEFAULT_LEASE
    #: the largest argument of a request (a payload, a job spec, a result), in bytes;
    #: a whole request may be up to 64 KiB more (its command and the rest)
    max_payload: int = defaults.MAX_PAYLOAD
    #: a connection whose replies not yet taken by its client pass this many bytes is
    #: dropped at once (a client that does not read cannot make the server hold more)
    max_output: int = defaults.MAX_OUTPUT
    #: ... or when they stay above ``output_soft`` bytes for ``output_soft_seconds``
    output_soft: int = defaults.OUTPUT_SOFT
    output_soft_seconds: float = defaults.OUTPUT_SOFT_SECONDS
    #: refuse to listen on an address other machines can reach without a token
    #: unless this is set (the Faktory rule: an open port runs anyone's jobs)
    insecure: bool = False
    #: the most bytes of jobs (args plus payloads) one FETCH answer carries; a job
    #: larger than that is handed out alone
    max_fetch_bytes: int = defaults.MAX_FETCH_BYTES
    #: seconds a worker-declared job type is still accepted after its last worker left
    type_memory: float = defaults.TYPE_MEMORY
    #: how long finished jobs are kept
    retention: Retention = field(default_factory=Retention)
    #: retry backoff of failed jobs, and the poison limit (leases lost without an answer)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    poison_limit: int = defaults.POISON_LIMIT
    #: seconds a connection has to authenticate (when a token is set), whatever it
    #: sends meanwhile: a hard deadline, from the connection's first moment
    auth_timeout: float = defaults.AUTH_TIMEOUT
    #: seconds a half-sent request may stall before the connection is closed
    frame_timeout: float = defaults.FRAME_TIMEOUT
    #: limits set in the store when the server starts (``--limit``); each replaces
    #: the stored limit of its queue or type, the others stay as they are
    limits: tuple[Limit, ...] = ()
    #: seconds between a blocked FETCH's or WAIT's own looks at the store; what this
    #: server does wakes them at once, and so do other servers' events on a shared store
    poll: float = defaults.POLL
    #: TLS: the server's certificate (chain) and private key, PEM files; with both,
    #: the port speaks TLS only
    tls_cert: str | None = None
    tls_key: str | None = None
    #: TLS: require a client certificate signed by this CA (a PEM file)
    tls_ca: str | None = None
    #: the admin port (metrics, health, dashboard; distqueue[web]) as HOST:PORT, or
    #: None for none. ``distqueue server`` listens on 127.0.0.1:7701 unless told
    #: ``--http off``; a library-made server only when given one
    http: str | None = None
    #: ``http`` was asked for: an admin port that cannot be had stops the server
    #: (False: the default address, skipped with a warning when another process has it)
    http_given: bool = True
    #: a beanstalkd-protocol listener (distqueue.beanstalk) as HOST:PORT, or None
    beanstalk: str | None = None
    #: /health reports the queue stuck when jobs are ready, workers idle and nothing
    #: was handed out or finished for this many seconds
    stuck_after: float = defaults.STUCK_AFTER
    #: /health warns of a transaction open this long on a PostgreSQL store's database
    long_transaction: float = defaults.LONG_TRANSACTION


class Address(tuple[str, int]):
    """A server's ``(host, port)`` — a tuple, so ``host, port = address`` works — that
    also says whether it is reached over TLS (written ``tls://host:port``)."""

    tls: bool

    def __new__(cls, host: str, port: int, tls: bool = False) -> Address:
        self = super().__new__(cls, (host, port))
        self.tls = tls
        return self

    def __getnewargs__(self) -> tuple[str, int, bool]:
        return self[0], self[1], self.tls

    def __eq__(self, other: object) -> bool:
        return tuple.__eq__(self, other) is True and self.tls == getattr(other, "tls", False)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self[0], self[1], self.tls))

    def __str__(self) -> str:
        host = f"[{self[0]}]" if ":" in self[0] else self[0]
        return f"{'tls://' if self.tls else ''}{host}:{self[1]}"

    def __repr__(self) -> str:
        return f"Address({self[0]!r}, {self[1]}{', tls=True' if self.tls else ''})"


def redact_url(text: str) -> str:
    """``text`` with every password in it shown as ``***``: the userinfo of URLs
    (``redis://:pw@host``, ``redis://user:pw@host``) and ``password=`` options."""
    import re

    # the password runs to the last @ before the path (an unencoded @ may be in it)
    text = re.sub(r"(://[^:/@\s]*:)[^/\s]*@", r"\1***@", text)
    text = re.sub(r"(://)(?![^/@\s]*:)([^/@\s]+)@", r"\1***@", text)  # a bare token
    return re.sub(r"((?:^|[?&])(?:password|ssl_password)=)[^&\s]*", r"\1***", text)


def exposed(host: str) -> bool:
    """Whether listening on ``host`` lets other machines connect: anything but a
    loopback address (or a name that resolves only to loopback addresses)."""
    import ipaddress
    import socket

    if host in ("", "*"):
        return True
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return True
    return not all(ipaddress.ip_address(str(info[4][0])).is_loopback for info in infos)


def check_exposure(config: ServerConfig) -> None:
    """Refuse to open a port that other machines reach without a token, unless told
    ``insecure`` (anyone who reaches it could submit and run jobs)."""
    if config.token is not None and not config.token.strip():
        raise ValueError("the token is empty: give a real one, or none")
    # a client certificate the server requires (tls_ca) authenticates too
    authenticated = config.token is not None or config.tls_ca is not None
    if config.beanstalk is not None and not config.insecure:
        host = config.beanstalk.rpartition(":")[0].strip("[]")
        if exposed(host):
            raise ValueError(
                f"refusing the beanstalk listener on {host or 'every address'}: the"
                " beanstalkd protocol has no authentication, so anyone who reaches the"
                " port could submit and run jobs. Listen on a loopback address, or pass"
                " --insecure if the network is yours alone"
            )
    if not authenticated and not config.insecure and exposed(config.host):
        raise ValueError(
            f"refusing to listen on {config.host or 'every address'} without a token:"
            " anyone who reaches the port could submit and run jobs. Set a token"
            " (DISTQUEUE_TOKEN or --token-file) or require client certificates"
            " (--tls-ca), or pass --insecure if the network is yours alone"
        )


def server_addresses(value: str | None) -> list[Address]:
    """``[tls://]host:port[,[tls://]host:port...]`` (default: $DISTQUEUE_SERVER, else
    127.0.0.1:7700); each an Address, ``tls`` set for those written ``tls://``."""
    text = value or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    out: list[Address] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        scheme, sep, rest = part.partition("://")
        tls = bool(sep) and scheme.lower() == "tls"
        if sep and not tls:
            raise ValueError(f"bad server address {part!r}: expected HOST:PORT or tls://HOST:PORT")
        where = rest if tls else part
        host, sep, port = where.rpartition(":")
        if not sep:
            host, port = where, str(DEFAULT_PORT)
        host = host.strip("[]") or "127.0.0.1"
        try:
            number = int(port)
        except ValueError:
            raise ValueError(f"bad server address {part!r}: expected HOST:PORT") from None
        if not 0 < number < 65536:
            raise ValueError(f"bad server address {part!r}: port out of range")
        out.append(Address(host, number, tls))
    if not out:
        raise ValueError(f"no server address in {text!r}")
    return out
