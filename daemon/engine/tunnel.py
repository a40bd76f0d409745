"""One supervisor per endpoint: the SSH connection, the local listeners, the data pumps.

:class:`Tunnel` binds every forward's local port itself and keeps it bound for its whole
life, across reconnects: asyncssh's own ``forward_local_port`` closes its listener when
the connection drops. Each accepted client gets its own ``direct-tcpip`` channel on the
current connection. A client that arrives while the link is down is held for
``hold_seconds`` and served once the link is back.

The lifecycle decisions (when to retry, which state to show) are made by
:class:`~jobtunnel.daemon.core.policy.TunnelMachine`; this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import asyncssh
from asyncssh.encryption import get_encryption_algs

from .. import paths
from ..config import DEFAULT_CIPHERS
from ..core.forward import ForwardSpec
from ..core.policy import ErrorKind, ReconnectPolicy, State, TunnelMachine, port_candidates
from ..core.socks import Reply, Socks5Handshake, SocksError, reply
from .auth import KeyLoader, PassphraseCallback, auth_options
from .hostkeys import HostKeyStore, Verdict, fingerprint
from .packets import skip_cbc_countermeasure

__all__ = [
    "DEFAULT_CIPHERS",
    "ForwardStatus",
    "HostKeyChanged",
    "Tunnel",
    "TunnelOptions",
    "TunnelStatus",
    "classify",
    "event_loop_factory",
    "install_event_loop",
]

log = logging.getLogger(__name__)

# Bounded so a full port range cannot turn into tens of thousands of bind() calls.
MAX_BIND_ATTEMPTS = 1000
# A SOCKS client that has not finished its handshake by then is not going to.
SOCKS_HANDSHAKE_TIMEOUT = 30.0
# Held clients never pull connection attempts closer together than this.
HELD_RETRY_FLOOR = 1.0
# ...except when the host answers at once that nothing listens (sshd restarting) or the
# link just dropped: such an attempt costs one round trip, and the server is likely
# back within seconds, so a held client is served at most this long after it returns.
HELD_RETRY_FAST = 0.5
_FAST_RETRY_KINDS = frozenset({ErrorKind.REFUSED, ErrorKind.LOST})
READ_SIZE = 1 << 16
STREAM_LIMIT = 1 << 18
# Client-count changes are published at most this often (state changes at once).
CLIENTS_NOTIFY_DELAY = 0.1
# A channel that has not opened by then starts a liveness check of its link.
OPEN_STALL_SECONDS = 1.0


@dataclass(frozen=True)
class TunnelOptions:
    """Engine settings; field names match the config keys (``ssh.*``, ``tunnels.*``,
    ``reconnect.*``) without their section. Lists are accepted and stored as tuples."""

    identity_files: tuple[str, ...] = ()
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 2
    connect_timeout: float = 15.0
    ciphers: tuple[str, ...] = DEFAULT_CIPHERS
    use_ssh_config: bool = True
    bind_address: str = "127.0.0.1"
    hold_seconds: float = 30.0
    port_range: tuple[int, int] = (1024, 65535)
    initial_delay: float = 0.5
    max_delay: float = 30.0
    reset_after: float = 60.0
    give_up_after: float = 43200.0

    def __post_init__(self) -> None:
        for name in ("identity_files", "ciphers", "port_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.bind_address.strip():
            # '' means every interface to asyncio and asyncssh; the user must say so.
            raise ValueError("bind_address is empty; use 127.0.0.1, or '*' for all interfaces")
        if len(self.port_range) != 2 or not 1 <= self.port_range[0] <= self.port_range[1] <= 65535:
            raise ValueError("port_range must be [low, high] with 1 <= low <= high <= 65535")
        if self.keepalive_interval < 0 or self.keepalive_count_max < 1:
            raise ValueError("keepalive_interval must be >= 0 and keepalive_count_max >= 1")
        if self.connect_timeout <= 0 or self.hold_seconds < 0:
            raise ValueError("connect_timeout must be > 0 and hold_seconds >= 0")
        if not self.ciphers:
            raise ValueError("ciphers is empty")
        known = {alg.decode("ascii") for alg in get_encryption_algs()}
        unknown = [c for c in self.ciphers if c not in known]
        if unknown:
            raise ValueError(
                f"unknown cipher(s) {', '.join(unknown)}; supported: {', '.join(sorted(known))}"
            )
        self.policy()  # validates the reconnect fields

    def policy(self) -> ReconnectPolicy:
        return ReconnectPolicy(
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            reset_after=self.reset_after,
            give_up_after=self.give_up_after,
        )


@dataclass(frozen=True)
class ForwardStatus:
    spec: str
    dynamic: bool
    bind_address: str
    wanted_port: int
    local_port: int | None  # None while not listening
    remote: str  # "host:port", or "socks" for a dynamic forward
    error: str | None = None  # why the port could not be bound
    clients: int = 0  # local connections being served or held on this forward


@dataclass(frozen=True)
class TunnelStatus:
    """A snapshot; ``since`` is wall-clock epoch seconds."""

    user: str
    host: str
    port: int
    state: str
    since: float
    forwards: tuple[ForwardStatus, ...]
    bytes_sent: int  # local clients -> cluster
    bytes_received: int  # cluster -> local clients
    active_clients: int  # accepted local connections, held ones included
    held_clients: int  # of those, waiting for the link to come back
    reconnects: int
    last_error: str | None
    last_error_kind: str | None
    next_attempt_in: float | None
    host_key: str | None  # SHA256 fingerprint of the current connection's host key

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- event loop ----------------------------------------------------------------------


def event_loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop factory for ``asyncio.Runner(loop_factory=...)`` (3.11+; also
    ``asyncio.run(..., loop_factory=...)`` from 3.12).

    ``choice`` is "auto" (uvloop when installed), "uvloop" (required) or "asyncio".
    """
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"event loop {choice!r}: use auto, uvloop or asyncio")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def install_event_loop(choice: str = "auto") -> str:
    """Make ``asyncio.run`` use the chosen loop; returns "uvloop" or "asyncio"."""
    factory = event_loop_factory(choice)
    if factory is asyncio.new_event_loop:
        asyncio.set_event_loop_policy(None)
        return "asyncio"
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


