"""A tunnel's view of what its cluster serves: discovery on the tunnel's own connection
when the link comes up and every ``discover_interval`` seconds (and at once on request),
the forwards it adds for automatic kinds and for ports the user chose, whether each
forward's service speaks TLS (asked once per link, for the scheme to open it with), and
what status shows of them. The decisions are :func:`..core.discovery.plan`'s."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable

import asyncssh

from ..core import discovery, tls
from ..core.discovery import Found
from ..core.forward import parse_forward
from .discover import PROBE_CHANNELS, ClusterFiles, discover, probe, speaks_tls
from .listen import ClientHandler, Forward, Listeners
from .options import ForwardStatus, ServiceStatus, TunnelOptions

__all__ = ["Services"]

log = logging.getLogger(__name__)

# Remote hosts that name the cluster itself: a configured forward there can be checked
# against the cluster's listening ports.
_SELF = ("localhost", "127.0.0.1", "::1")


class Services:
    """Found services, the ports the user chose, and the forwards added for them."""

    def __init__(
        self,
        name: str,
        options: TunnelOptions,
        listeners: Listeners,
        on_client: ClientHandler,
        chosen: Iterable[int] = (),
    ) -> None:
        self._name = name
        self._options = options
        self._listeners = listeners
        self._on_client = on_client
        self.found: dict[int, Found] = {}
        self.gone: set[int] = set()
        self.chosen: set[int] = set(chosen)
        self._looked = False  # a socket table has been read: "no service" can be said
        # (remote host, port) -> speaks TLS, as the last link's probe found it
        self.tls: dict[tuple[str, int], bool] = {}
        self._wake = asyncio.Event()
        self._looked_now = asyncio.Event()  # set after each look
        # Looks asked for, and how many of those asks the last finished look answers:
        # a look already under way when asked may have read the cluster too early.
        self._asked = 0
        self._answered = 0

    # -- what the user asks --------------------------------------------------------------

    def look_now(self) -> None:
        self._wake.set()

    async def look(self, timeout: float) -> bool:
        """Look now and wait for that look to end; False if it did not within ``timeout``
        (the link is down, or discovery is off)."""
        self._asked += 1
        mine = self._asked
        self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                while self._answered < mine:
                    self._looked_now.clear()
                    await self._looked_now.wait()
        except TimeoutError:
            return False
        return True

    async def forward(self, port: int) -> None:
        """Forward the cluster's ``port`` now (found or not yet), and at every start."""
        self.chosen.add(port)
        await self._add(port)

    # -- the loop ------------------------------------------------------------------------

    async def run(self, conn: asyncssh.SSHClientConnection, changed: Callable[[], None]) -> None:
        """Look at the cluster until cancelled (the link went down or the tunnel stops)."""
        interval = self._options.discover_interval
        for port in sorted(self.chosen):
            await self._add(port)
        # Asked again on each link: the service may have been restarted another way.
        self.tls.clear()
        if await self._ask_tls(conn):
            changed()
        files = ClusterFiles(conn)
        try:
            await self._loop(conn, files, interval, changed)
        finally:
            files.close()

    async def _loop(
        self,
        conn: asyncssh.SSHClientConnection,
        files: ClusterFiles,
        interval: float,
        changed: Callable[[], None],
    ) -> None:
        while interval > 0:
            self._wake.clear()  # an ask from now on gets a look of its own
            answering = self._asked
            try:
                found, sockets = await discover(files, self.found)
            except (asyncssh.Error, OSError, TimeoutError) as exc:
                log.info("%s: cannot look at the cluster's services: %s", self._name, exc)
            else:
                if sockets.odd_lines or sockets.truncated:
                    log.info(
                        "%s: the cluster's socket table: %d lines not read%s",
                        self._name,
                        sockets.odd_lines,
                        f", only {discovery.MAX_SOCKETS} ports kept" if sockets.truncated else "",
                    )
                # Shown at once; what each new port is comes after (a probe can take seconds).
                if await self._update(found):
                    changed()
                try:
                    learnt = await probe(conn, self.found)
                except (asyncssh.Error, OSError) as exc:
                    log.debug("%s: probing the new ports failed: %s", self._name, exc)
                    learnt = {}
                if learnt and await self._update(self.found | learnt):
                    changed()
                if await self._ask_tls(conn):
                    changed()
            self._answered = answering
            self._looked_now.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def _ask_tls(self, conn: asyncssh.SSHClientConnection) -> bool:
        """Ask each forward's service not yet asked on this link whether it speaks TLS
        (a service that is not listening yet is asked again after the next look)."""
        todo = {
            target
            for f in self._listeners.forwards
            if (target := _target(f)) is not None and target not in self.tls
        }
        gate = asyncio.Semaphore(PROBE_CHANNELS)

        async def one(host: str, port: int) -> None:
            async with gate:
                answer = await speaks_tls(conn, host, port)
            if answer is not None:
                self.tls[(host, port)] = answer
                log.debug("%s: %s:%d %s TLS", self._name, host, port, "speaks" if answer else "no")

        before = len(self.tls)
        await asyncio.gather(*(one(h, p) for h, p in sorted(todo)))
        return len(self.tls) != before

    async def _update(self, found: dict[int, Found]) -> bool:
        new = sorted(set(found) - set(self.found))
        gone = set(self.found) - set(found)
        before = (dict(self.found), set(self.gone))
        self.gone = (self.gone | gone) - set(found)
        self.found = found
        self._looked = True
        for port in new:
            f = found[port]
            log.info("%s: the cluster serves port %d (%s)", self._name, port, f.title or f.kind)
        todo = discovery.plan(
            found, self._configured(), self.chosen, set(self._options.auto_forward)
        )
        added = False
        for port in todo.forward:
            added |= await self._add(port)
        return added or before != (self.found, self.gone)

    async def _add(self, port: int) -> bool:
        spec = parse_forward(str(port))  # localhost:PORT on the cluster, same port here
        if any(_remote(f) == port for f in self._listeners.forwards if not f.discovered):
            return False  # the config forwards it already
        if any(f.spec.spec == spec.spec for f in self._listeners.forwards):
            return False
        fwd = await self._listeners.add(spec, self._on_client, discovered=True)
        log.info("%s: forwarding cluster port %d on local port %s", self._name, port, fwd.port)
        return True

    def _configured(self) -> set[int]:
        return {
            p
            for f in self._listeners.forwards
            if not f.discovered and (p := _remote(f)) is not None
        }

    # -- what status shows ---------------------------------------------------------------

    def forwards(self) -> tuple[ForwardStatus, ...]:
        """The listeners' status, with ``no_service`` on configured forwards to a cluster
        port where nothing listens and ``tls`` on those whose service was asked."""
        missing = self._configured() - set(self.found) if self._looked else set()
        out = []
        for fwd in self._listeners.forwards:
            fs = fwd.status()
            target = _target(fwd)
            speaks = self.tls.get(target) if target is not None else None
            no_service = not fs.discovered and not fs.dynamic and _remote_of(fs) in missing
            if speaks is not None or no_service:
                fs = dataclasses.replace(fs, tls=speaks, no_service=no_service)
            out.append(fs)
        return tuple(out)

    def status(self) -> tuple[ServiceStatus, ...]:
        local: dict[int, int | None] = {}
        for fwd in self._listeners.forwards:
            remote = _remote(fwd)
            if remote is not None:
                local[remote] = fwd.port
        out = []
        for port in sorted(set(self.found) | self.gone):
            f = self.found.get(port)
            here = local.get(port)
            state = "gone" if f is None else ("forwarded" if port in local else "offered")
            if f is None and port not in local:
                continue  # gone and never forwarded: nothing to show
            url = None
            if f is not None and here is not None:
                if f.jupyter is not None:
                    url = f.jupyter.url(here)
                elif f.kind == "http":
                    url = f"http://localhost:{here}/"
            out.append(
                ServiceStatus(
                    port=port,
                    kind=f.kind if f else "tcp",
                    title=f.title if f else None,
                    state=state,
                    local_port=here,
                    url=url,
                )
            )
        return tuple(out)


def _remote(fwd: Forward) -> int | None:
    spec = fwd.spec
    if spec.dynamic or spec.remote_host not in _SELF:
        return None
    return int(spec.remote_port)


def _target(fwd: Forward) -> tuple[str, int] | None:
    """Where the forward's connections go on the cluster's side, if it is worth a TLS
    probe."""
    spec = fwd.spec
    if spec.dynamic or not tls.worth_asking(spec.remote_port):
        return None
    return (spec.remote_host, int(spec.remote_port))


def _remote_of(fs: ForwardStatus) -> int | None:
    host, _, port = fs.remote.rpartition(":")
    if host.strip("[]") not in _SELF or not port.isdigit():
        return None
    return int(port)
