"""The command table: verb -> argument check, who may send it, handler.

Handlers parse their arguments, call the Service, and shape the reply; they hold
no rules. Each returns a reply value (see resp.encode_reply) or raises a
DistQueueError, which becomes an error reply.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distqueue import codec
from distqueue._version import __version__
from distqueue.errors import (
    AuthError,
    DistQueueError,
    InvalidJob,
    NotAllowed,
    UnknownCommand,
    WrongArguments,
)
from distqueue.jobs import DEFAULT_QUEUE, Job, JobError, JobSpec, JobState, check_name
from distqueue.limits import limit_to_wire
from distqueue.protocol import PROTOCOL_VERSION
from distqueue.protocol.guard import AUTH_MAX_FAILURES, AuthThrottle, refusals
from distqueue.protocol.messages import job_to_wire, spec_from_wire
from distqueue.protocol.resp import Resp3, Simple
from distqueue.service.core import Service, WorkerInfo
from distqueue.store.base import Periodic

__all__ = ["COMMANDS", "Command", "Session"]

OK = Simple("OK")
#: the most jobs one FETCH may ask for, and the most one LIST may return
MAX_FETCH = 1000
MAX_LIST = 1000
#: FETCH's default wait, in seconds
FETCH_TIMEOUT = 5.0
#: the RESP versions a Redis client library may ask for with ``HELLO 2|3``
REDIS_PROTOCOLS = (2, 3)
#: the Redis version INFO answers (``redis_version``): the Redis whose handshake
#: (HELLO, AUTH, INFO, CLIENT, SELECT) this server answers as client libraries expect
REDIS_VERSION = "7.4.0"
#: connection ids (HELLO's ``id``, CLIENT ID), unique within this server process
_CLIENT_IDS = itertools.count(1)


class Session:
    """One connection's state: NEW -> (authenticated) -> client or worker -> closing."""

    def __init__(
        self,
        service: Service,
        peer: str,
        *,
        host: str = "",
        throttle: AuthThrottle | None = None,
    ) -> None:
        self.service = service
        self.peer = peer
        #: the peer's address, whose wrong tokens ``throttle`` counts
        self.host = host
        self.throttle = throttle
        self.auth_failures = 0
        self.authenticated = service.config.token is None
        self.role = "client"
        self.hello = False
        self.worker: WorkerInfo | None = None
        self.closing = False
        #: replies in RESP3 forms (it said Redis's HELLO 3; resp.encode_reply3)
        self.resp3 = False
        #: what a Redis client library tells about itself (HELLO SETNAME, CLIENT ...)
        self.client_id = next(_CLIENT_IDS)
        self.client_name: bytes | None = None
        self.lib_name: bytes | None = None
        self.lib_ver: bytes | None = None


Handler = Callable[[Session, list[bytes]], Any]


@dataclass(frozen=True)
class Command:
    #: the handler; returns a reply value or an awaitable of one
    handler: Handler
    #: the fewest and most arguments after the verb (None = no limit)
    min_args: int
    max_args: int | None
    #: "any" (even before auth), "client" (clients and workers), "worker"
    role: str
    #: the syntax line, for ARGS errors
    syntax: str


# -- argument helpers -------------------------------------------------------------------


def _text(arg: bytes, what: str) -> str:
    try:
        return arg.decode()
    except UnicodeDecodeError:
        raise WrongArguments(f"{what} must be UTF-8 text") from None


def _int(arg: bytes, what: str, low: int = 0, high: int | None = None) -> int:
    try:
        value = int(arg)
    except ValueError:
        raise WrongArguments(f"{what} must be an integer, not {arg[:40]!r}") from None
    if value < low or (high is not None and value > high):
        limit = f"{low}-{high}" if high is not None else f">= {low}"
        raise WrongArguments(f"{what} must be {limit}, not {value}")
    return value


