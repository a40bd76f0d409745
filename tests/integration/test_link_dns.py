"""The engine resolves a detected name once, checks every address, and connects to the
checked address only (real sshd behind a counting relay)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.engine.errors import AddressRefused
from jobtunnel.daemon.engine.hostkeys import HostKeyStore
from jobtunnel.daemon.engine.link import Link, open_link

from tests.helpers.asyncrun import run
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import fast_options, make_tunnel

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]

NAME = "cluster.example.com"


class Relay:
    """A TCP relay on 127.0.0.1 in front of sshd that counts the connections it gets."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.accepted = 0
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)  # type: ignore[arg-type]
        self._writers.append(writer)
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers.append(up_w)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for w in self._writers:
                w.transport.abort()
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Answers:
    """A resolver that gives each call its own answer and records the calls."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def keys(sshd: SshServer) -> list[asyncssh.SSHKey]:
    return [asyncssh.read_private_key(sshd.client_key)]


async def connect(
    sshd: SshServer, tmp_path: Path, port: int, resolver: Answers, allow_private: bool
) -> Link:
    options = fast_options(sshd, allow_private_addresses=allow_private)
    store = HostKeyStore(tmp_path / "known_hosts")
    return await open_link(
        "t", (sshd.user, NAME, port), options, keys(sshd), store, resolver=resolver
    )


def test_a_name_resolving_to_loopback_is_refused_and_nothing_connects(
    sshd: SshServer, tmp_path: Path
) -> None:
    async def main() -> None:
        async with Relay(sshd.port).running() as relay:
            resolver = Answers(["127.0.0.1"])
            with pytest.raises(AddressRefused) as caught:
                await connect(sshd, tmp_path, relay.port, resolver, allow_private=False)
            assert str(caught.value) == (
                f"{NAME} resolves to 127.0.0.1, a loopback address "
                "(set detect.allow_private_addresses to accept it)"
            )
            assert relay.accepted == 0
            assert resolver.calls == [(NAME, relay.port)]

            link = await connect(sshd, tmp_path, relay.port, resolver, allow_private=True)
            try:
                assert link.alive and relay.accepted == 1
                # The name is the host-key identity, not the address connected to.
                store = HostKeyStore(tmp_path / "known_hosts")
                assert store.lookup(sshd.user, NAME, relay.port) is not None
                assert store.lookup(sshd.user, "127.0.0.1", relay.port) is None
            finally:
                link.drop()

    run(main(), 60)


def test_any_private_address_refuses_the_name(sshd: SshServer, tmp_path: Path) -> None:
    async def main() -> None:
        async with Relay(sshd.port).running() as relay:
            for answer in (["52.1.2.3", "127.0.0.1"], ["10.0.0.5", "8.8.8.8"]):
                with pytest.raises(AddressRefused) as caught:
                    await connect(sshd, tmp_path, relay.port, Answers(answer), False)
                assert caught.value.address == next(a for a in answer if a[0] in "14")
            assert relay.accepted == 0

    run(main(), 60)


def test_the_connection_goes_to_the_checked_address(sshd: SshServer, tmp_path: Path) -> None:
    async def main() -> None:
        async with Relay(sshd.port).running() as relay:
            # A second lookup would answer 127.0.0.2, where nothing listens.
            resolver = Answers(["127.0.0.1"], ["127.0.0.2"])
            link = await connect(sshd, tmp_path, relay.port, resolver, allow_private=True)
            try:
                assert len(resolver.calls) == 1
                assert relay.accepted == 1
                assert link.conn.get_extra_info("peername")[0] == "127.0.0.1"
            finally:
                link.drop()

    run(main(), 60)


def test_checked_addresses_are_tried_in_order(sshd: SshServer, tmp_path: Path) -> None:
    async def main() -> None:
        async with Relay(sshd.port).running() as relay:
            # Nothing listens on 127.0.0.2 (the relay is bound to 127.0.0.1 only).
            resolver = Answers(["127.0.0.2", "127.0.0.1"])
            link = await connect(sshd, tmp_path, relay.port, resolver, allow_private=True)
            try:
                assert relay.accepted == 1
                assert link.conn.get_extra_info("peername")[0] == "127.0.0.1"
            finally:
                link.drop()

    run(main(), 60)


def test_tunnel_reports_a_refused_address_and_keeps_checking(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The system resolver, through the whole tunnel: a loopback literal is refused at
    connect time too, and the tunnel says why."""

    async def main() -> None:
        opts = fast_options(sshd, allow_private_addresses=False)
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
        await t.start()
        try:
            st = await t.wait_for(lambda st: t.connect_attempts >= 2, 20)
            # Retried (DNS may change), never up: it stays "connecting".
            assert st.state == "connecting" and st.last_error_kind == "unreachable"
            assert st.last_error is not None
            assert "127.0.0.1 is a loopback address" in st.last_error
            assert "detect.allow_private_addresses" in st.last_error
        finally:
            await t.end()
        assert "Connection from" not in sshd.log_text()

    run(main(), 60)


def test_localhost_through_the_system_resolver_connects_when_allowed(
    sshd: SshServer, tmp_path: Path
) -> None:
    async def main() -> None:
        options = fast_options(sshd, allow_private_addresses=True)
        store = HostKeyStore(tmp_path / "known_hosts")
        # localhost may resolve to ::1 first, where sshd does not listen: the next
        # address is tried.
        link = await open_link("t", (sshd.user, "localhost", sshd.port), options, keys(sshd), store)
        try:
            assert link.alive
            assert store.lookup(sshd.user, "localhost", sshd.port) is not None
        finally:
            link.drop()

    run(main(), 60)


def test_a_stalled_lookup_counts_against_connect_timeout(sshd: SshServer, tmp_path: Path) -> None:
    async def stalled(host: str, port: int) -> list[str]:
        await asyncio.sleep(3600)
        return []

    async def main() -> None:
        options = fast_options(sshd, connect_timeout=0.5)
        store = HostKeyStore(tmp_path / "known_hosts")
        with pytest.raises(socket.gaierror, match="timed out"):
            await open_link(
                "t", (sshd.user, NAME, sshd.port), options, keys(sshd), store, resolver=stalled
            )

    run(main(), 30)
