"""Reconnect policy and tunnel state machine, sans-I/O.

Nothing here sleeps, reads a clock or opens a socket: the caller passes the current time
(seconds on any monotonic scale) into every transition and asks when the next connection
attempt is due. Randomness for the backoff jitter is injected, so tests drive the whole
lifecycle with a fake clock and a fixed random sequence.

States::

    pending -> connecting -> up -> reconnecting -> up ...
                   |                    |
                   +--> reconnecting    +--> failed (auth: retried with backoff;
                   |                    |            host key changed: not retried)
                   +--> failed          +--> ended (unreachable too long, or end())
    any live state --stop()--> stopped --start()--> connecting
    any state --end()--> ended (terminal)
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

__all__ = [
    "ErrorKind",
    "ReconnectPolicy",
    "State",
    "TunnelMachine",
    "describe_error",
    "port_candidates",
    "reconnect_problem",
]


class State(enum.Enum):
    PENDING = "pending"
    CONNECTING = "connecting"
    UP = "up"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"
    ENDED = "ended"


class ErrorKind(enum.Enum):
    """Why a connection attempt failed or a link dropped, in categories a user can act on."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    AUTH = "auth"
    HOST_KEY_CHANGED = "host_key_changed"
    LOST = "lost"
    OTHER = "other"


# Failures that need the user to change something: shown as `failed`, not `reconnecting`.
_USER_ACTION = frozenset({ErrorKind.AUTH, ErrorKind.HOST_KEY_CHANGED})
# Failures that are never retried without an explicit command: retrying a changed host
# key silently would defeat the pin.
_NO_RETRY = frozenset({ErrorKind.HOST_KEY_CHANGED})


def describe_error(kind: ErrorKind, detail: str = "") -> str:
    """One line for the tray: what happened and what the user can check."""
    tail = f" ({detail})" if detail else ""
    if kind is ErrorKind.REFUSED:
        return (
            "Connection refused: the cluster is not accepting SSH connections yet "
            f"(still starting, or the job has ended){tail}"
        )
    if kind is ErrorKind.TIMEOUT:
        return (
            "Connection timed out: check the job's Access Restriction (CIDR) in Rescale "
            f"against this computer's current public IP address{tail}"
        )
    if kind is ErrorKind.UNREACHABLE:
        return f"Cluster address not reachable: check the network connection{tail}"
    if kind is ErrorKind.AUTH:
        return (
            "Authentication failed: check that your SSH public key is set in Rescale "
            f"Job Settings (SSH public key) for this job{tail}"
        )
    if kind is ErrorKind.HOST_KEY_CHANGED:
        return (
            f"Host key changed: refusing to connect{tail}. If this job's cluster was "
            "rebuilt, accept the new key with `jobtunnel trust` (or the tray's menu); "
            "otherwise do not connect"
        )
    if kind is ErrorKind.LOST:
        return f"Connection lost{tail}"
    return f"SSH error{tail}"


