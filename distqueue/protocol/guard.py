"""What keeps hostile or careless clients from costing the server: a log that a
client cannot flood, and a throttle on wrong tokens."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["AuthThrottle", "QuietLog", "refusals"]


class QuietLog:
    """At most ``burst`` lines per ``period`` seconds; what is held back is counted
    and said with the next line that gets through. For lines a client can cause
    (refused frames, dropped connections): one line per refused client at most,
    and never a flood however many clients misbehave."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        period: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self.clock = clock
        self._window = -period
        self._used = 0
        #: lines held back since the last one that got through
        self.suppressed = 0

    def log(self, level: int, message: str, *args: object) -> bool:
        now = self.clock()
        if now - self._window >= self.period:
            self._window, self._used = now, 0
        if self._used >= self.burst:
            self.suppressed += 1
            return False
        self._used += 1
        if self.suppressed:
            message += " (%d similar lines held back)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self.logger.log(level, message, *args)
        return True

    def info(self, message: str, *args: object) -> bool:
        return self.log(logging.INFO, message, *args)

    def warning(self, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, message, *args)


#: after a wrong token from an address, its next try waits BASE * 2**(failures-1)
#: seconds, at most MAX_DELAY
AUTH_BASE_DELAY = 0.1
AUTH_MAX_DELAY = 5.0
#: a connection is closed after this many wrong tokens
AUTH_MAX_FAILURES = 3
#: tries from one address queue behind each other; one that would wait longer than
#: this is refused at once, its token unread
AUTH_MAX_WAIT = 30.0
#: an address's failures are forgotten after this many seconds without one
AUTH_FORGET_AFTER = 300.0
#: the most addresses remembered (the oldest are forgotten first)
AUTH_MAX_PEERS = 10_000


class AuthThrottle:
    """Token tries, paced by peer address across all its connections.

    An address with no wrong token behind it is never held up. After one, each of
    its tries waits its turn before its token is even looked at — right or wrong
    alike, so a guesser learns nothing by hanging up early — one try per
    0.1 s x 2**(failures-1) (doubling up to 5 s), in the order they came: guessing
    runs at a few tries a second from one address however many connections it
    opens, and at one per 5 s after a few dozen. A try that would wait more than
    30 s is refused at once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        #: address -> (failures in a row, time of the last, when its next try may go)
        self._peers: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        #: wrong tokens seen in all
        self.failures = 0

    def _entry(self, host: str, now: float) -> tuple[int, float, float]:
        count, last, turn = self._peers.get(host, (0, now, now))
        if now - last > AUTH_FORGET_AFTER:
            return 0, now, now
        return count, last, turn

    def wait(self, host: str) -> float | None:
        """Seconds this try from ``host`` must wait before its token is checked (0: go
        now); None: refused, too many of its tries wait already."""
        now = self.clock()
        count, last, turn = self._entry(host, now)
        if count == 0:
            return 0.0
        start = max(now, turn)
        if start - now > AUTH_MAX_WAIT:
            return None
        delay = min(AUTH_MAX_DELAY, AUTH_BASE_DELAY * 2.0 ** min(count - 1, 16))
        self._remember(host, (count, last, start + delay))
        return start + delay - now

    def failed(self, host: str) -> int:
        """Count a wrong token from ``host``; its failures in a row."""
        now = self.clock()
        count, _, turn = self._entry(host, now)
        self._remember(host, (count + 1, now, max(turn, now)))
        self.failures += 1
        return count + 1

    def succeeded(self, host: str) -> None:
        """A right token from ``host``: it is used by someone who knows the token, whose
        connections must not queue behind an old mistake (a guesser sharing its
        address gains a fresh start from it: the price of not locking out a fleet
        of workers behind one NAT address because one of them is misconfigured)."""
        self._peers.pop(host, None)

    def _remember(self, host: str, entry: tuple[int, float, float]) -> None:
        self._peers.pop(host, None)
        self._peers[host] = entry
        if len(self._peers) > AUTH_MAX_PEERS:
            self._peers.popitem(last=False)


#: the server's log of refused clients (client-caused: never more than a few lines)
refusals = QuietLog(logging.getLogger("distqueue.server"))
