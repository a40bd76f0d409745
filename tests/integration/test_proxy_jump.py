"""ssh.proxy_jump: the tunnel reaches the cluster through a bastion (two real sshds)."""

from __future__ import annotations

import time
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.engine.hostkeys import HostKeyStore

from tests.helpers.asyncrun import run
from tests.helpers.services import HTTP_BODY, echo_server, http_get, http_server, roundtrip
from tests.helpers.sshd import SshServer, free_port
from tests.helpers.tunnels import fast_options, local_port, make_tunnel, running

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def wait_until(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_tunnel_through_a_bastion(sshd: SshServer, bastion: SshServer, tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    jump = f"{bastion.user}@127.0.0.1:{bastion.port}"
    with http_server() as http_port, echo_server() as echo_port:

        async def main() -> None:
            opts = fast_options(sshd, proxy_jump=jump)
            specs = [f"0:127.0.0.1:{http_port}", f"0:127.0.0.1:{echo_port}"]
            t = make_tunnel(sshd, specs, tmp_path, options=opts)  # known_hosts: store
            async with running(t, 20):
                assert HTTP_BODY in await http_get(local_port(t, 0))
                payload = bytes(range(256)) * 4096
                assert await roundtrip(local_port(t, 1), payload) == payload
                # The cluster link rides on the bastion: cut the bastion, the link drops
                # and comes back through it.
                bastion.kill_sessions()
                await t.wait_for(lambda st: st.reconnects == 1 and st.state == "up", 30)
                assert await roundtrip(local_port(t, 1), b"again") == b"again"

        run(main(), 90)

    bastion_key = asyncssh.read_public_key(f"{bastion.host_key}.pub")
    pinned = store.lookup(bastion.user, "127.0.0.1", bastion.port)
    assert pinned is not None
    assert pinned.get_fingerprint() == bastion_key.get_fingerprint()
    cluster_pin = store.lookup(sshd.user, "127.0.0.1", sshd.port)
    assert cluster_pin is not None and cluster_pin.get_fingerprint() != pinned.get_fingerprint()
    assert bastion.log_text().count(f"Accepted publickey for {bastion.user}") == 2
    # The link's end closes the bastion connection too.
    assert wait_until(lambda: not bastion.session_pids(), 10), bastion.session_pids()


def test_changed_bastion_key_is_refused(
    sshd: SshServer, bastion: SshServer, tmp_path: Path
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    # A pin for the bastion that its key does not match.
    store.pin(bastion.user, "127.0.0.1", bastion.port, asyncssh.generate_private_key("ssh-ed25519"))

    async def main() -> None:
        opts = fast_options(sshd, proxy_jump=f"{bastion.user}@127.0.0.1:{bastion.port}")
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)  # known_hosts: store
        await t.start()
        try:
            st = await t.wait_for(lambda st: st.state == "failed", 20)
            assert st.last_error_kind == "host_key_changed"
            assert st.last_error is not None
            assert f"bastion {bastion.user}@127.0.0.1:{bastion.port}" in st.last_error
            assert "known_hosts" in st.last_error  # trust is for clusters, not the bastion
            assert st.refused_key is None
        finally:
            await t.end()

    run(main(), 60)
    assert "Accepted publickey" not in sshd.log_text()


def test_dead_bastion_is_named_in_the_error(sshd: SshServer, tmp_path: Path) -> None:
    dead = free_port()

    async def main() -> None:
        opts = fast_options(sshd, proxy_jump=f"{sshd.user}@127.0.0.1:{dead}")
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
        await t.start()
        try:
            st = await t.wait_for(lambda st: t.connect_attempts >= 2, 20)
            assert st.state == "connecting" and st.last_error_kind == "unreachable"
            assert st.last_error is not None
            assert f"bastion {sshd.user}@127.0.0.1:{dead}: connection refused" in st.last_error
        finally:
            await t.end()

    run(main(), 60)
    assert "Connection from" not in sshd.log_text()  # the cluster was never tried
