"""Failed logins slow a password guesser down, and scrypt checks are bounded, so a flood costs little.

Why: a password is checked with scrypt (~50 ms and 16 MiB each, :mod:`.secrets`). Without a bound,
a script posting logins as fast as it can guesses ~20 passwords a second per core, and forty
concurrent checks (Starlette's thread pool) hold ~640 MiB. So:

* a client address that failed ``per_pair`` times for one user name within ``window_s`` is refused
  for that name (HTTP 429, saying for how long) until its oldest failure leaves the window, and
  one that failed ``per_address`` times for any names is refused for all;
* the limits are per address *and* name, never per name alone: an attacker elsewhere must not be
  able to lock the operator out of their own account at 3 a.m.;
* a refused attempt checks no password (it costs nothing) and is not counted again;
* at most ``MAX_CONCURRENT_CHECKS`` scrypt checks run at once; others wait their turn.

Failures are kept in memory (a restart forgets them) and for at most ``window_s``; the table holds
at most ``MAX_TRACKED`` addresses (the oldest are forgotten first), so a flood of addresses cannot
grow it without bound.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException

#: failed logins of one address for one user name within the window before that pair is refused
PER_PAIR = 5
#: failed logins of one address, whatever the names, within the window before it is refused
PER_ADDRESS = 20
#: seconds a failure counts
WINDOW_S = 300.0
#: scrypt checks running at once (each holds 16 MiB)
MAX_CONCURRENT_CHECKS = 2
#: addresses remembered at most
MAX_TRACKED = 10_000


class LoginThrottle:
    """Counts failed logins per (address, user) and per address over a sliding window; thread-safe."""

    def __init__(
        self,
        per_pair: int = PER_PAIR,
        per_address: int = PER_ADDRESS,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.per_pair, self.per_address, self.window_s = per_pair, per_address, window_s
        self._clock = clock
        self._lock = threading.Lock()
        #: address -> times of its failures, each with the user name tried (oldest first)
        self._failures: collections.OrderedDict[str, collections.deque[tuple[float, str]]] = (
            collections.OrderedDict()
        )
        #: bounds the scrypt checks running at once (see the module docstring)
        self.checks = threading.BoundedSemaphore(MAX_CONCURRENT_CHECKS)

    def attempt(self, address: str, user: str) -> None:
        """HTTP 429 naming the wait when ``address`` may not try ``user`` now; else the attempt is
        counted as a failure at once, before its password is checked, and :meth:`succeeded` takes it
        back. Checked and counted in one step: forty logins sent at the same moment (scrypt takes
        ~50 ms each) must not all pass a check none of them has yet counted against."""
        now = self._clock()
        with self._lock:
            failures = self._recent(address, now) or collections.deque()
            for_user = [t for t, name in failures if name == user]
            if len(for_user) >= self.per_pair:
                self._refuse(f"{len(for_user)} failed logins as {user!r} from {address}", for_user[0], now)
            if len(failures) >= self.per_address:
                self._refuse(f"{len(failures)} failed logins from {address}", failures[0][0], now)
            failures.append((now, user))
            self._failures[address] = failures
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)

    def succeeded(self, address: str, user: str) -> None:
        """A right password: that user's failures from that address are forgotten."""
        with self._lock:
            failures = self._failures.get(address)
            if failures:
                kept = collections.deque(f for f in failures if f[1] != user)
                if kept:
                    self._failures[address] = kept
                else:
                    del self._failures[address]

    def _recent(self, address: str, now: float) -> collections.deque[tuple[float, str]] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0][0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def _refuse(self, what: str, oldest: float, now: float) -> None:
        wait = max(1, math.ceil(oldest + self.window_s - now))
        raise HTTPException(
            429, f"login refused: {what} within {self.window_s:.0f} s; try again in {wait} s"
        )