def _float(arg: bytes, what: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise WrongArguments(f"{what} must be a number, not {arg[:40]!r}") from None
    if not 0 <= value < 1e9:
        raise WrongArguments(f"{what} must be a number of seconds >= 0")
    return value


def _options(args: list[bytes], names: set[str], syntax: str) -> dict[str, bytes]:
    """``NAME value NAME value ...`` keyword arguments, names case-insensitive."""
    if len(args) % 2:
        raise WrongArguments(f"options come in NAME value pairs: {syntax}")
    out: dict[str, bytes] = {}
    for i in range(0, len(args), 2):
        name = _text(args[i], "option name").upper()
        if name not in names:
            raise WrongArguments(f"unknown option {name}: {syntax}")
        out[name] = args[i + 1]
    return out


def _status(job: Job) -> bytes:
    return codec.dumps(job_to_wire(job))


# -- connection commands ----------------------------------------------------------------


def cmd_ping(s: Session, args: list[bytes]) -> Any:
    return args[0] if args else Simple("PONG")


def _check_token(s: Session, token: bytes) -> bool:
    """Authenticate the session if ``token`` is the server's; False if it is wrong."""
    expected = s.service.config.token
    if expected is None:
        return True
    if not hmac.compare_digest(token, expected.encode()):
        return False
    s.authenticated = True
    return True


def _try_token(s: Session, token: bytes, then: Callable[[], Any]) -> Any:
    """Check ``token`` (``then()`` if right) when the throttle lets this try go: at
    once for an address with no wrong token behind it, else after its turn, right
    token or wrong (see guard.AuthThrottle)."""
    wait: float | None = 0.0
    if s.throttle is not None and not s.authenticated:
        wait = s.throttle.wait(s.host)
    if wait is None:
        s.closing = True
        refusals.warning("refused a token from %s: too many tries waiting", s.host or s.peer)
        raise AuthError("too many token tries from this address: try again later (closing)")
    if not wait:
        return _decide(s, token, then)

    async def later() -> Any:
        await asyncio.sleep(wait)
        return _decide(s, token, then)

    return later()


def _decide(s: Session, token: bytes, then: Callable[[], Any]) -> Any:
    if _check_token(s, token):
        if s.throttle is not None:
            s.throttle.succeeded(s.host)
        return then()
    s.auth_failures += 1
    in_a_row = 1 if s.throttle is None else s.throttle.failed(s.host)
    message = "wrong token"
    if s.auth_failures >= AUTH_MAX_FAILURES:
        s.closing = True
        message += f" ({s.auth_failures} on this connection: closing it)"
    refusals.warning("wrong token from %s (%d in a row)", s.host or s.peer, in_a_row)
    raise AuthError(message)


def cmd_auth(s: Session, args: list[bytes]) -> Any:
    # AUTH token, or Redis's AUTH username password (what a client library sends
    # given a username): the username is not checked, the password is the token
    return _try_token(s, args[-1], lambda: OK)


HELLO_SYNTAX = (
    "HELLO [version] [TOKEN t] [ROLE client|worker] [ID id] [NAME n] [TYPES t1,t2]"
    " [QUEUES q1,q2|*] [CONCURRENCY n]"
)
HELLO_OPTIONS = {"TOKEN", "ROLE", "ID", "NAME", "TYPES", "QUEUES", "CONCURRENCY"}


def _names(arg: bytes, what: str) -> frozenset[str]:
    try:
        return frozenset(check_name(what, n) for n in _text(arg, what).split(",") if n)
    except InvalidJob as exc:
        raise WrongArguments(str(exc)) from None


def cmd_hello(s: Session, args: list[bytes]) -> Any:
    # synchronous on purpose: a FETCH pipelined right behind HELLO must already see
    # this connection as a worker when it is dispatched
    if args and args[0].isdigit():
        version = int(args[0])
        if version in REDIS_PROTOCOLS:  # a Redis client library's handshake
            return _redis_hello(s, version, args[1:])
        if version != PROTOCOL_VERSION:
            raise WrongArguments(
                f"protocol version {version} is not spoken here (this server speaks"
                f" {PROTOCOL_VERSION}; Redis client libraries HELLO 2 or 3)"
            )
        args = args[1:]
    opts = _options(args, HELLO_OPTIONS, HELLO_SYNTAX)
    if "TOKEN" in opts:
        return _try_token(s, opts["TOKEN"], lambda: _hello(s, opts))
    return _hello(s, opts)


def _hello(s: Session, opts: dict[str, bytes]) -> Any:
    if not s.authenticated:
        raise AuthError("this server wants a token: HELLO 1 TOKEN <token>, or AUTH <token>")
    if s.hello:
        raise NotAllowed("this connection already said HELLO")
    role = _text(opts.get("ROLE", b"client"), "role").lower()
    if role not in ("client", "worker"):
        raise WrongArguments(f"role must be client or worker, not {role!r}")
    reply: dict[str, Any] = {
        "server": "distqueue", "version": __version__, "protocol": PROTOCOL_VERSION,
        "role": role, "lease": s.service.config.lease,
        "max_payload": s.service.config.max_payload, "max_fetch": MAX_FETCH,
        "max_fetch_bytes": s.service.config.max_fetch_bytes,
    }  # fmt: skip
    if role == "worker":
        if "TYPES" not in opts:
            raise WrongArguments("a worker must say which job types it serves: TYPES t1,t2")
        types = _names(opts["TYPES"], "job type")
        if not types:
            raise WrongArguments("a worker must serve at least one job type")
        queues_arg = opts.get("QUEUES", DEFAULT_QUEUE.encode())
        queues = None if queues_arg == b"*" else _names(queues_arg, "queue")
        if queues is not None and not queues:
            raise WrongArguments("a worker must serve at least one queue (or * for all)")
        worker_id = _text(opts["ID"], "id") if "ID" in opts else f"w-{secrets.token_hex(4)}"
        try:
            check_name("worker id", worker_id)
        except InvalidJob as exc:
            raise WrongArguments(str(exc)) from None
        info = WorkerInfo(
            id=worker_id, name=_text(opts.get("NAME", worker_id.encode()), "name")[:200],
            types=types, queues=queues,
            concurrency=_int(opts.get("CONCURRENCY", b"1"), "concurrency", 1, 100_000),
            since=s.service.clock(),
        )  # fmt: skip
        s.worker = s.service.connect_worker(info)
        reply["id"] = worker_id
    else:
        reply["id"] = f"c-{os.getpid()}-{id(s):x}"
    s.role = role
    s.hello = True
    return codec.dumps(reply)


# -- the handshake of Redis client libraries --------------------------------------------
# redis-py, node-redis, ioredis and the like open a connection with Redis's HELLO 2|3
# (or AUTH), CLIENT SETINFO / SETNAME, maybe SELECT, and INFO (ioredis' ready check):
# these are answered as Redis does, so the libraries work with their default options
# and SUBMIT, STATUS, RESULT ... go through their generic command calls.

REDIS_HELLO_SYNTAX = "HELLO 2|3 [AUTH username password] [SETNAME clientname]"


def _client_name(arg: bytes) -> bytes:
    """A client name as Redis takes one: printable ASCII, no spaces (empty: none)."""
    if any(not 33 <= c <= 126 for c in arg):
        raise WrongArguments("client names cannot contain spaces, newlines or special characters")
    return arg


def _redis_hello(s: Session, proto: int, args: list[bytes]) -> Any:
    """``HELLO 2|3 [AUTH username password] [SETNAME clientname]``: switch the
    connection's replies to RESP2 or RESP3 and answer what Redis answers."""
    password: bytes | None = None
    name: bytes | None = None
    i = 0
    while i < len(args):
        option = args[i].upper()
        if option == b"AUTH" and i + 2 < len(args):
            password = args[i + 2]  # the username (args[i + 1]) is not checked
            i += 3
        elif option == b"SETNAME" and i + 1 < len(args):
            name = _client_name(args[i + 1])
            i += 2
        else:
            shown = option[:40].decode("utf-8", "replace")
            raise WrongArguments(f"syntax error in HELLO option {shown!r}: {REDIS_HELLO_SYNTAX}")
    if password is not None:
        return _try_token(s, password, lambda: _redis_hello_reply(s, proto, name))
    if not s.authenticated:
        raise AuthError(
            f"this server wants a token: HELLO {proto} AUTH default <token>, or AUTH <token> first"
        )
    return _redis_hello_reply(s, proto, name)


def _redis_hello_reply(s: Session, proto: int, name: bytes | None) -> Any:
    if name is not None:
        s.client_name = name or None
    s.resp3 = proto == 3
    reply: dict[str, Any] = {
        "server": "distqueue", "version": __version__, "proto": proto, "id": s.client_id,
        "mode": "standalone", "role": "master", "modules": [],
    }  # fmt: skip
    if proto == 3:
        return Resp3(reply)  # a map, even when the answer waited for the token throttle
    return [item for pair in reply.items() for item in pair]


def _info_sections(s: Session) -> dict[str, list[tuple[str, Any]]]:
    uptime = int(time.monotonic() - s.service.started)
    return {
        "server": [
            ("redis_version", REDIS_VERSION), ("redis_mode", "standalone"),
            ("server_name", "distqueue"), ("distqueue_version", __version__),
            ("distqueue_protocol", PROTOCOL_VERSION), ("process_id", os.getpid()),
            ("uptime_in_seconds", uptime), ("uptime_in_days", uptime // 86400),
        ],
        "persistence": [("loading", 0), ("async_loading", 0)],
        "replication": [("role", "master"), ("connected_slaves", 0)],
        "cluster": [("cluster_enabled", 0)],
        "keyspace": [],
    }  # fmt: skip


def cmd_info(s: Session, args: list[bytes]) -> Any:
    """``INFO [section ...]``: Redis's INFO text, with what a client library reads of
    it (ioredis' ready check waits for ``loading:0``); an unknown section is empty."""
    sections = _info_sections(s)
    wanted = {a.decode("ascii", "replace").lower() for a in args}
    if not wanted or wanted & {"default", "all", "everything"}:
        wanted = set(sections)
    parts = []
    for name, fields in sections.items():
        if name in wanted:
            lines = [f"# {name.capitalize()}\r\n"] + [f"{k}:{v}\r\n" for k, v in fields]
            parts.append("".join(lines))
    return "\r\n".join(parts)


CLIENT_SYNTAX = (
    "CLIENT SETINFO LIB-NAME|LIB-VER value | CLIENT SETNAME name | CLIENT GETNAME"
    " | CLIENT ID | CLIENT INFO"
)
#: CLIENT's subcommands: their number of arguments and syntax
CLIENT_SUBCOMMANDS = {
    b"SETINFO": (2, "CLIENT SETINFO LIB-NAME|LIB-VER value"),
    b"SETNAME": (1, "CLIENT SETNAME name"),
    b"GETNAME": (0, "CLIENT GETNAME"),
    b"ID": (0, "CLIENT ID"),
    b"INFO": (0, "CLIENT INFO"),
}


def cmd_client(s: Session, args: list[bytes]) -> Any:
    sub = args[0].upper()
    if sub not in CLIENT_SUBCOMMANDS:
        shown = sub[:40].decode("utf-8", "replace")
        raise UnknownCommand(
            f"unknown subcommand 'CLIENT {shown}': distqueue answers {CLIENT_SYNTAX}"
        )
    nargs, syntax = CLIENT_SUBCOMMANDS[sub]
    rest = args[1:]
    if len(rest) != nargs:
        raise WrongArguments(f"wrong number of arguments: {syntax}")
    if sub == b"SETINFO":
        attr = rest[0].upper()
        if attr not in (b"LIB-NAME", b"LIB-VER"):
            raise WrongArguments(f"unknown attribute {rest[0][:40]!r}: {syntax}")
        value = _client_name(rest[1])
        if attr == b"LIB-NAME":
            s.lib_name = value or None
        else:
            s.lib_ver = value or None
        return OK
    if sub == b"SETNAME":
        s.client_name = _client_name(rest[0]) or None
        return OK
    if sub == b"GETNAME":
        return s.client_name
    if sub == b"ID":
        return s.client_id
    fields = [
        b"id=%d" % s.client_id, b"name=" + (s.client_name or b""), b"db=0",
        b"resp=%d" % (3 if s.resp3 else 2),
        b"lib-name=" + (s.lib_name or b""), b"lib-ver=" + (s.lib_ver or b""),
    ]  # fmt: skip
    return b" ".join(fields) + b"\n"


def cmd_select(s: Session, args: list[bytes]) -> Any:
    if args[0] != b"0":
        raise WrongArguments("distqueue has one database: SELECT 0 only")
    return OK


def cmd_quit(s: Session, args: list[bytes]) -> Any:
    s.closing = True
    return OK


# -- client commands --------------------------------------------------------------------

SUBMIT_SYNTAX = (
    "SUBMIT type [text...] | SUBMIT {spec} [payload] | SUBMIT [{spec}, ...] [payload...]"
)


async def cmd_submit(s: Session, args: list[bytes]) -> Any:
    svc = s.service
    now = svc.clock()
    first = args[0][:1]
    if first not in (b"{", b"["):
        # the quick form: SUBMIT wordcount hello world
        texts = [_text(a, "text") for a in args[1:]]
        job_args: Any = None if not texts else texts[0] if len(texts) == 1 else texts
        try:
            spec = JobSpec(type=_text(args[0], "job type"), args=job_args)
            spec.validate()
        except InvalidJob as exc:
            raise InvalidJob(str(exc)) from None
        [job_id] = await svc.submit([(spec, True)])
        return job_id
    data = codec.loads(args[0], "job spec")
    many = first == b"["
    objs = data if many else [data]
    if many and not (isinstance(objs, list) and objs):
        raise InvalidJob("SUBMIT [...] needs a non-empty array of job specs")
    payloads = iter(args[1:])
    specs: list[tuple[JobSpec, bool]] = []
    for i, obj in enumerate(objs):
        try:
            payload = None
            if isinstance(obj, dict) and obj.get("payload"):
                payload = next(payloads, None)
                if payload is None:
                    raise InvalidJob("says payload: true but no payload argument is left")
            specs.append(spec_from_wire(obj, now, payload))
        except InvalidJob as exc:
            raise InvalidJob(f"job {i}: {exc}" if many else str(exc)) from None
    if next(payloads, None) is not None:
        raise WrongArguments("more payload arguments than specs with payload: true")
    ids = await svc.submit(specs)
    return ids if many else ids[0]


#: the largest id or token (a 64-bit signed integer)
MAX_ID = 2**63 - 1


def _job_id(arg: bytes) -> int:
    return _int(arg, "job id", 1, MAX_ID)


async def cmd_status(s: Session, args: list[bytes]) -> Any:
    return _status(await s.service.status(_job_id(args[0])))


async def cmd_result(s: Session, args: list[bytes]) -> Any:
    job = await s.service.result(_job_id(args[0]))
    if isinstance(job.result, bytes):
        return [b"bytes", job.result]
    return [b"json", codec.dumps(job.result)]


async def cmd_wait(s: Session, args: list[bytes]) -> Any:
    timeout = _float(args[1], "timeout") if len(args) > 1 else None
    return _status(await s.service.wait(_job_id(args[0]), timeout))


async def cmd_cancel(s: Session, args: list[bytes]) -> Any:
    state = await s.service.cancel(_job_id(args[0]))
    return Simple("cancelled" if state is JobState.CANCELLED else "cancelling")


async def cmd_retry(s: Session, args: list[bytes]) -> Any:
    await s.service.retry(_job_id(args[0]))
    return Simple("queued")


async def cmd_purge(s: Session, args: list[bytes]) -> Any:
    await s.service.purge(_job_id(args[0]))
    return OK


LIST_SYNTAX = "LIST [STATE s] [QUEUE q] [TYPE t] [LIMIT n] [BEFORE id]"


async def cmd_list(s: Session, args: list[bytes]) -> Any:
    opts = _options(args, {"STATE", "QUEUE", "TYPE", "LIMIT", "BEFORE"}, LIST_SYNTAX)
    state = None
    if "STATE" in opts:
        name = _text(opts["STATE"], "state").lower()
        try:
            state = JobState(name)
        except ValueError:
            states = ", ".join(st.value for st in JobState)
            raise WrongArguments(f"no state {name!r}; states are {states}") from None
    jobs = await s.service.store.list(
        state=state,
        queue=_text(opts["QUEUE"], "queue") if "QUEUE" in opts else None,
        type=_text(opts["TYPE"], "type") if "TYPE" in opts else None,
        limit=_int(opts.get("LIMIT", b"100"), "limit", 1, MAX_LIST),
        before=_job_id(opts["BEFORE"]) if "BEFORE" in opts else None,
    )
    return [_status(job) for job in jobs]


async def cmd_stats(s: Session, args: list[bytes]) -> Any:
    return codec.dumps(await s.service.stats())


async def cmd_metrics_get(s: Session, args: list[bytes]) -> Any:
    """STATS with this server's counters and histograms (the seed's METRICS_GET)."""
    stats = await s.service.stats()
    stats["metrics"] = s.service.metrics.to_wire()
    return codec.dumps(stats)


def cmd_shutdown(s: Session, args: list[bytes]) -> Any:
    """Stop the server gracefully, as SIGTERM does (the seed's SHUTDOWN)."""
    stop = s.service.on_shutdown
    if stop is None:
        raise NotAllowed("SHUTDOWN stops a server: there is none here (direct mode)")
    stop(f"SHUTDOWN from {s.peer}")
    return OK


# -- flow control: limits, paused queues, schedules ---------------------------------------

LIMIT_SYNTAX = (
    "LIMIT SET queue|type name [CONCURRENCY n] [RATE n/period] [BURST n] [MAX_DEPTH n]"
    " | LIMIT CLEAR queue|type name | LIMIT LIST"
)
LIMIT_OPTIONS = {"CONCURRENCY", "RATE", "BURST", "MAX_DEPTH"}


def _scope(arg: bytes) -> str:
    scope = _text(arg, "scope").lower()
    if scope not in ("queue", "type"):
        raise WrongArguments(f"a limit is on a queue or a type, not {scope!r}: {LIMIT_SYNTAX}")
    return scope


async def cmd_limit(s: Session, args: list[bytes]) -> Any:
    sub = _text(args[0], "subcommand").upper()
    if sub == "LIST" and len(args) == 1:
        return codec.dumps([limit_to_wire(x) for x in await s.service.store.limits()])
    if sub == "CLEAR" and len(args) == 3:
        await s.service.clear_limit(_scope(args[1]), _text(args[2], "name"))
        return OK
    if sub == "SET" and len(args) >= 5:
        opts = _options(args[3:], LIMIT_OPTIONS, LIMIT_SYNTAX)
        changes = {k.lower(): _text(v, k.lower()) for k, v in opts.items()}
        limit = await s.service.set_limit(_scope(args[1]), _text(args[2], "name"), changes)
        return codec.dumps(limit_to_wire(limit))
    raise WrongArguments(f"wrong arguments: {LIMIT_SYNTAX}")


async def cmd_pause(s: Session, args: list[bytes]) -> Any:
    queue = check_name("queue", _text(args[0], "queue"))
    seconds = None
    if len(args) > 1:
        seconds = _float(args[1], "seconds")
        if seconds <= 0:
            raise WrongArguments("seconds must be > 0 (RESUME ends a pause now)")
    await s.service.pause(queue, True, seconds=seconds)
    return OK


async def cmd_resume(s: Session, args: list[bytes]) -> Any:
    await s.service.pause(check_name("queue", _text(args[0], "queue")), False)
    return OK


async def cmd_paused(s: Session, args: list[bytes]) -> Any:
    if not args:
        return [q.encode() for q in await s.service.store.paused()]
    if args[0].upper() != b"ENDS":
        raise WrongArguments("PAUSED [ENDS]")
    return codec.dumps(await s.service.store.pauses())


SCHEDULE_SYNTAX = (
    "SCHEDULE ADD name {cron|every, timezone, catch_up, job} | SCHEDULE LIST"
    " | SCHEDULE REMOVE name | SCHEDULE PAUSE name | SCHEDULE RESUME name"
)
SCHEDULE_FIELDS = frozenset({"cron", "every", "timezone", "catch_up", "job"})


def periodic_to_wire(p: Periodic) -> dict[str, Any]:
    """A schedule as SCHEDULE LIST shows it; its job in SUBMIT's spec form."""
    job = dict(p.spec)
    if "max_retries" in job:
        job["retries"] = job.pop("max_retries")
    return {
        "name": p.name, "cron": p.cron, "every": p.every, "timezone": p.timezone,
        "catch_up": p.catch_up, "paused": p.paused, "next_at": p.next_at,
        "job": {k: v for k, v in job.items() if v is not None},
    }  # fmt: skip


async def cmd_schedule(s: Session, args: list[bytes]) -> Any:
    sub = _text(args[0], "subcommand").upper()
    svc = s.service
    if sub == "LIST" and len(args) == 1:
        return codec.dumps([periodic_to_wire(p) for p in await svc.store.periodics()])
    if len(args) < 2:
        raise WrongArguments(f"wrong arguments: {SCHEDULE_SYNTAX}")
    name = check_name("schedule name", _text(args[1], "name"))
    if sub == "ADD" and len(args) == 3:
        obj = codec.loads(args[2], "schedule")
        if not isinstance(obj, dict):
            raise InvalidJob("a schedule is a JSON object: {cron|every, timezone, catch_up, job}")
        unknown = set(obj) - SCHEDULE_FIELDS
        if unknown:
            raise InvalidJob(f"unknown field(s) in schedule: {', '.join(sorted(unknown))}")
        job = obj.get("job")
        if not isinstance(job, dict):
            raise InvalidJob("a schedule needs its job: a job spec object, as SUBMIT takes")
        if "payload" in job:
            raise InvalidJob("a periodic job has no payload")
        spec, check_type = spec_from_wire(job, svc.clock())
        if check_type:  # a typo of a known type is refused, as SUBMIT refuses it
            await svc.check_types([spec.type], svc.clock())
        cron, every = obj.get("cron"), obj.get("every")
        if cron is not None and not isinstance(cron, str):
            raise InvalidJob(f"cron must be a cron expression (a string), not {cron!r}")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int | float)):
            raise InvalidJob(f"every must be a number of seconds, not {every!r}")
        timezone, catch_up = obj.get("timezone", "UTC"), obj.get("catch_up", "once")
        if not isinstance(timezone, str) or not isinstance(catch_up, str):
            raise InvalidJob("timezone and catch_up are strings")
        added = await svc.add_schedule(
            name, spec, cron=cron, every=every, timezone=timezone, catch_up=catch_up
        )
        return codec.dumps(periodic_to_wire(added))
    if len(args) != 2:
        raise WrongArguments(f"wrong arguments: {SCHEDULE_SYNTAX}")
    if sub == "REMOVE":
        if not await svc.store.remove_periodic(name):
            raise InvalidJob(f"no schedule {name!r}")
        return OK
    if sub in ("PAUSE", "RESUME"):
        await svc.store.pause_periodic(name, sub == "PAUSE")
        return OK
    raise WrongArguments(f"wrong arguments: {SCHEDULE_SYNTAX}")


