"""Trust what was shown: a refused host key's fingerprint is kept, and only that exact
key may replace the pin (real sshd)."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.engine.hostkeys import HostKeyStore

from tests.helpers.asyncrun import run
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import is_up, make_tunnel, running


def host_fp(sshd: SshServer) -> str:
    return asyncssh.read_public_key(f"{sshd.host_key}.pub").get_fingerprint("sha256")


def test_trust_pins_exactly_the_key_named(sshd: SshServer, tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    fp_a = host_fp(sshd)
    fp_c = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")

    async def main() -> None:
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path)
        async with running(t):
            assert t.status().refused_key is None
            with pytest.raises(ValueError, match="no refused key"):
                t.accept_new_host_key()
            assert t.status().state == "up"  # refused before touching the link

        sshd.stop()
        sshd.new_host_key()
        sshd.start()
        fp_b = host_fp(sshd)
        assert fp_b not in (fp_a, fp_c)

        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path)
        await t.start()
        try:
            st = await t.wait_for(lambda st: st.state == "failed", 15)
            assert st.refused_key == fp_b and st.host_key is None

            # Trusting another key than the one offered: refused again, the pin stays A.
            attempts = t.connect_attempts
            t.accept_new_host_key(fp_c)
            st = await t.wait_for(
                lambda st: st.state == "failed" and t.connect_attempts > attempts, 15
            )
            assert st.last_error_kind == "host_key_changed" and st.refused_key == fp_b
            pinned = store.lookup(sshd.user, "127.0.0.1", sshd.port)
            assert pinned is not None and pinned.get_fingerprint("sha256") == fp_a

            # The key that was shown: accepted, pinned, refusal cleared.
            t.accept_new_host_key(fp_b)
            st = await t.wait_for(is_up, 15)
            assert st.host_key == fp_b and st.refused_key is None
        finally:
            await t.end()
        pinned = store.lookup(sshd.user, "127.0.0.1", sshd.port)
        assert pinned is not None and pinned.get_fingerprint("sha256") == fp_b

    run(main(), 90)


def test_trust_without_fingerprint_takes_the_refused_key(sshd: SshServer, tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")

    async def main() -> None:
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path)
        await t.start()
        await t.wait_for(is_up, 15)
        await t.end()
        sshd.stop()
        sshd.new_host_key()
        sshd.start()
        fp_b = host_fp(sshd)
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path)
        await t.start()
        try:
            await t.wait_for(lambda st: st.refused_key == fp_b, 15)
            t.accept_new_host_key()
            st = await t.wait_for(is_up, 15)
            assert st.host_key == fp_b and st.refused_key is None
        finally:
            await t.end()
        pinned = store.lookup(sshd.user, "127.0.0.1", sshd.port)
        assert pinned is not None and pinned.get_fingerprint("sha256") == fp_b

    run(main(), 90)
