"""Ports stay put across a restart even when one endpoint's sticky port is taken.

Found by the soak (tests/helpers/soak.py): after a SIGKILL and restart, one endpoint found its
sticky port held by a passing connection, moved to the next port upward, which was
another endpoint's sticky port; that one moved in turn, and so on: several clients lost
the port they were using. An endpoint that must move may not take another's port.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from jobtunnel.daemon.config import Config, TunnelsConfig
from jobtunnel.daemon.core.book import Source
from jobtunnel.daemon.core.detect import Endpoint
from jobtunnel.daemon.core.policy import port_candidates
from jobtunnel.daemon.process.service import Service

from tests.helpers.asyncrun import run


def test_port_candidates_skip_avoided_ports_but_never_the_sticky_one() -> None:
    got = list(port_candidates(5, 7, (3, 9), avoid={5, 6, 7}))
    assert got == [7, 8, 9, 3, 4]
    assert list(port_candidates(0, None, (3, 9), avoid={0})) == [0]


def _three_free_ports_in_a_row() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + 2 > 65535:
            continue
        try:
            for p in range(base, base + 3):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise AssertionError("no three free ports in a row")


def test_a_taken_sticky_port_does_not_steal_another_endpoints_port(isolated_home: Path) -> None:
    base = _three_free_ports_in_a_row()
    spec = str(base)
    config = Config(tunnels=TunnelsConfig(forwards=[spec]))

    async def body() -> dict[str, int]:
        service = Service(config)
        for host, line in (("127.0.0.1", 1), ("127.0.0.2", 2)):
            endpoint = Endpoint("u", host, 1, None, "t", line)
            service.book.found(endpoint, Source.file("t", line, 0.0), 0.0)
        first = service.book.resolve("u@127.0.0.1:1")
        second = service.book.resolve("u@127.0.0.2:1")
        first.ports = {spec: base}
        second.ports = {spec: base + 1}
        with socket.socket() as squatter:  # a passing connection holds the first's port
            squatter.bind(("127.0.0.1", base))
            squatter.listen()
            try:
                await service._open_tunnel(first)
                await service._open_tunnel(second)
                bound = {t.host: t.assigned_ports()[spec] for t in service.tunnels.values()}
                # The book was told through the lease: no copy-back from the tunnels.
                assert {r.host: r.ports[spec] for r in service.book} == bound
                return bound
            finally:
                await asyncio.gather(*(t.stop() for t in service.tunnels.values()))

    ports = run(body())
    assert ports["127.0.0.2"] == base + 1  # kept its port
    assert ports["127.0.0.1"] not in (base, base + 1)  # moved, but not onto the other's
