"""The tunnel's own listening sockets, one per forward, and the choice of their ports.

They are bound once and stay bound across reconnects (asyncssh's ``forward_local_port``
would close them with the connection). Which ports to try comes from a
:class:`~jobtunnel.daemon.core.book.PortLease` (the daemon's endpoint book owns the
ports: sticky ones first, never another endpoint's); each port bound is reported back
to it. :class:`OwnPorts` is the lease of a tunnel on its own (tests, benchmarks).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from ..core.address import hostport
from ..core.book import PortLease
from ..core.forward import ForwardSpec
from ..core.policy import port_candidates
from .options import ForwardStatus
from .pump import client_protocol

__all__ = ["MAX_BIND_ATTEMPTS", "Forward", "Listeners", "OwnPorts"]

log = logging.getLogger(__name__)

# Bounded so a full port range cannot turn into tens of thousands of bind() calls.
MAX_BIND_ATTEMPTS = 1000


@dataclass(eq=False)
class Forward:
    """One forward and its listener (None while not bound)."""

    spec: ForwardSpec
    bind_address: str
    server: asyncio.Server | None = None
    port: int | None = None
    error: str | None = None
    clients: int = 0
    discovered: bool = False  # added for a service found on the cluster

    def status(self) -> ForwardStatus:
        remote = (
            "socks" if self.spec.dynamic else hostport(self.spec.remote_host, self.spec.remote_port)
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
            discovered=self.discovered,
        )


ClientHandler = Callable[[Forward, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class OwnPorts:
    """The lease of a tunnel with no book: ``assigned`` (spec -> port) first, then
    :func:`port_candidates`; what it binds is remembered here."""

    def __init__(self, port_range: tuple[int, int], assigned: Mapping[str, int] | None) -> None:
        self._range = port_range
        self.assigned: dict[str, int] = dict(assigned or {})

    def candidates(self, spec: ForwardSpec) -> Iterator[int]:
        return port_candidates(spec.local_port, self.assigned.get(spec.spec), self._range)

    def bound(self, spec: ForwardSpec, port: int) -> None:
        self.assigned[spec.spec] = port


class Listeners:
    """The listeners of one tunnel; ``ports`` says which ports to try and is told which
    one each forward got."""

    def __init__(
        self,
        name: str,
        forwards: Sequence[ForwardSpec],
        bind_address: str,
        ports: PortLease,
    ) -> None:
        self._name = name
        self._bind_address = bind_address
        self.forwards = [Forward(f, f.bind_address or bind_address) for f in forwards]
        self._ports = ports
        self._bound: dict[str, int] = {}
        self._closing: list[asyncio.Server] = []

    def assigned(self) -> dict[str, int]:
        """Forward spec -> local port bound last (kept while closed)."""
        return dict(self._bound)

    async def bind(self, on_client: ClientHandler) -> None:
        """Bind every forward; one that cannot be bound keeps its reason in ``error``."""
        for fwd in self.forwards:
            await self._bind(fwd, on_client)

    async def add(
        self, spec: ForwardSpec, on_client: ClientHandler, *, discovered: bool = False
    ) -> Forward:
        """One more forward while the tunnel runs (a discovered service, or one the user
        asked for), bound at once; the forward of the same spec if there is one."""
        for fwd in self.forwards:
            if fwd.spec.spec == spec.spec:
                return fwd
        fwd = Forward(spec, spec.bind_address or self._bind_address, discovered=discovered)
        self.forwards.append(fwd)
        await self._bind(fwd, on_client)
        return fwd

    def close(self) -> None:
        """Stop listening; :meth:`wait_closed` then waits for the servers to finish."""
        for fwd in self.forwards:
            if fwd.server is not None:
                fwd.server.close()
                self._closing.append(fwd.server)
                fwd.server = None
                fwd.port = None

    async def wait_closed(self, timeout: float = 5.0) -> None:
        closing, self._closing = self._closing, []
        for server in closing:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout)
            except Exception as exc:  # a server that does not finish must not stop a stop
                log.debug("%s: listener did not close cleanly: %s", self._name, exc)

    async def _bind(self, fwd: Forward, on_client: ClientHandler) -> None:
        spec = fwd.spec
        # '*' is OpenSSH's spelling of every interface; asyncio wants None for that.
        host: str | None = None if fwd.bind_address == "*" else fwd.bind_address
        last: OSError | None = None
        loop = asyncio.get_running_loop()
        wanted: int | None = None
        for n, candidate in enumerate(self._ports.candidates(spec)):
            wanted = candidate if n == 0 else wanted
            if n >= MAX_BIND_ATTEMPTS:
                break
            try:
                server = await loop.create_server(
                    functools.partial(client_protocol, functools.partial(on_client, fwd)),
                    host=host,
                    port=candidate,
                )
            except OSError as exc:
                last = exc
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    break
                continue
            port = int(server.sockets[0].getsockname()[1])
            fwd.server, fwd.port, fwd.error = server, port, None
            self._bound[spec.spec] = port
            self._ports.bound(spec, port)
            moved = f" (port {wanted} was taken)" if wanted and wanted != port else ""
            target = "SOCKS" if spec.dynamic else hostport(spec.remote_host, spec.remote_port)
            log.info(
                "%s: forward %s listening on %s -> %s%s",
                self._name,
                spec.spec,
                hostport(fwd.bind_address, port),
                target,
                moved,
            )
            return
        fwd.error = (
            f"cannot listen on {fwd.bind_address}: {last.strerror if last else 'no free port'}"
        )
        log.error("%s: forward %s: %s", self._name, spec.spec, fwd.error)