def reconnect_problem(
    initial_delay: float, max_delay: float, reset_after: float, give_up_after: float
) -> tuple[str, str] | None:
    """The first reconnect setting a :class:`ReconnectPolicy` cannot use, as (field name,
    what is wrong), or None. The config check reports it at that key."""
    if initial_delay <= 0:
        return "initial_delay", "must be greater than 0"
    if max_delay < initial_delay:
        return "max_delay", f"must be at least initial_delay ({initial_delay})"
    if reset_after < 0:
        return "reset_after", "must be >= 0"
    if give_up_after <= 0:
        return "give_up_after", "must be greater than 0"
    return None


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with full jitter (delay drawn uniformly in [0, cap])."""

    initial_delay: float = 0.5
    max_delay: float = 30.0
    reset_after: float = 60.0
    give_up_after: float = 43200.0

    def __post_init__(self) -> None:
        problem = reconnect_problem(
            self.initial_delay, self.max_delay, self.reset_after, self.give_up_after
        )
        if problem is not None:
            raise ValueError(f"{problem[0]} {problem[1]}")

    def cap(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        # Cap the exponent so huge attempt counts cannot overflow a float.
        return min(self.max_delay, self.initial_delay * 2.0 ** min(attempt, 60))

    def delay(self, attempt: int, rand: Callable[[], float]) -> float:
        return rand() * self.cap(attempt)


class TunnelMachine:
    """The lifecycle of one endpoint's connection.

    The driver calls :meth:`start`, then loops: wait until :meth:`next_attempt_at`
    (or a reconnect-now), call :meth:`attempt_started`, and report the outcome with
    :meth:`connected` / :meth:`attempt_failed`, later :meth:`connection_lost`.
    Every method returns True when the visible state (or last error) changed.
    """

    def __init__(
        self,
        policy: ReconnectPolicy | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or ReconnectPolicy()
        self._rand = rand
        self.state = State.PENDING
        self.since = 0.0
        self.attempts = 0  # failures since the last reset; drives the backoff
        self.reconnects = 0  # successful connections after the first
        self.last_error: str | None = None
        self.last_error_kind: ErrorKind | None = None
        self.attempting = False
        self._next_attempt: float | None = None
        self._up_since: float | None = None
        self._down_since: float | None = None
        self._ever_up = False

    # -- queries -----------------------------------------------------------------------

    @property
    def next_attempt_at(self) -> float | None:
        """When the next connection attempt is due, or None when none will be made."""
        if self.attempting or self.state in (State.PENDING, State.STOPPED, State.ENDED):
            return None
        if self.state is State.UP:
            return None
        return self._next_attempt

    @property
    def give_up_at(self) -> float | None:
        """When a still-down endpoint will be ended, or None while up/inactive."""
        if self._down_since is None or self.state in (State.STOPPED, State.ENDED, State.UP):
            return None
        return self._down_since + self.policy.give_up_after

    @property
    def live(self) -> bool:
        return self.state not in (State.PENDING, State.STOPPED, State.ENDED)

    # -- transitions -------------------------------------------------------------------

    def _set(self, state: State, now: float) -> bool:
        if state is self.state:
            return False
        self.state = state
        self.since = now
        return True

    def start(self, now: float) -> bool:
        """Begin (or resume after stop): the first attempt is due at once."""
        if self.state not in (State.PENDING, State.STOPPED):
            return False
        self.attempts = 0
        self._next_attempt = now
        self._down_since = now
        self.attempting = False
        return self._set(State.CONNECTING, now)

    def due(self, now: float) -> bool:
        """Whether an attempt should start now. Ends the endpoint once it gave up."""
        if not self.live or self.attempting:
            return False
        give_up = self.give_up_at
        if give_up is not None and now >= give_up:
            self.end(now, "unreachable for too long; stopped retrying")
            return False
        nxt = self.next_attempt_at
        return nxt is not None and now >= nxt

    def attempt_started(self, now: float) -> bool:
        if not self.live or self.state is State.UP:
            raise RuntimeError(f"cannot start a connection attempt while {self.state.value}")
        self.attempting = True
        self._next_attempt = None
        return False

    def connected(self, now: float) -> bool:
        self.attempting = False
        if not self.live:
            return False
        if self._ever_up:
            self.reconnects += 1
        self._ever_up = True
        self._up_since = now
        self._down_since = None
        self.last_error = None
        self.last_error_kind = None
        self._set(State.UP, now)
        return True

    def attempt_failed(self, now: float, kind: ErrorKind, detail: str = "") -> bool:
        self.attempting = False
        if not self.live:
            return False
        self._record(kind, detail)
        if kind in _NO_RETRY:
            self._next_attempt = None
        else:
            self._next_attempt = now + self.policy.delay(self.attempts, self._rand)
            self.attempts += 1
        if self._down_since is None:
            self._down_since = now
        if kind in _USER_ACTION:
            self._set(State.FAILED, now)
        elif self.state is not State.CONNECTING:
            self._set(State.RECONNECTING, now)
        give_up = self.give_up_at
        if give_up is not None and now >= give_up:
            self.end(now, "unreachable for too long; stopped retrying")
        return True

    def connection_lost(
        self, now: float, kind: ErrorKind = ErrorKind.LOST, detail: str = ""
    ) -> bool:
        if self.state is not State.UP:
            return False
        up_for = now - (self._up_since if self._up_since is not None else now)
        if up_for >= self.policy.reset_after:
            self.attempts = 0
        self._up_since = None
        self._down_since = now
        self._record(kind, detail)
        self._next_attempt = now + self.policy.delay(self.attempts, self._rand)
        self.attempts += 1
        self._set(State.RECONNECTING, now)
        return True

    def reconnect_now(self, now: float) -> bool:
        """Skip the backoff wait (also retries a refused host key: the user asked)."""
        if not self.live or self.state is State.UP or self.attempting:
            return False
        self._next_attempt = now
        return False

    def restart(self, now: float) -> bool:
        """The user asked for a fresh link: from ``up``, go to ``reconnecting`` with the
        next attempt due now (no backoff, no error recorded). Elsewhere the same as
        :meth:`reconnect_now`. True if an up link must now be dropped."""
        if self.state is not State.UP:
            return self.reconnect_now(now)
        self._up_since = None
        self._down_since = now
        self._next_attempt = now
        self._set(State.RECONNECTING, now)
        return True

    def attempt_abandoned(self, now: float) -> bool:
        """An attempt in flight was given up because the network changed under it: the
        next one is due at once, and nothing counts as a failure."""
        if not self.attempting:
            return False
        self.attempting = False
        if self.live and self.state is not State.UP:
            self._next_attempt = now
        return False

    def network_changed(self, now: float) -> bool:
        """The network changed or the machine woke: an endpoint that is retrying tries
        now instead of after its backoff (what failed may work on the new network).
        Failures that need the user stay as they are. True if the schedule moved."""
        if not self.live or self.state in (State.UP, State.FAILED) or self.attempting:
            return False
        if self._next_attempt is None or self._next_attempt <= now:
            return False
        self._next_attempt = now
        return True

    def client_waiting(self, now: float, within: float) -> bool:
        """A local client is being held for the link: bring the next attempt forward to
        no later than ``now + within``, so a long backoff after a flapping link cannot
        outlast the hold time. Held clients thus cause at most one attempt per
        ``within`` seconds. Returns True if the schedule moved (wake the driver)."""
        if not self.live or self.state is State.UP or self.attempting:
            return False
        if self._next_attempt is None:  # not retrying (changed host key): clients wait
            return False
        if self._next_attempt <= now + within:
            return False
        self._next_attempt = now + within
        return True

    def stop(self, now: float) -> bool:
        """Pause: no attempts until :meth:`start`."""
        if self.state in (State.STOPPED, State.ENDED):
            return False
        self.attempting = False
        self._next_attempt = None
        self._up_since = None
        self._down_since = None
        return self._set(State.STOPPED, now)

    def end(self, now: float, reason: str = "") -> bool:
        """Terminal: the job is gone or unreachable for too long."""
        if self.state is State.ENDED:
            return False
        self.attempting = False
        self._next_attempt = None
        if reason:
            self.last_error = reason
        return self._set(State.ENDED, now)

    def _record(self, kind: ErrorKind, detail: str) -> None:
        self.last_error_kind = kind
        self.last_error = describe_error(kind, detail)


def port_candidates(
    wanted: int,
    sticky: int | None,
    port_range: tuple[int, int],
    avoid: Collection[int] = (),
) -> Iterator[int]:
    """Local ports to try binding, in order: the sticky one, the wanted one, then the
    rest of ``port_range`` upward from the wanted port, wrapping around once.

    ``wanted`` 0 (any port) yields the sticky port, then 0: the OS picks. Ports in
    ``avoid`` (other endpoints' sticky ports, free now only because those are not bound
    yet) are skipped, except this endpoint's own sticky port.
    """
    low, high = port_range
    if sticky:
        yield sticky
    if wanted == 0:
        yield 0
        return
    if wanted != sticky and wanted not in avoid:
        yield wanted
    start = wanted + 1 if low <= wanted < high else low
    for port in itertools.chain(range(start, high + 1), range(low, min(start, high + 1))):
        if port not in (wanted, sticky) and port not in avoid:
            yield port