# -- worker commands --------------------------------------------------------------------


def _worker(s: Session) -> WorkerInfo:
    assert s.worker is not None  # the role check let only workers through
    return s.worker


async def cmd_fetch(s: Session, args: list[bytes]) -> Any:
    n = _int(args[0], "n", 1, MAX_FETCH) if args else 1
    timeout = _float(args[1], "timeout") if len(args) > 1 else FETCH_TIMEOUT
    jobs = await s.service.fetch(_worker(s), n, timeout)
    return [
        [
            job.id, job.token,
            codec.dumps({
                "type": job.type, "args": job.args, "queue": job.queue,
                "priority": job.priority, "timeout": job.timeout, "deadline": job.deadline,
                "attempts": job.attempts, "retries": job.max_retries,
                "failures": job.failures, "created_at": job.created_at,
                **({"after": list(job.after)} if job.pass_results else {}),
            }),
            job.payload,
        ]
        for job in jobs
    ]  # fmt: skip


def parse_ack(args: list[bytes]) -> tuple[int, int, Any]:
    """ACK's arguments: (job id, token, result)."""
    job_id, token = _job_id(args[0]), _int(args[1], "token", 0, MAX_ID)
    kind = _text(args[3], "kind").lower() if len(args) > 3 else "json"
    if kind not in ("json", "bytes"):
        raise WrongArguments(f"result kind must be json or bytes, not {kind!r}")
    result: Any = None
    if len(args) > 2:
        result = args[2] if kind == "bytes" else codec.loads(args[2], "result")
    return job_id, token, result


