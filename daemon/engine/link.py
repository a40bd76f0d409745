"""One SSH connection to an endpoint: how it is opened, and the asyncssh client side
(host-key trust on first use against the pin store, notice of connection loss).

The endpoint's host comes from a job log, an untrusted file. Its name is resolved here,
once per attempt; every address it resolves to must pass :func:`address_problem` (unless
private addresses are allowed), and the connection goes to those checked addresses, so
a second lookup cannot answer differently. The name stays the host-key identity.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from ..core.address import address_problem, hostport
from ..core.netcheck import Path
from .auth import agent_path, auth_options
from .errors import AddressRefused, BastionFailed, HostKeyChanged
from .hostkeys import HostKeyStore, Verdict, fingerprint
from .options import TunnelOptions
from .packets import skip_cbc_countermeasure

__all__ = [
    "Link",
    "Resolver",
    "SshClient",
    "checked_addresses",
    "open_link",
    "path_now",
    "resolve",
]

# (host, port) -> the IP addresses to try, in order.
Resolver = Callable[[str, int], Awaitable[list[str]]]

log = logging.getLogger(__name__)


class SshClient(asyncssh.SSHClient):
    """Host-key TOFU against the pin store, notice of connection loss, and no CBC
    countermeasure packets on non-CBC ciphers."""

    def __init__(
        self,
        name: str,
        endpoint: tuple[str, str, int],
        host_keys: HostKeyStore,
        trust: str | None = None,
    ) -> None:
        self._name = name
        self._endpoint = endpoint
        self._host_keys = host_keys
        self._trust = trust  # the one fingerprint the user accepted in place of the pin
        self._to_pin: asyncssh.SSHKey | None = None
        self.changed: HostKeyChanged | None = None
        self.host_key: str | None = None
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        skip_cbc_countermeasure(conn)

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # The endpoint identity (the detected name), not the address connected to.
        verdict, pinned = self._host_keys.check(*self._endpoint, key)
        offered = fingerprint(key)
        if self._trust is not None and verdict is not Verdict.MATCH:
            # The user trusted exactly one key: that one replaces the pin, no other.
            if offered != self._trust:
                self.changed = HostKeyChanged(
                    fingerprint(pinned) if pinned is not None else self._trust, offered
                )
                return False
            self._to_pin = key
        elif verdict is Verdict.CHANGED:
            assert pinned is not None
            self.changed = HostKeyChanged(fingerprint(pinned), offered)
            return False
        elif verdict is Verdict.NEW:
            self._to_pin = key
        self.host_key = offered
        return True

    def begin_auth(self, username: str) -> None:
        # Key exchange is complete, so the server has proved it holds the key: pin now,
        # even if authentication then fails (as OpenSSH does).
        if self._to_pin is not None:
            try:
                self._host_keys.pin(*self._endpoint, self._to_pin)
            except OSError as exc:
                log.error("%s: cannot save host key pin: %s", self._name, exc)
            self._to_pin = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@dataclass(eq=False)
class Link:
    """An open connection and the local clients it carries."""

    conn: asyncssh.SSHClientConnection
    client: SshClient
    clients: set[asyncio.StreamWriter] = field(default_factory=set)
    check: asyncio.Task[bool] | None = None  # a liveness check in flight
    bastion: asyncssh.SSHClientConnection | None = None  # the proxy_jump hop, if any

    @property
    def alive(self) -> bool:
        return not self.client.lost.done()

    def drop(self) -> None:
        """Close the connection. Clients still on it are reset: a clean EOF would pass
        off a cut transfer as complete."""
        for writer in list(self.clients):
            writer.transport.abort()
        self.clients.clear()
        if self.check is not None:
            self.check.cancel()
        self.conn.abort()
        if self.bastion is not None:
            self.bastion.abort()


# errno values, with Windows' own numbers (WSAEADDRNOTAVAIL, WSAENETUNREACH, ...).
_ADDRESS_GONE = frozenset({errno.EADDRNOTAVAIL, 10049})
_NO_ROUTE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, 10051, 10065})


def path_now(conn: asyncssh.SSHClientConnection) -> Path:
    """What the kernel says now about ``conn``'s path, without sending a packet: whether
    its local address is still this machine's (a bind), whether a route to the peer
    exists and which address it sends from (a UDP connect only looks the route up).
    None where it cannot tell."""
    local = conn.get_extra_info("sockname")
    peer = conn.get_extra_info("peername")
    if not isinstance(local, tuple) or not isinstance(peer, tuple):
        return Path(None, None, None)
    family = socket.AF_INET6 if ":" in str(local[0]) else socket.AF_INET
    present: bool | None = None
    route: bool | None = None
    source: str | None = None
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((local[0], 0, *local[2:]))
            present = True
        except OSError as exc:
            present = False if exc.errno in _ADDRESS_GONE else None
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(peer)
            route = True
            source = str(probe.getsockname()[0])
        except OSError as exc:
            route = False if exc.errno in _NO_ROUTE else None
    return Path(str(local[0]), present, route, source)


# Lookups get threads of their own. A lookup waiting on a silent DNS server holds its
# thread until the system resolver gives up (30 s and more); in the event loop's shared
# pool (uvloop's has 4 threads) a few such names from one file held up every other lookup
# and every listener's bind. One thread per automatically connected endpoint by default.
LOOKUP_THREADS = 8
_lookups: ThreadPoolExecutor | None = None


def _lookup_pool() -> ThreadPoolExecutor:
    global _lookups
    if _lookups is None:
        _lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="jobtunnel-lookup")
    return _lookups


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` has for a TCP connection, in the resolver's order. An IP
    literal is its own answer: it never waits behind the lookups of names."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    infos = await asyncio.get_running_loop().run_in_executor(_lookup_pool(), lookup)
    found: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0])
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3] and "%" not in ip:
            ip = f"{ip}%{sockaddr[3]}"  # a link-local address needs its interface
        if ip not in found:
            found.append(ip)
    return found


async def checked_addresses(
    host: str,
    port: int,
    allow_private: bool,
    resolver: Resolver = resolve,
    timeout: float | None = None,
) -> list[str]:
    """Resolve ``host``; raise :class:`AddressRefused` if ANY address is not public
    (unless ``allow_private``): a name that also resolves to 10.0.0.5 could be answered
    with it on the next try or by the next resolver in the chain."""
    try:
        # The lookup counts against connect_timeout too: a stalled resolver must not
        # hold the attempt longer than a stalled server would.
        async with asyncio.timeout(timeout):
            addresses = await resolver(host, port)
    except TimeoutError:
        raise socket.gaierror(socket.EAI_AGAIN, "timed out") from None
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no addresses")
    for ip in addresses:
        problem = address_problem(ip, allow_private)
        if problem is not None:
            raise AddressRefused(host, ip, problem)
    return addresses


def _common(options: TunnelOptions, keys: list[asyncssh.SSHKey], agent: str | None) -> Any:
    return {
        # Empty trusted lists, so every key goes through validate_host_public_key.
        # Never None: that would switch host-key checking off.
        "known_hosts": ([], [], []),
        "keepalive_interval": options.keepalive_interval,
        "keepalive_count_max": options.keepalive_count_max,
        "connect_timeout": options.connect_timeout,
        "encryption_algs": list(options.ciphers),
        **auth_options(keys, agent),
    }


async def _connect_checked(
    name: str,
    endpoint: tuple[str, str, int],
    addresses: list[str],
    host_keys: HostKeyStore,
    trust: str | None,
    tunnel: asyncssh.SSHClientConnection | None,
    kwargs: Any,
) -> tuple[asyncssh.SSHClientConnection, SshClient]:
    """Log in to the first of ``addresses`` that accepts a TCP connection."""
    user, _host, port = endpoint
    last: OSError | None = None
    for ip in addresses:
        made: list[SshClient] = []

        def factory(made: list[SshClient] = made) -> SshClient:
            client = SshClient(name, endpoint, host_keys, trust)
            made.append(client)
            return client

        try:
            conn = await asyncssh.connect(
                ip,
                port,
                username=user,
                client_factory=factory,
                **({"tunnel": tunnel} if tunnel is not None else {}),
                **kwargs,
            )
        except Exception as exc:
            changed = made[0].changed if made else None
            if changed is not None:
                raise changed from exc
            # Only a failed TCP connection moves on (refused, unreachable, timed out,
            # as OpenSSH does); an SSH-level refusal is the server's answer.
            if not isinstance(exc, OSError):
                raise
            log.debug("%s: %s: %s; trying the next address", name, hostport(ip, port), exc)
            last = exc
            continue
        return conn, made[0]
    assert last is not None
    raise last


async def _open_bastion(
    name: str,
    bastion: tuple[str, str, int],
    options: TunnelOptions,
    keys: list[asyncssh.SSHKey],
    host_keys: HostKeyStore,
) -> asyncssh.SSHClientConnection:
    """Log in to the proxy_jump host, its key pinned under its own identity. Its address
    is not checked: the user's own config names it, not a job log."""
    user, host, port = bastion
    label = f"{user}@{hostport(host, port)}"
    try:
        addresses = await checked_addresses(host, port, True, timeout=options.connect_timeout)
        kwargs = _common(options, keys, agent_path(user, host, port, options.use_ssh_config))
        conn, _client = await _connect_checked(
            f"{name} via {label}", bastion, addresses, host_keys, None, None, kwargs
        )
    except Exception as exc:
        raise BastionFailed(label, exc) from exc
    return conn


