"""Tunnels to the test sshd with fast timings, and small probes of their state."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from jobtunnel.daemon.core.forward import parse_dynamic, parse_forward
from jobtunnel.daemon.engine.hostkeys import HostKeyStore
from jobtunnel.daemon.engine.options import TunnelOptions, TunnelStatus
from jobtunnel.daemon.engine.tunnel import Tunnel

from .sshd import SshServer


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fast_options(sshd: SshServer, **overrides: object) -> TunnelOptions:
    values: dict[str, object] = {
        "identity_files": (str(sshd.client_key),),
        "keepalive_interval": 1.0,
        "keepalive_count_max": 2,
        "connect_timeout": 5.0,
        "initial_delay": 0.1,
        "max_delay": 1.0,
        "hold_seconds": 20.0,
        "use_ssh_config": False,
        # The test sshd is on loopback, which the engine refuses by default.
        "allow_private_addresses": True,
        # Off unless a test is about it: a look opens channels of its own and probes every
        # port this machine listens on.
        "discover_interval": 0.0,
    }
    values.update(overrides)
    return TunnelOptions(**values)  # type: ignore[arg-type]


def make_tunnel(
    sshd: SshServer, specs: list[str], tmp_path: Path, user: str | None = None, **kw: object
) -> Tunnel:
    """A tunnel to the test sshd; "D:port" specs are dynamic (SOCKS) forwards."""
    forwards = [parse_dynamic(s[2:]) if s.startswith("D:") else parse_forward(s) for s in specs]
    return Tunnel(
        user or sshd.user,
        "127.0.0.1",
        sshd.port,
        forwards,
        kw.pop("options", None) or fast_options(sshd),  # type: ignore[arg-type]
        host_keys=HostKeyStore(tmp_path / "known_hosts"),
        **kw,  # type: ignore[arg-type]
    )


def is_up(st: TunnelStatus) -> bool:
    return st.state == "up"


@contextlib.asynccontextmanager
async def running(t: Tunnel, timeout: float = 15) -> AsyncIterator[Tunnel]:
    """``t`` started and up within ``timeout``; ended on the way out, whatever happened."""
    await t.start()
    try:
        await t.wait_for(is_up, timeout)
        yield t
    finally:
        await t.end()


def local_port(t: Tunnel, index: int = 0) -> int:
    port = t.status().forwards[index].local_port
    assert port is not None
    return port