async def cmd_ack(s: Session, args: list[bytes]) -> Any:
    # a lone ACK; the connection groups pipelined ACKs into one ack_many instead
    job_id, token, result = parse_ack(args)
    await s.service.ack(_worker(s), job_id, token, result)
    return OK


async def cmd_fail(s: Session, args: list[bytes]) -> Any:
    job_id, token = _job_id(args[0]), _int(args[1], "token", 0, MAX_ID)
    obj = codec.loads(args[2], "error")
    if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
        raise InvalidJob('error must be a JSON object with a "kind" string')
    retryable = obj.get("retryable", True)
    if not isinstance(retryable, bool):
        raise InvalidJob("error.retryable must be true or false")
    error = JobError.from_dict(obj)
    outcome = await s.service.fail(_worker(s), job_id, token, error, retryable)
    return Simple(outcome.state.value)


async def cmd_progress(s: Session, args: list[bytes]) -> Any:
    job_id, token = _job_id(args[0]), _int(args[1], "token", 0, MAX_ID)
    percent = _float(args[2], "percent")
    if percent > 100:
        raise WrongArguments("percent must be 0-100")
    message = _text(args[3], "message") if len(args) > 3 else ""
    await s.service.progress(_worker(s), job_id, token, percent, message)
    return OK


async def cmd_beat(s: Session, args: list[bytes]) -> Any:
    holding = None
    if args:
        if args[0].upper() != b"HOLDING":
            raise WrongArguments("BEAT [HOLDING id...]")
        holding = {_job_id(a) for a in args[1:]}
    beat = await s.service.beat(_worker(s), holding)
    return codec.dumps({"held": sorted(beat.held), "cancel": beat.cancel})


