"""What the engine is told (:class:`TunnelOptions`, built from the config by
:func:`tunnel_options`) and what it reports (:class:`TunnelStatus`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from asyncssh.encryption import get_encryption_algs

from ..config import Config, DetectConfig, ReconnectConfig, SshConfig, TunnelsConfig
from ..core.address import parse_user_hostport
from ..core.forward import ForwardSpec, parse_dynamic, parse_forward
from ..core.netcheck import LinkCheck
from ..core.policy import ReconnectPolicy

__all__ = [
    "ForwardStatus",
    "ServiceStatus",
    "TunnelOptions",
    "TunnelStatus",
    "forwards_of",
    "tunnel_options",
]

# The one source of defaults: the config schema.
_SSH, _TUNNELS, _RECONNECT = SshConfig(), TunnelsConfig(), ReconnectConfig()
_DETECT = DetectConfig()


@dataclass(frozen=True)
class TunnelOptions:
    """Engine settings; field names match the config keys (``ssh.*``, ``tunnels.*``,
    ``reconnect.*``, ``detect.allow_private_addresses``) without their section, and so
    do the defaults: the config schema's. Lists are accepted and stored as tuples."""

    identity_files: tuple[str, ...] = tuple(_SSH.identity_files)
    keepalive_interval: float = _SSH.keepalive_interval
    keepalive_count_max: int = _SSH.keepalive_count_max
    connect_timeout: float = _SSH.connect_timeout
    ciphers: tuple[str, ...] = tuple(_SSH.ciphers)
    use_ssh_config: bool = _SSH.use_ssh_config
    proxy_jump: str = _SSH.proxy_jump
    allow_private_addresses: bool = _DETECT.allow_private_addresses
    bind_address: str = _TUNNELS.bind_address
    hold_seconds: float = _TUNNELS.hold_seconds
    discover_interval: float = _TUNNELS.discover_interval
    auto_forward: tuple[str, ...] = tuple(_TUNNELS.auto_forward)
    port_range: tuple[int, int] = (_TUNNELS.port_range[0], _TUNNELS.port_range[1])
    initial_delay: float = _RECONNECT.initial_delay
    max_delay: float = _RECONNECT.max_delay
    reset_after: float = _RECONNECT.reset_after
    give_up_after: float = _RECONNECT.give_up_after

    def __post_init__(self) -> None:
        for name in ("identity_files", "ciphers", "port_range", "auto_forward"):
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
        if self.proxy_jump:
            try:
                parse_user_hostport(self.proxy_jump)
            except ValueError as exc:
                raise ValueError(f"proxy_jump {exc}") from None
        self.policy()  # validates the reconnect fields

    def bastion(self) -> tuple[str, str, int] | None:
        """The proxy_jump host as (user, host, port), or None to connect directly."""
        return parse_user_hostport(self.proxy_jump) if self.proxy_jump else None

    def policy(self) -> ReconnectPolicy:
        return ReconnectPolicy(
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            reset_after=self.reset_after,
            give_up_after=self.give_up_after,
        )


def tunnel_options(config: Config) -> TunnelOptions:
    """The engine's settings from the config file."""
    return TunnelOptions(
        identity_files=tuple(config.ssh.identity_files),
        keepalive_interval=config.ssh.keepalive_interval,
        keepalive_count_max=config.ssh.keepalive_count_max,
        connect_timeout=config.ssh.connect_timeout,
        ciphers=tuple(config.ssh.ciphers),
        use_ssh_config=config.ssh.use_ssh_config,
        proxy_jump=config.ssh.proxy_jump,
        allow_private_addresses=config.detect.allow_private_addresses,
        bind_address=config.tunnels.bind_address,
        hold_seconds=config.tunnels.hold_seconds,
        discover_interval=config.tunnels.discover_interval,
        auto_forward=tuple(config.tunnels.auto_forward),
        port_range=(config.tunnels.port_range[0], config.tunnels.port_range[1]),
        initial_delay=config.reconnect.initial_delay,
        max_delay=config.reconnect.max_delay,
        reset_after=config.reconnect.reset_after,
        give_up_after=config.reconnect.give_up_after,
    )


def forwards_of(config: Config) -> list[ForwardSpec]:
    """Every forward the config asks for, local then dynamic."""
    return [parse_forward(s) for s in config.tunnels.forwards] + [
        parse_dynamic(s) for s in config.tunnels.dynamic_forwards
    ]


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
    no_service: bool = False  # discovery found nothing listening on the remote port
    discovered: bool = False  # added for a discovered service, not from the config
    tls: bool | None = None  # its service answered a ClientHello as TLS (None: not asked)


@dataclass(frozen=True)
class ServiceStatus:
    """A service discovered on the cluster (see :mod:`..core.discovery`)."""

    port: int  # on the cluster
    kind: str  # "jupyter", "http" or "tcp"
    title: str | None  # an HTTP page's title
    state: str  # "forwarded", "offered" or "gone"
    local_port: int | None  # where it is forwarded, if it is
    url: str | None  # what to open, with a Jupyter's token and path


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
    refused_key: str | None = None  # fingerprint of the last host key refused (trust that one)
    services: tuple[ServiceStatus, ...] = ()  # what discovery found on the cluster
    checked: LinkCheck | None = None  # the last check after a network change or a wake

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
