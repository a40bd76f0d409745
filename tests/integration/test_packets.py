"""What the tunnel sends on the wire: no CBC countermeasure packets unless the cipher is
CBC (daemon/packets.py), seen through asyncssh's own packet log against a real sshd."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.engine.packets import is_cbc

from tests.helpers.asyncrun import run
from tests.helpers.deps import require_sshd
from tests.helpers.services import echo_server, roundtrip
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import fast_options, is_up, local_port, make_tunnel

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(60)]

TRIPS = 20


def test_is_cbc_names_the_cbc_ciphers_only() -> None:
    assert is_cbc("aes128-cbc") and is_cbc("3des-cbc") and is_cbc("seed-cbc@ssh.com")
    for name in ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes256-ctr"):
        assert not is_cbc(name)


@pytest.fixture
def packet_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    asyncssh.set_debug_level(3)
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    try:
        yield caplog
    finally:
        asyncssh.set_debug_level(1)


def _sent(caplog: pytest.LogCaptureFixture, name: str) -> int:
    return sum(f"Sent {name} " in r.getMessage() for r in caplog.records)


def _round_trips(server: SshServer, tmp_path: Path, cipher: str) -> None:
    with echo_server() as echo:

        async def main() -> None:
            options = fast_options(server, ciphers=(cipher,))
            t = make_tunnel(server, [f"0:127.0.0.1:{echo}"], tmp_path, options=options)
            await t.start()
            try:
                await t.wait_for(is_up, 15)
                for i in range(TRIPS):
                    data = f"trip {i}".encode()
                    assert await roundtrip(local_port(t), data) == data
            finally:
                await t.end("test over")

        run(main(), 50)


def test_no_ignore_packets_with_an_aead_cipher(
    sshd: SshServer, tmp_path: Path, packet_log: pytest.LogCaptureFixture
) -> None:
    _round_trips(sshd, tmp_path, "aes128-gcm@openssh.com")
    # Each trip opens a channel and sends data: asyncssh alone would put an empty
    # SSH_MSG_IGNORE in front of every one of those packets.
    assert _sent(packet_log, "MSG_CHANNEL_DATA") >= TRIPS
    assert _sent(packet_log, "MSG_IGNORE") == 0


def test_cbc_keeps_the_countermeasure(
    tmp_path: Path, isolated_home: Path, packet_log: pytest.LogCaptureFixture
) -> None:
    require_sshd()
    server = SshServer(tmp_path / "sshd-cbc")
    with server.config.open("a") as out:
        out.write("Ciphers aes128-cbc\n")
    server.start()
    try:
        _round_trips(server, tmp_path, "aes128-cbc")
    finally:
        server.stop()
    assert _sent(packet_log, "MSG_IGNORE") >= _sent(packet_log, "MSG_CHANNEL_DATA") >= TRIPS