def cmd_bye(s: Session, args: list[bytes]) -> Any:
    worker = _worker(s)
    s.closing = True  # at once: nothing pipelined behind a BYE runs

    async def bye() -> Any:
        await s.service.bye(worker)
        return OK

    return bye()


def _c(handler: Handler, lo: int, hi: int | None, role: str, syntax: str) -> Command:
    return Command(handler, lo, hi, role, syntax)


COMMANDS: dict[bytes, Command] = {
    b"PING": _c(cmd_ping, 0, 1, "any", "PING [message]"),
    b"AUTH": _c(cmd_auth, 1, 2, "any", "AUTH [username] token"),
    b"HELLO": _c(cmd_hello, 0, None, "any", HELLO_SYNTAX),
    b"QUIT": _c(cmd_quit, 0, 0, "any", "QUIT"),
    # what Redis client libraries send on connect (see _redis_hello)
    b"INFO": _c(cmd_info, 0, None, "client", "INFO [section ...]"),
    b"CLIENT": _c(cmd_client, 1, None, "client", CLIENT_SYNTAX),
    b"SELECT": _c(cmd_select, 1, 1, "client", "SELECT 0"),
    b"SUBMIT": _c(cmd_submit, 1, None, "client", SUBMIT_SYNTAX),
    b"STATUS": _c(cmd_status, 1, 1, "client", "STATUS id"),
    b"RESULT": _c(cmd_result, 1, 1, "client", "RESULT id"),
    b"WAIT": _c(cmd_wait, 1, 2, "client", "WAIT id [timeout]"),
    b"CANCEL": _c(cmd_cancel, 1, 1, "client", "CANCEL id"),
    b"RETRY": _c(cmd_retry, 1, 1, "client", "RETRY id"),
    b"PURGE": _c(cmd_purge, 1, 1, "client", "PURGE id"),
    b"LIST": _c(cmd_list, 0, 10, "client", LIST_SYNTAX),
    b"STATS": _c(cmd_stats, 0, 0, "client", "STATS"),
    # the verbs of the design this protocol comes from, where they fit
    b"METRICS_GET": _c(cmd_metrics_get, 0, 0, "client", "METRICS_GET"),
    b"JOB_STATUS": _c(cmd_status, 1, 1, "client", "JOB_STATUS id"),
    b"SHUTDOWN": _c(cmd_shutdown, 0, 0, "client", "SHUTDOWN"),
    # flow control (docs/protocol.md "Workflows and limits")
    b"LIMIT": _c(cmd_limit, 1, 12, "client", LIMIT_SYNTAX),
    b"PAUSE": _c(cmd_pause, 1, 2, "client", "PAUSE queue [seconds]"),
    b"RESUME": _c(cmd_resume, 1, 1, "client", "RESUME queue"),
    b"PAUSED": _c(cmd_paused, 0, 1, "client", "PAUSED [ENDS]"),
    b"SCHEDULE": _c(cmd_schedule, 1, 3, "client", SCHEDULE_SYNTAX),
    b"FETCH": _c(cmd_fetch, 0, 2, "worker", "FETCH [n] [timeout]"),
    b"ACK": _c(cmd_ack, 2, 4, "worker", "ACK id token [result] [json|bytes]"),
    b"FAIL": _c(cmd_fail, 3, 3, "worker", "FAIL id token error-json"),
    b"PROGRESS": _c(cmd_progress, 3, 4, "worker", "PROGRESS id token percent [message]"),
    b"BEAT": _c(cmd_beat, 0, None, "worker", "BEAT [HOLDING id...]"),
    b"BYE": _c(cmd_bye, 0, 0, "worker", "BYE"),
}


def check_allowed(s: Session, verb: bytes, command: Command, nargs: int) -> None:
    """Raise the error a command gets before its handler runs (validity matrix)."""
    if command.role != "any" and not s.authenticated:
        raise AuthError("authenticate first: HELLO 1 TOKEN <token>, or AUTH <token>")
    if command.role == "worker" and s.role != "worker":
        raise NotAllowed(f"{verb.decode()} is a worker command: say HELLO 1 ROLE worker first")
    if nargs < command.min_args or (command.max_args is not None and nargs > command.max_args):
        raise WrongArguments(f"wrong number of arguments: {command.syntax}")


def error_of(exc: BaseException) -> DistQueueError:
    return exc if isinstance(exc, DistQueueError) else DistQueueError(f"internal error: {exc}")
