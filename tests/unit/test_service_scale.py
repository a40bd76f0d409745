"""A log naming 1000 endpoints (the per-file cap) must not stall the daemon.

Found by tests/test_hostile_daemon.py: with 100 000 endpoints in one file, ``status``
took 8 s to answer (18 s under a profiler). Each new endpoint published a full status
snapshot of every endpoint (1000 x 1000 endpoint summaries), and every tunnel status change
copied the ports of every tunnel. Both are now per endpoint or coalesced; counted here
rather than timed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon.api.schema import StatusSnapshot
from jobtunnel.daemon.config import Config, DetectConfig, TunnelsConfig, WatchConfig
from jobtunnel.daemon.core.policy import State
from jobtunnel.daemon.engine.options import TunnelStatus
from jobtunnel.daemon.process import service as service_module
from jobtunnel.daemon.process.service import Service
from jobtunnel.daemon.process.watch import LogUpdate

from tests.helpers.asyncrun import run

N = 1000


class CountingTunnel:
    """Stands in for Tunnel: no network; counts how often the service asks for its status."""

    status_reads = 0
    state = State.CONNECTING

    def __init__(self, user: str, host: str, port: int, *args: Any, **kwargs: Any) -> None:
        self.endpoint = (user, host, port)
        self._subscribers: list[Any] = []

    def subscribe(self, callback: Any) -> None:
        self._subscribers.append(callback)

    async def start(self) -> None:
        for _ in range(3):  # connecting, then retrying: a few status changes each
            for callback in self._subscribers:
                callback(None)

    async def stop(self) -> None:
        pass

    def status(self) -> TunnelStatus:
        CountingTunnel.status_reads += 1
        user, host, port = self.endpoint
        return TunnelStatus(
            user=user, host=host, port=port, state="connecting", since=0.0, forwards=(),
            bytes_sent=0, bytes_received=0, active_clients=0, held_clients=0, reconnects=0,
            last_error=None, last_error_kind=None, next_attempt_in=None, host_key=None,
        )  # fmt: skip


def test_a_thousand_endpoints_publish_few_snapshots(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "Tunnel", CountingTunnel)
    CountingTunnel.status_reads = 0
    config = Config(
        detect=DetectConfig(username_pattern="root", allow_private_addresses=True),
        watch=WatchConfig(folders=[str(isolated_home / "logs")]),
        # Bounds high enough that every endpoint connects: the point is the cost.
        tunnels=TunnelsConfig(
            forwards=[], max_automatic=2 * N, max_per_file=2 * N, new_per_minute=2 * N
        ),
    )
    log = "\n".join(f"ssh -p {2000 + i} root@127.1.{i // 256}.{i % 256}" for i in range(N))

    snapshots = 0
    built = Service.status

    def status(self: Service) -> StatusSnapshot:
        nonlocal snapshots
        snapshots += 1
        return built(self)

    # On the class: a callback that took the bound method early is counted too.
    monkeypatch.setattr(Service, "status", status)

    async def body() -> None:
        service = Service(config)
        service._on_update(LogUpdate(isolated_home / "logs" / "flood.log", log.encode(), True))
        for _ in range(100):
            if not service._tasks:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the coalesced publish and save
        assert len(service.tunnels) == len(service.book) >= N - 5

    run(body())
    assert snapshots <= 10, snapshots
    # Each snapshot reads every tunnel once; nothing else walks them all.
    assert CountingTunnel.status_reads <= snapshots * N, CountingTunnel.status_reads