# -- errors --------------------------------------------------------------------------


class HostKeyChanged(Exception):
    """The server's key differs from the one pinned for this endpoint."""

    def __init__(self, pinned: str, offered: str) -> None:
        super().__init__(f"pinned {pinned}, server now offers {offered}")
        self.pinned = pinned
        self.offered = offered


def classify(exc: BaseException) -> tuple[ErrorKind, str]:
    """Map a connect failure to a kind the user can act on, plus short detail."""
    if isinstance(exc, HostKeyChanged):
        return ErrorKind.HOST_KEY_CHANGED, str(exc)
    if isinstance(exc, asyncssh.PermissionDenied):
        return ErrorKind.AUTH, exc.reason
    if isinstance(exc, ConnectionRefusedError):
        return ErrorKind.REFUSED, ""
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT, ""
    if isinstance(exc, socket.gaierror):
        return ErrorKind.UNREACHABLE, f"name lookup failed: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EADDRNOTAVAIL,
    ):
        return ErrorKind.UNREACHABLE, exc.strerror or ""
    if isinstance(exc, asyncssh.ConnectionLost):
        return ErrorKind.LOST, exc.reason
    if isinstance(exc, asyncssh.DisconnectError):
        return ErrorKind.OTHER, exc.reason
    return ErrorKind.OTHER, f"{type(exc).__name__}: {exc}"


# -- the SSH client side -------------------------------------------------------------


class _Client(asyncssh.SSHClient):
    """Host-key TOFU against the pin store, notice of connection loss, and no CBC
    countermeasure packets on non-CBC ciphers."""

    def __init__(self, tunnel: Tunnel) -> None:
        self._tunnel = tunnel
        self._to_pin: asyncssh.SSHKey | None = None
        self.changed: HostKeyChanged | None = None
        self.host_key: str | None = None
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        skip_cbc_countermeasure(conn)

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        t = self._tunnel
        # The endpoint identity, not what asyncssh resolved (an ssh config Hostname).
        verdict, pinned = t.host_keys.check(t.user, t.host, t.port, key)
        if verdict is Verdict.CHANGED:
            assert pinned is not None
            self.changed = HostKeyChanged(fingerprint(pinned), fingerprint(key))
            return False
        if verdict is Verdict.NEW:
            self._to_pin = key
        self.host_key = fingerprint(key)
        return True

    def begin_auth(self, username: str) -> None:
        # Key exchange is complete, so the server has proved it holds the key: pin now,
        # even if authentication then fails (as OpenSSH does).
        if self._to_pin is not None:
            t = self._tunnel
            try:
                t.host_keys.pin(t.user, t.host, t.port, self._to_pin)
            except OSError as exc:
                log.error("%s: cannot save host key pin: %s", t.name, exc)
            self._to_pin = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@dataclass(eq=False)
