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


#: a wrong token's reply waits BASE * 2**(failures-1) seconds, at most MAX_DELAY
AUTH_BASE_DELAY = 0.1
AUTH_MAX_DELAY = 5.0
#: a connection is closed after this many wrong tokens
AUTH_MAX_FAILURES = 3
#: a peer's failures are forgotten after this many seconds without one
AUTH_FORGET_AFTER = 300.0
#: the most peers remembered (the oldest are forgotten first)
AUTH_MAX_PEERS = 10_000


class AuthThrottle:
    """Wrong tokens, counted by peer address across its connections: each one's
    reply waits twice as long as the one before (from 0.1 s up to 5 s), so guessing
    from one address runs at a few guesses a second at most, however many
    connections it opens; each connection is closed at its third wrong token."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._peers: OrderedDict[str, tuple[int, float]] = OrderedDict()
        #: wrong tokens seen in all
        self.failures = 0

    def failed(self, host: str) -> tuple[int, float]:
        """Count a wrong token from ``host``; its failures in a row and the seconds its
        reply must wait."""
        now = self.clock()
        count, last = self._peers.pop(host, (0, now))
        if now - last > AUTH_FORGET_AFTER:
            count = 0
        count += 1
        self._peers[host] = (count, now)
        if len(self._peers) > AUTH_MAX_PEERS:
            self._peers.popitem(last=False)
        self.failures += 1
        return count, min(AUTH_MAX_DELAY, AUTH_BASE_DELAY * 2 ** min(count - 1, 16))


#: the server's log of refused clients (client-caused: never more than a few lines)
refusals = QuietLog(logging.getLogger("distqueue.server"))