async def open_link(
    name: str,
    endpoint: tuple[str, str, int],
    options: TunnelOptions,
    keys: list[asyncssh.SSHKey],
    host_keys: HostKeyStore,
    trust: str | None = None,
    resolver: Resolver = resolve,
) -> Link:
    """Connect and log in; raises :class:`HostKeyChanged` when the key was refused,
    :class:`AddressRefused` when the host resolves to an address that is not public, and
    :class:`BastionFailed` when the ``proxy_jump`` host fails.
    ``trust``: a fingerprint the user accepted; only that key may replace the pin."""
    user, host, port = endpoint
    log.debug("%s: connecting", name)
    # Resolved here even through a bastion: the check is ours, and the bastion is then
    # asked for the checked address, never the name.
    addresses = await checked_addresses(
        host, port, options.allow_private_addresses, resolver, options.connect_timeout
    )
    hop = options.bastion()
    bastion = await _open_bastion(name, hop, options, keys, host_keys) if hop else None
    kwargs = _common(options, keys, agent_path(user, host, port, options.use_ssh_config))
    try:
        conn, client = await _connect_checked(
            name, endpoint, addresses, host_keys, trust, bastion, kwargs
        )
    except BaseException:
        if bastion is not None:
            bastion.abort()
        raise
    # The cluster connection ends when its channel through the bastion does; the bastion's
    # own end is Link.drop's: asyncssh does not close a tunnel it was given.
    return Link(conn, client, bastion=bastion)
