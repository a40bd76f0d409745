"""One supervisor per endpoint: keeps the SSH link up and serves the local clients.

:class:`Tunnel` binds every forward's local port itself (:mod:`.listen`) and keeps it
bound for its whole life, across reconnects. Each accepted client gets its own
``direct-tcpip`` channel on the current connection (:mod:`.pump`). A client that arrives
while the link is down is held for ``hold_seconds`` (:mod:`.hold`) and served once the
link is back.

The lifecycle decisions (when to retry, which state to show) are made by
:class:`~jobtunnel.daemon.core.policy.TunnelMachine`; this module only does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import asyncssh

from .. import paths
from ..core.address import hostport
from ..core.book import PortLease
from ..core.forward import ForwardSpec
from ..core.netcheck import LinkCheck, Verdict, link_verdict
from ..core.policy import ErrorKind, State, TunnelMachine
from ..core.socks import Reply, Socks5Handshake, reply
from ..core.throttle import Repeats
from .auth import KeyLoader, PassphraseCallback
from .errors import ChannelRefused, HostKeyChanged, classify
from .hold import HeldClients
from .hostkeys import HostKeyStore
from .link import Link, open_link, path_now
from .listen import Forward, Listeners, OwnPorts
from .options import TunnelOptions, TunnelStatus
from .pump import ChannelSession, Traffic, open_guarded, pump, socks_handshake
from .services import Services

__all__ = ["CHECK_SECONDS", "CLIENTS_NOTIFY_DELAY", "OPEN_STALL_SECONDS", "Tunnel"]

log = logging.getLogger(__name__)

# Client-count changes are published at most this often (state changes at once).
CLIENTS_NOTIFY_DELAY = 0.1
# A channel that has not opened by then starts a liveness check of its link.
OPEN_STALL_SECONDS = 1.0
# The same connect error is logged again at most this often (seconds).
RETRY_LOG_INTERVAL = 600.0
# After a network change or a wake, a link has this long to answer a keepalive.
CHECK_SECONDS = 1.5
# A connection attempt older than this when the network changes was made on the old
# network (its SYN may be lost in a backoff of its own): it is replaced at once.
STALE_ATTEMPT_SECONDS = 0.5


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
        ports: PortLease | None = None,
        assigned_ports: Mapping[str, int] | None = None,
        host_keys: HostKeyStore | None = None,
        passphrase: PassphraseCallback | None = None,
        key_loader: KeyLoader | None = None,
        rand: Callable[[], float] = random.random,
        chosen_ports: Iterable[int] = (),
    ) -> None:
        self.user = user
        self.host = host
        self.port = port
        self.options = options or TunnelOptions()
        self.name = f"{user}@{hostport(host, port)}"
        self.host_keys = host_keys or HostKeyStore(paths.known_hosts_file())
        # A shared loader asks for each key's passphrase once per daemon, not per tunnel.
        self._keys = key_loader or KeyLoader(self.options.identity_files, passphrase)
        self._machine = TunnelMachine(self.options.policy(), rand)
        # ``ports``: the daemon's book lends the ports; alone, the tunnel keeps its own,
        # starting from ``assigned_ports``.
        self._listeners = Listeners(
            self.name,
            forwards,
            self.options.bind_address,
            ports or OwnPorts(self.options.port_range, assigned_ports),
        )
        self._link: Link | None = None
        # What the cluster serves, and the forwards added for it (``chosen_ports``: the
        # cluster ports the user asked to forward).
        self._services = Services(
            self.name, self.options, self._listeners, self._on_client, chosen_ports
        )
        self._discovery: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._held = HeldClients(self._machine, self.options.hold_seconds, self._wake)
        self._task: asyncio.Task[None] | None = None
        self._client_tasks: set[asyncio.Task[None]] = set()
        self._subscribers: list[Callable[[TunnelStatus], None]] = []
        self._clients_notify: asyncio.TimerHandle | None = None
        self._host_key: str | None = None
        self._refused_key: str | None = None  # fingerprint of the last refused host key
        self._trust: str | None = None  # the refused key the user accepted, for the next try
        self._traffic = Traffic()
        # A cluster that is gone fails every retry for hours: one line per new error.
        self._failures = Repeats(RETRY_LOG_INTERVAL)
        self.active_clients = 0
        self.connect_attempts = 0
        self._attempt: asyncio.Future[Link] | None = None
        self._attempt_started = 0.0
        self._checked: LinkCheck | None = None

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

    @property
    def peer(self) -> tuple[str, int] | None:
        """The address the link's first hop is connected to (no lookup), if up."""
        link = self._link
        if link is None or not link.alive:
            return None
        peer = (link.bastion or link.conn).get_extra_info("peername")
        return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None

    @property
    def bytes_sent(self) -> int:
        """Bytes from local clients to the cluster."""
        return self._traffic.sent

    @property
    def bytes_received(self) -> int:
        """Bytes from the cluster to local clients."""
        return self._traffic.received

    def assigned_ports(self) -> dict[str, int]:
        """Forward spec -> local port bound last (the lease was told already)."""
        return self._listeners.assigned()

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
            forwards=self._services.forwards(),
            bytes_sent=self._traffic.sent,
            bytes_received=self._traffic.received,
            active_clients=self.active_clients,
            held_clients=self._held.count,
            reconnects=m.reconnects,
            last_error=m.last_error,
            last_error_kind=m.last_error_kind.value if m.last_error_kind else None,
            next_attempt_in=max(0.0, nxt - now) if nxt is not None else None,
            host_key=self._host_key if m.state is State.UP else None,
            refused_key=self._refused_key,
            services=self._services.status(),
            checked=self._checked,
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
        await self._listeners.bind(self._on_client)
        self._machine.start(time.monotonic())
        log.info("%s: starting", self.name)
        self._task = asyncio.create_task(self._run(), name=f"tunnel {self.name}")
        self._notify()

    def accept_new_host_key(self, fingerprint: str | None = None) -> None:
        """The user trusts the key with ``fingerprint`` (default: the one last refused)
        and the tunnel retries at once. The next connection accepts the offered key only
        if it has that fingerprint, and then pins it; any other key is refused again.
        Raises ValueError when no fingerprint is given and no key was refused."""
        fingerprint = fingerprint or self._refused_key
        if fingerprint is None:
            raise ValueError("no refused key to trust")
        self._trust = fingerprint
        log.warning("%s: host key %s trusted at the user's request", self.name, fingerprint)
        self.reconnect_now()

    def reconnect_now(self) -> None:
        """Connect again at once: skips the backoff wait, retries after a refused host
        key, and replaces a link that is up (the user suspects it is stale)."""
        link = self._link
        if self._machine.restart(time.monotonic()) and link is not None:
            log.info("%s: reconnecting at the user's request", self.name)
            link.conn.abort()  # the driver sees the loss and connects again at once
        self._wake.set()

    def look_now(self) -> None:
        """Look at what the cluster serves now rather than at the next interval."""
        self._services.look_now()

    async def look(self, timeout: float = 10.0) -> bool:
        """Look at what the cluster serves now and wait until that is done."""
        return await self._services.look(timeout)

    async def forward_port(self, port: int) -> None:
        """Forward the cluster's ``port`` (a service discovery offered, or any port)."""
        await self._services.forward(port)
        self._notify()

    async def check(self, reason: str, timeout: float = CHECK_SECONDS) -> str:
        """The network changed or the machine woke (``reason``): find out at once
        whether the link still works. A link that cannot (its address is gone, its
        route leaves from another address now, or no answer within ``timeout``) is
        replaced now, skipping the backoff; one that answers is left alone, with its
        clients, and so is one with no route for now (see :func:`link_verdict`). A
        retrying endpoint retries now. Returns the outcome, which status shows until
        the next check."""
        now = time.monotonic()
        link = self._link
        if link is None or not link.alive:
            outcome = self._retry_now(now)
        else:
            verdict, why = link_verdict(path_now(link.bastion or link.conn))
            if verdict is Verdict.ASK:
                started = time.monotonic()
                if await self._ask(link.conn, timeout, f"a check ({reason})", restart=True):
                    outcome = f"answered in {(time.monotonic() - started) * 1000:.0f} ms"
                else:
                    outcome = f"no answer within {timeout:g} s; reconnecting"
            elif verdict is Verdict.DROP:
                log.info("%s: %s (%s); reconnecting", self.name, why, reason)
                self._drop_now(link)
                outcome = f"{why}; reconnecting"
            else:
                log.info("%s: %s (%s)", self.name, why, reason)
                outcome = why
        self._checked = LinkCheck(reason, time.time(), outcome)
        self._notify()
        return outcome

    def _retry_now(self, now: float) -> str:
        m = self._machine
        attempt = self._attempt
        if attempt is not None and now - self._attempt_started > STALE_ATTEMPT_SECONDS:
            log.info("%s: the network changed under a connection attempt; trying anew", self.name)
            attempt.cancel()
            return "an attempt on the old network was replaced"
        if m.network_changed(now):
            log.info("%s: retrying now", self.name)
            self._wake.set()
            return "retrying now"
        if attempt is not None:
            return "connecting"
        return f"not retried ({m.state.value})"

    def _drop_now(self, link: Link) -> None:
        """Replace an up link at once: the next attempt is due now, with no backoff."""
        if link is self._link and self._machine.restart(time.monotonic()):
            link.conn.abort()
        self._wake.set()

    async def _ask(
        self,
        conn: asyncssh.SSHClientConnection,
        timeout: float,
        why: str,
        restart: bool = False,
    ) -> bool:
        """One keepalive round trip on ``conn``; no answer within ``timeout`` drops it."""
        try:
            # asyncssh 2.24 has no public ping; this is the request its keepalive sends.
            await asyncio.wait_for(conn._make_keepalive_request(), timeout)
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            log.info("%s: no answer to %s (%s); reconnecting", self.name, why, exc or "timeout")
            link = self._link
            if restart and link is not None and link.conn is conn:
                self._drop_now(link)  # no backoff: the network just changed
            else:
                conn.abort()
            return False
        return True

    def _check_link(self, link: Link) -> None:
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
            try:
                keys = await self._keys.load(
                    self.user, self.host, self.port, self.options.use_ssh_config
                )
                self._attempt_started = time.monotonic()
                self._attempt = asyncio.ensure_future(
                    open_link(
                        self.name, self.endpoint, self.options, keys, self.host_keys, self._trust
                    )
                )
                link = await self._attempt
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # stop() or end(): not a replaced attempt
                m.attempt_abandoned(time.monotonic())
                continue
            except Exception as exc:
                if isinstance(exc, HostKeyChanged):
                    self._refused_key = exc.offered
                    self._trust = None  # that trust was for another key
                kind, detail = classify(exc)
                m.attempt_failed(time.monotonic(), kind, detail)
                self._held.pull_retry_forward()
                nxt = m.next_attempt_at
                retry = f"; retry in {nxt - time.monotonic():.1f} s" if nxt is not None else ""
                held = self._failures.check(time.monotonic(), m.last_error or "")
                if held is None:
                    log.debug("%s: connect failed again: %s%s", self.name, m.last_error, retry)
                else:
                    log.warning(
                        "%s: connect failed: %s%s%s",
                        self.name,
                        m.last_error,
                        retry,
                        f" ({held} more attempts failed alike since the last line)" if held else "",
                    )
                self._notify()
                continue
            finally:
                self._attempt = None
            self._link = link
            self._host_key = link.client.host_key
            self._refused_key = self._trust = None
            m.connected(time.monotonic())
            self._failures.reset()
            self._held.link_up.set()
            log.info("%s: up (host key %s)", self.name, self._host_key)
            self._notify()
            self._discovery = asyncio.create_task(
                self._services.run(link.conn, self._notify), name=f"discovery {self.name}"
            )
            try:
                exc_lost = await link.client.lost
            finally:
                await self._stop_discovery()
                self._held.link_up.clear()
                self._link = None
                link.drop()
            kind, detail = classify(exc_lost) if exc_lost else (ErrorKind.LOST, "")
            if kind is ErrorKind.OTHER:
                kind = ErrorKind.LOST
            if m.connection_lost(time.monotonic(), kind, detail):
                log.warning("%s: connection lost: %s", self.name, m.last_error)
            self._notify()

    async def _stop_discovery(self) -> None:
        task, self._discovery = self._discovery, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _shutdown(self, from_task: bool = False) -> None:
        await self._stop_discovery()
        task, self._task = self._task, None
        if task is not None and not from_task:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        link, self._link = self._link, None
        self._held.link_up.clear()
        if link is not None:
            link.drop()
        self._listeners.close()
        for t in list(self._client_tasks):
            t.cancel()
        if self._client_tasks:
            await asyncio.wait(list(self._client_tasks), timeout=5)
        await self._listeners.wait_closed()

    # -- clients ---------------------------------------------------------------------

    async def _on_client(
        self, fwd: Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
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
        self, fwd: Forward, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        socks: Socks5Handshake | None = None
        if fwd.spec.dynamic:
            socks = await socks_handshake(self.name, reader, writer)
            if socks is None or socks.request is None:
                return
            target = (socks.request.host, socks.request.port)
        else:
            target = (fwd.spec.remote_host, fwd.spec.remote_port)
        try:
            opened = await self._open_channel(target, (str(peer[0]), int(peer[1])), writer)
        except ChannelRefused as exc:
            log.info("%s: %s refused by the cluster: %s", self.name, hostport(*target), exc)
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
                    self._traffic.sent += len(socks.leftover)
            session.start()  # only now may cluster data reach the client
            failure = await pump(self._traffic, reader, writer, chan, session)
            if failure is not None:
                log.debug("%s: stream error: %s", self.name, failure)
        finally:
            link.clients.discard(writer)
            chan.close()

    async def _open_channel(
        self,
        target: tuple[str, int],
        orig: tuple[str, int],
        writer: asyncio.StreamWriter,
    ) -> tuple[Link, asyncssh.SSHTCPChannel[bytes], ChannelSession] | None:
        """A channel on the current (or next, within the hold time) connection; None
        when the link stayed down for the hold time or the client went away."""
        deadline = self._held.deadline()
        while True:
            link = self._link
            if link is None or not link.alive:
                if not await self._held.wait(deadline):
                    log.info(
                        "%s: link down for the hold time; closing client %s",
                        self.name,
                        hostport(*orig),
                    )
                    return None
                continue
            stalled = asyncio.get_running_loop().call_later(
                OPEN_STALL_SECONDS, self._check_link, link
            )
            try:
                chan, session = await open_guarded(
                    link.conn,
                    target,
                    orig,
                    functools.partial(ChannelSession, self._traffic, writer),
                )
            except asyncssh.ChannelOpenError as exc:
                if link.alive and self._link is link:
                    raise ChannelRefused(exc.reason, exc.code) from None
                continue  # the link died under us: wait for the next one
            finally:
                stalled.cancel()
            assert isinstance(session, ChannelSession)
            if writer.is_closing():
                # The client left while the channel was opening (asyncssh #823 leaks the
                # channel in that case unless someone closes it).
                log.debug("%s: client left while its channel opened; closed it", self.name)
                chan.close()
                return None
            return link, chan, session
