"""One SSH connection to an endpoint: how it is opened, and the asyncssh client side
(host-key trust on first use against the pin store, notice of connection loss)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncssh

from .auth import auth_options
from .errors import HostKeyChanged
from .hostkeys import HostKeyStore, Verdict, fingerprint
from .options import TunnelOptions
from .packets import skip_cbc_countermeasure

__all__ = ["Link", "SshClient", "open_link"]

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
        # The endpoint identity, not what asyncssh resolved (an ssh config Hostname).
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


async def open_link(
    name: str,
    endpoint: tuple[str, str, int],
    options: TunnelOptions,
    keys: list[asyncssh.SSHKey],
    host_keys: HostKeyStore,
    trust: str | None = None,
) -> Link:
    """Connect and log in; raises :class:`HostKeyChanged` when the key was refused.
    ``trust``: a fingerprint the user accepted; only that key may replace the pin."""
    user, host, port = endpoint
    made: list[SshClient] = []

    def factory() -> SshClient:
        client = SshClient(name, endpoint, host_keys, trust)
        made.append(client)
        return client

    log.debug("%s: connecting", name)
    try:
        conn = await asyncssh.connect(
            host,
            port,
            username=user,
            # Empty trusted lists, so every key goes through validate_host_public_key.
            # Never None: that would switch host-key checking off.
            known_hosts=([], [], []),
            client_factory=factory,
            keepalive_interval=options.keepalive_interval,
            keepalive_count_max=options.keepalive_count_max,
            connect_timeout=options.connect_timeout,
            encryption_algs=list(options.ciphers),
            **auth_options(keys, options.use_ssh_config),
        )
    except Exception as exc:
        changed = made[0].changed if made else None
        if changed is not None:
            raise changed from exc
        raise
    return Link(conn, made[0])