class _Link:
    conn: asyncssh.SSHClientConnection
    client: _Client
    clients: set[asyncio.StreamWriter] = field(default_factory=set)
    check: asyncio.Task[bool] | None = None  # a liveness check in flight

    @property
    def alive(self) -> bool:
        return not self.client.lost.done()


@dataclass(eq=False)
class _Forward:
    spec: ForwardSpec
    bind_address: str
    server: asyncio.Server | None = None
    port: int | None = None
    error: str | None = None
    clients: int = 0

    def status(self) -> ForwardStatus:
        remote = (
            "socks"
            if self.spec.dynamic
            else _hostport(self.spec.remote_host, self.spec.remote_port)
        )
        return ForwardStatus(
            spec=self.spec.spec,
            dynamic=self.spec.dynamic,
            bind_address=self.bind_address,
            wanted_port=self.spec.local_port,
            local_port=self.port,
            remote=remote,
            error=self.error,
            clients=self.clients,
        )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _ChannelRefused(Exception):
    """The cluster side refused the direct-tcpip channel (nothing listening there)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


# -- the supervisor ------------------------------------------------------------------


class Tunnel:
    """Keeps ``forwards`` to one endpoint (user, host, port) up.

    Call :meth:`start` inside a running loop, :meth:`stop` to pause (ports released),
    :meth:`end` when the job is gone. Status: :meth:`status`, :meth:`subscribe`.
    """

    def __init__(
        self,
        user: str,
        host: str,
        port: int,
        forwards: Sequence[ForwardSpec],
        options: TunnelOptions | None = None,
        *,
        assigned_ports: Mapping[str, int] | None = None,
        host_keys: HostKeyStore | None = None,
        passphrase: PassphraseCallback | None = None,
        key_loader: KeyLoader | None = None,
        reserved_ports: Callable[[], Collection[int]] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.user = user
        self.host = host
        self.port = port
        self.options = options or TunnelOptions()
        self.name = f"{user}@{_hostport(host, port)}"
        self.host_keys = host_keys or HostKeyStore(paths.known_hosts_file())
        # A shared loader asks for each key's passphrase once per daemon, not per tunnel.
        self._keys = key_loader or KeyLoader(self.options.identity_files, passphrase)
        self._machine = TunnelMachine(self.options.policy(), rand)
        self._forwards = [
            _Forward(f, f.bind_address or self.options.bind_address) for f in forwards
        ]
        self._assigned: dict[str, int] = dict(assigned_ports or {})
        # Other endpoints' sticky ports: never taken when this one's must move.
        self._reserved_ports = reserved_ports or (lambda: ())
        self._link: _Link | None = None
        self._link_up = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client_tasks: set[asyncio.Task[None]] = set()
        self._subscribers: list[Callable[[TunnelStatus], None]] = []
        self._clients_notify: asyncio.TimerHandle | None = None
        self._host_key: str | None = None
        self.bytes_sent = 0
        self.bytes_received = 0
        self.active_clients = 0
        self.connect_attempts = 0
        self._held = 0  # clients waiting for the link right now

    # -- public API ------------------------------------------------------------------

    @property
    def endpoint(self) -> tuple[str, str, int]:
        return (self.user, self.host, self.port)

    @property
    def state(self) -> State:
        return self._machine.state

    @property
    def connection(self) -> asyncssh.SSHClientConnection | None:
        """The current SSH connection, if up (for diagnostics and tests)."""
        return self._link.conn if self._link and self._link.alive else None

    def assigned_ports(self) -> dict[str, int]:
        """Forward spec -> local port actually bound; persist it and pass it back as
        ``assigned_ports`` next time to keep ports sticky."""
        return dict(self._assigned)

    def status(self) -> TunnelStatus:
        m = self._machine
        now = time.monotonic()
        nxt = m.next_attempt_at
        return TunnelStatus(
            user=self.user,
            host=self.host,
            port=self.port,
            state=m.state.value,
            since=time.time() - (now - m.since) if m.since else time.time(),
            forwards=tuple(f.status() for f in self._forwards),
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            active_clients=self.active_clients,
            held_clients=self._held,
            reconnects=m.reconnects,
            last_error=m.last_error,
            last_error_kind=m.last_error_kind.value if m.last_error_kind else None,
            next_attempt_in=max(0.0, nxt - now) if nxt is not None else None,
            host_key=self._host_key if m.state is State.UP else None,
        )

    def subscribe(self, callback: Callable[[TunnelStatus], None]) -> Callable[[], None]:
        """Call ``callback(status)`` on every state, error or port change (not on byte
        counts: poll :meth:`status` for those). Returns an unsubscribe function.
        For a queue: ``tunnel.subscribe(queue.put_nowait)``."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def start(self) -> None:
        """Bind the listeners and start connecting (also resumes after :meth:`stop`)."""
        if self._machine.state not in (State.PENDING, State.STOPPED):
            return
        for fwd in self._forwards:
            await self._bind(fwd)
        self._machine.start(time.monotonic())
        log.info("%s: starting", self.name)
        self._task = asyncio.create_task(self._run(), name=f"tunnel {self.name}")
        self._notify()

    def accept_new_host_key(self) -> None:
        """The user confirmed a changed host key: drop the pin and retry at once; the
        next connection pins whatever key the server then offers."""
        if self.host_keys.forget(self.user, self.host, self.port):
            log.warning("%s: host key pin dropped at the user's request", self.name)
        self.reconnect_now()

    def reconnect_now(self) -> None:
        """Connect again at once: skips the backoff wait, retries after a refused host
        key, and replaces a link that is up (the user suspects it is stale)."""
        link = self._link
        if self._machine.restart(time.monotonic()) and link is not None:
            log.info("%s: reconnecting at the user's request", self.name)
            link.conn.abort()  # the driver sees the loss and connects again at once
        self._wake.set()

    async def probe(self, timeout: float = 5.0) -> bool:
        """Check the link now (after a sleep or a network change) instead of waiting for
        the keepalive timer: a link that does not answer is dropped, so the reconnect
        starts at once. True if the link answered."""
        conn = self.connection
        if conn is None:
            self.reconnect_now()
            return False
        return await self._ask(conn, timeout, "a probe")

    async def _ask(self, conn: asyncssh.SSHClientConnection, timeout: float, why: str) -> bool:
        """One keepalive round trip on ``conn``; no answer within ``timeout`` drops it."""
        try:
            # asyncssh 2.24 has no public ping; this is the request its keepalive sends.
            await asyncio.wait_for(conn._make_keepalive_request(), timeout)
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            log.info("%s: no answer to %s (%s); reconnecting", self.name, why, exc or "timeout")
            conn.abort()
            return False
        return True

    def _check_link(self, link: _Link) -> None:
        """A client has waited :data:`OPEN_STALL_SECONDS` for its channel. Ask the server
        now, with the keepalive's patience (interval x count), instead of waiting for the
        keepalive timer, which counts from the last packet received: a frozen server is
        then dropped about one interval sooner, while someone is waiting on it."""
        opts = self.options
        if (
            opts.keepalive_interval <= 0
            or link.check is not None
            or not link.alive
            or link is not self._link
        ):
            return
        patience = opts.keepalive_interval * opts.keepalive_count_max
        log.debug("%s: a channel is slow to open; checking the link", self.name)
        link.check = asyncio.ensure_future(
            self._ask(link.conn, patience, "a liveness check (a channel is not opening)")
        )

        def done(task: asyncio.Task[bool]) -> None:
            link.check = None

        link.check.add_done_callback(done)

    async def stop(self) -> None:
        """Pause: close the connection, the listeners and all clients."""
        if self._machine.stop(time.monotonic()):
            log.info("%s: stopped", self.name)
            await self._shutdown()
            self._notify()

    async def end(self, reason: str = "") -> None:
        """Terminal: the job is gone. Releases everything; no more retries."""
        if self._machine.end(time.monotonic(), reason):
            log.info("%s: ended%s", self.name, f" ({reason})" if reason else "")
            await self._shutdown()
            self._notify()

    async def wait_for(
        self, predicate: Callable[[TunnelStatus], bool], timeout: float
    ) -> TunnelStatus:
        """Wait until ``predicate(status)`` holds; raises TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if predicate(st):
                return st
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: still {st.state} ({st.last_error})")
            await asyncio.sleep(0.05)

    # -- supervision -----------------------------------------------------------------

    def _clients_changed(self) -> None:
        """Client counts are news too, but a burst of short connections (a browser
        loading a page) is one event: a snapshot per client would cost more than
        serving it."""
        if self._clients_notify is None and self._subscribers:
            self._clients_notify = asyncio.get_running_loop().call_later(
                CLIENTS_NOTIFY_DELAY, self._notify
            )

    def _notify(self) -> None:
        if self._clients_notify is not None:
            self._clients_notify.cancel()
            self._clients_notify = None
        if not self._subscribers:
            return
        snapshot = self.status()
        for callback in list(self._subscribers):
            try:
                callback(snapshot)
            except Exception:
                log.exception("%s: status subscriber failed", self.name)

    async def _run(self) -> None:
        m = self._machine
        while m.live:
            now = time.monotonic()
            if not m.due(now):
                if m.state is State.ENDED:  # gave up
                    log.warning("%s: %s", self.name, m.last_error)
                    await self._shutdown(from_task=True)
                    self._notify()
                    return
                deadlines = [t for t in (m.next_attempt_at, m.give_up_at) if t is not None]
                timeout = max(0.0, min(deadlines) - now) if deadlines else None
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            m.attempt_started(now)
            self.connect_attempts += 1
            client_box: list[_Client] = []
            try:
                conn = await self._connect(client_box)
            except Exception as exc:
                client = client_box[0] if client_box else None
                changed = client.changed if client is not None else None
                kind, detail = classify(changed or exc)
                m.attempt_failed(time.monotonic(), kind, detail)
                self._pull_retry_forward()
                nxt = m.next_attempt_at
                log.warning(
                    "%s: connect failed: %s%s",
                    self.name,
                    m.last_error,
                    f"; retry in {nxt - time.monotonic():.1f} s" if nxt is not None else "",
                )
                self._notify()
                continue
            link = _Link(conn, client_box[0])
            self._link = link
            self._host_key = link.client.host_key
            m.connected(time.monotonic())
            self._link_up.set()
            log.info("%s: up (host key %s)", self.name, self._host_key)
            self._notify()
            try:
                exc_lost = await link.client.lost
            finally:
                self._link_up.clear()
                self._link = None
                self._drop_link(link)
            kind, detail = classify(exc_lost) if exc_lost else (ErrorKind.LOST, "")
            if kind is ErrorKind.OTHER:
                kind = ErrorKind.LOST
            if m.connection_lost(time.monotonic(), kind, detail):
                log.warning("%s: connection lost: %s", self.name, m.last_error)
            self._notify()

    async def _connect(self, client_box: list[_Client]) -> asyncssh.SSHClientConnection:
        opts = self.options
        keys = await self._keys.load(self.user, self.host, self.port, opts.use_ssh_config)

        def factory() -> _Client:
            client = _Client(self)
            client_box.append(client)
            return client

        log.debug("%s: connecting", self.name)
        conn = await asyncssh.connect(
            self.host,
            self.port,
            username=self.user,
            # Empty trusted lists, so every key goes through validate_host_public_key.
            # Never None: that would switch host-key checking off.
            known_hosts=([], [], []),
            client_factory=factory,
            keepalive_interval=opts.keepalive_interval,
            keepalive_count_max=opts.keepalive_count_max,
            connect_timeout=opts.connect_timeout,
            encryption_algs=list(opts.ciphers),
            **auth_options(keys, opts.use_ssh_config),
        )
        return conn

    def _drop_link(self, link: _Link) -> None:
        # Reset clients still on the dead link: a clean EOF would pass off a cut
        # transfer as complete.
        for writer in list(link.clients):
            writer.transport.abort()
        link.clients.clear()
        if link.check is not None:
            link.check.cancel()
        link.conn.abort()

    async def _shutdown(self, from_task: bool = False) -> None:
        task, self._task = self._task, None
        if task is not None and not from_task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        link, self._link = self._link, None
        self._link_up.clear()
        if link is not None:
            self._drop_link(link)
        servers = [f.server for f in self._forwards if f.server is not None]
        for fwd in self._forwards:
            if fwd.server is not None:
                fwd.server.close()
                fwd.server = None
                fwd.port = None
        for t in list(self._client_tasks):
            t.cancel()
        if self._client_tasks:
            await asyncio.wait(list(self._client_tasks), timeout=5)
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    # -- listeners -------------------------------------------------------------------

    async def _bind(self, fwd: _Forward) -> None:
        spec = fwd.spec
        # '*' is OpenSSH's spelling of every interface; asyncio wants None for that.
        host: str | None = None if fwd.bind_address == "*" else fwd.bind_address
        sticky = self._assigned.get(spec.spec)
        last: OSError | None = None
        loop = asyncio.get_running_loop()
        for n, candidate in enumerate(
            port_candidates(
                spec.local_port, sticky, self.options.port_range, self._reserved_ports()
            )
        ):
            if n >= MAX_BIND_ATTEMPTS:
                break
            try:
                server = await loop.create_server(
                    functools.partial(_client_protocol, functools.partial(self._on_client, fwd)),
                    host=host,
                    port=candidate,
                )
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    last = exc
                    break
                last = exc
                continue
            port = int(server.sockets[0].getsockname()[1])
            fwd.server, fwd.port, fwd.error = server, port, None
            self._assigned[spec.spec] = port
            wanted = sticky or spec.local_port
            moved = f" (port {wanted} was taken)" if wanted and wanted != port else ""
            target = "SOCKS" if spec.dynamic else _hostport(spec.remote_host, spec.remote_port)
            log.info(
                "%s: forward %s listening on %s -> %s%s",
                self.name,
                spec.spec,
                _hostport(fwd.bind_address, port),
                target,
                moved,
            )
            return
        fwd.error = (
            f"cannot listen on {fwd.bind_address}: {last.strerror if last else 'no free port'}"
        )
        log.error("%s: forward %s: %s", self.name, spec.spec, fwd.error)

    # -- clients ---------------------------------------------------------------------

    async def _on_client(
        self, fwd: _Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._client_tasks.add(task)
        self.active_clients += 1
        fwd.clients += 1
        self._clients_changed()
        try:
            await self._serve(fwd, reader, writer)
        except asyncio.CancelledError:
            # Only _shutdown cancels these. Not re-raised: on 3.11 the done-callback
            # start_server attaches calls task.exception(), which raises (and gets
            # logged as an error) for a cancelled task.
            writer.transport.abort()
        except (OSError, asyncssh.Error) as exc:
            log.debug("%s: client ended: %s", self.name, exc)
        except Exception:
            log.exception("%s: unexpected error serving a client", self.name)
        finally:
            self.active_clients -= 1
            fwd.clients -= 1
            self._client_tasks.discard(task)
            self._clients_changed()
            if not writer.is_closing():
                writer.close()

    async def _serve(
        self, fwd: _Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        socks: Socks5Handshake | None = None
        if fwd.spec.dynamic:
            socks = await self._socks_handshake(reader, writer)
            if socks is None or socks.request is None:
                return
            target = (socks.request.host, socks.request.port)
        else:
            target = (fwd.spec.remote_host, fwd.spec.remote_port)
        try:
            opened = await self._open_channel(target, (str(peer[0]), int(peer[1])), writer)
        except _ChannelRefused as exc:
            log.info("%s: %s refused by the cluster: %s", self.name, _hostport(*target), exc)
            if socks is not None:
                writer.write(reply(Reply.CONNECTION_REFUSED))
            return
        if opened is None:
            if socks is not None:
                writer.write(reply(Reply.NETWORK_UNREACHABLE))
            return
        link, chan, session = opened
        link.clients.add(writer)
        try:
            if socks is not None:
                writer.write(reply(Reply.SUCCEEDED))
                if socks.leftover:
                    chan.write(socks.leftover)
                    self.bytes_sent += len(socks.leftover)
            session.start()  # only now may cluster data reach the client
            await self._pump(reader, writer, chan, session)
        finally:
            link.clients.discard(writer)
            chan.close()

    async def _socks_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Socks5Handshake | None:
        hs = Socks5Handshake()
        try:
            async with asyncio.timeout(SOCKS_HANDSHAKE_TIMEOUT):
                while hs.request is None:
                    data = await reader.read(512)
                    if not data:
                        return None
                    out = hs.feed(data)
                    if out:
                        writer.write(out)
        except SocksError as exc:
            log.info("%s: SOCKS client refused: %s", self.name, exc)
            if exc.response:
                writer.write(exc.response)
            return None
        except TimeoutError:
            return None
        return hs

    async def _open_channel(
        self,
        target: tuple[str, int],
        orig: tuple[str, int],
        writer: asyncio.StreamWriter,
    ) -> tuple[_Link, asyncssh.SSHTCPChannel[bytes], _ChannelSession] | None:
        """A channel on the current (or next, within the hold time) connection; None
        when the link stayed down for the hold time or the client went away."""
        deadline = time.monotonic() + self.options.hold_seconds
        while True:
            link = self._link
            if link is None or not link.alive:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._machine.live:
                    log.info(
                        "%s: link down for the hold time; closing client %s",
                        self.name,
                        _hostport(*orig),
                    )
                    return None
                self._held += 1
                try:
                    self._pull_retry_forward()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._link_up.wait(), remaining)
                finally:
                    self._held -= 1
                continue
            stalled = asyncio.get_running_loop().call_later(
                OPEN_STALL_SECONDS, self._check_link, link
            )
            try:
                chan, session = await self._open_guarded(
                    link, target, orig, functools.partial(_ChannelSession, self, writer)
                )
            except asyncssh.ChannelOpenError as exc:
                if link.alive and self._link is link:
                    raise _ChannelRefused(exc.reason, exc.code) from None
                continue  # the link died under us: wait for the next one
            finally:
                stalled.cancel()
            assert isinstance(session, _ChannelSession)
            if writer.is_closing():
                # The client left while the channel was opening (asyncssh #823 leaks the
                # channel in that case unless someone closes it).
                log.debug("%s: client left while its channel opened; closed it", self.name)
                chan.close()
                return None
            return link, chan, session

    def _pull_retry_forward(self) -> None:
        """While clients are held, keep the next attempt within a sixth of the hold time
        (5 s by default: several tries before it expires, yet no hammering); the floor
        keeps a short hold from driving attempts in a tight loop. After a refused
        connection or a dropped link, within :data:`HELD_RETRY_FAST` instead."""
        if not self._held:
            return
        if self._machine.last_error_kind in _FAST_RETRY_KINDS:
            within = HELD_RETRY_FAST
        else:
            within = max(HELD_RETRY_FLOOR, self.options.hold_seconds / 6)
        if self._machine.client_waiting(time.monotonic(), within):
            self._wake.set()

    @staticmethod
    async def _open_guarded(
        link: _Link,
        target: tuple[str, int],
        orig: tuple[str, int],
        session_factory: Callable[[], asyncssh.SSHTCPSession[bytes]] = asyncssh.SSHTCPSession,
    ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
        # Shielded: if this client task is cancelled mid-open, the open still completes
        # and the done-callback closes the channel instead of leaking it.
        opening: asyncio.Task[tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]]
        opening = asyncio.ensure_future(
            link.conn.create_connection(
                session_factory,
                target[0],
                target[1],
                orig[0],
                orig[1],
                encoding=None,
            )
        )
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_if_opened)
            raise

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        chan: asyncssh.SSHTCPChannel[bytes],
        session: _ChannelSession,
    ) -> None:
        """Both directions run in protocol callbacks once the channel is open: client data
        goes to the channel from the client protocol's ``data_received``, cluster data to
        the client from the session's. Returns when the channel is closed, or when the
        client side failed (its connection is then reset)."""
        proto = writer.transport.get_protocol()
        assert isinstance(proto, _ClientProtocol)
        client_done = proto.direct(self, reader, chan, session)
        either: list[asyncio.Future[Any]] = [client_done, session.closed]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if client_done.done() and client_done.result() is None:
            await session.closed  # half-closed: the cluster side finishes
        exc = client_done.result() if client_done.done() else None
        if exc is None and session.closed.done():
            exc = session.closed.result()
        if exc is not None:
            writer.transport.abort()
            log.debug("%s: stream error: %s", self.name, exc)


def _client_protocol(
    connected: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> _ClientProtocol:
    """What ``asyncio.start_server`` builds per client, with our protocol class."""
    loop = asyncio.get_running_loop()
    return _ClientProtocol(asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop), connected, loop)


class _ClientProtocol(asyncio.StreamReaderProtocol):
    """A local client: a stream (for the SOCKS handshake, and while it is held) until
    :meth:`direct`; from then on its data is written to the channel from
    ``data_received`` itself (no reader task, no stream buffer)."""

    _chan: asyncssh.SSHTCPChannel[bytes] | None = None
    _tunnel: Tunnel | None = None
    _done: asyncio.Future[Exception | None] | None = None

    def direct(
        self,
        tunnel: Tunnel,
        reader: asyncio.StreamReader,
        chan: asyncssh.SSHTCPChannel[bytes],
        session: _ChannelSession,
    ) -> asyncio.Future[Exception | None]:
        """Switch to direct forwarding. The future resolves to None once the client's
        EOF is passed on, or to the error that ended its connection."""
        done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self._done, self._tunnel, self._chan = done, tunnel, chan
        # What the stream holds that nobody read (sent while the client was held).
        # StreamReader has no public way to take its buffer without awaiting.
        buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
        if buffer:
            pending = bytes(buffer)
            buffer.clear()
            self.data_received(pending)
        if reader.at_eof():
            self.eof_received()
        elif session.writable.is_set():
            # The stream may have paused reading while it held data.
            with contextlib.suppress(RuntimeError, OSError):
                session.transport.resume_reading()
        return done

    def data_received(self, data: bytes) -> None:
        chan = self._chan
        if chan is None:
            super().data_received(data)
            return
        try:
            chan.write(data)
        except OSError:  # BrokenPipeError: the channel is closing; the pump ends it
            return
        assert self._tunnel is not None
        self._tunnel.bytes_sent += len(data)

    def eof_received(self) -> bool:
        chan = self._chan
        if chan is None:
            return bool(super().eof_received())
        with contextlib.suppress(OSError):
            chan.write_eof()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)
        return True  # keep the transport open: the answer may still be coming

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._done is not None and not self._done.done():
            self._done.set_result(exc or ConnectionResetError("the client went away"))


class _ChannelSession(asyncssh.SSHTCPSession[bytes]):
    """The cluster side of one client: channel data is written to the client's transport
    from ``data_received`` itself (no reader task, no extra buffer), with flow control
    both ways: a full client pauses the channel, a full channel pauses the upstream.
    Data is held back until :meth:`start` (after a SOCKS reply, say)."""

    def __init__(self, tunnel: Tunnel, writer: asyncio.StreamWriter) -> None:
        self._tunnel = tunnel
        self._writer = writer
        # A TCP transport: it reads too (typed as the write half on StreamWriter).
        self.transport = cast(asyncio.Transport, writer.transport)
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._early: list[bytes] | None = []  # before start()
        self._early_eof = False
        self._paused = False
        self._drainer: asyncio.Task[None] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan

    def start(self) -> None:
        early, self._early = self._early, None
        for data in early or ():
            self.data_received(data, None)
        if self._early_eof:
            self.eof_received()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._early is not None:
            self._early.append(data)
            return
        # Nothing may escape a session callback: asyncssh would drop the whole link.
        try:
            self.transport.write(data)
        except (ConnectionError, OSError, RuntimeError):
            self.transport.abort()
            return
        self._tunnel.bytes_received += len(data)
        if (
            not self._paused
            and self._chan is not None
            and self.transport.get_write_buffer_size() > STREAM_LIMIT
        ):
            self._paused = True
            self._chan.pause_reading()
            self._drainer = asyncio.ensure_future(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            return  # the client is gone; the pump closes the channel
        self._paused = False
        if self._chan is not None:
            self._chan.resume_reading()

    def eof_received(self) -> bool:
        if self._early is not None:
            self._early_eof = True
        elif self._writer.can_write_eof() and not self._writer.is_closing():
            try:
                self._writer.write_eof()
            except (ConnectionError, OSError, RuntimeError):
                self.transport.abort()  # the client is gone (ENOTCONN on shutdown)
        return True  # half-close: the client may still be sending

    def pause_writing(self) -> None:
        # The channel's send buffer is full: stop reading from the client.
        self.writable.clear()
        with contextlib.suppress(RuntimeError, OSError):
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable.set()
        with contextlib.suppress(RuntimeError, OSError):
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if self._drainer is not None:
            self._drainer.cancel()
        if not self.closed.done():
            self.closed.set_result(exc)


def _close_if_opened(
    task: asyncio.Future[tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]],
) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    task.result()[0].close()
