"""~/.ssh/config gives keys and the agent, never the route: a ``Host *`` block that
redirects everything still reaches the detected user@host:port (real sshd)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.helpers.agent import agent_with
from tests.helpers.asyncrun import run
from tests.helpers.sshd import SshServer, free_port
from tests.helpers.tunnels import fast_options, is_up, make_tunnel

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]


def hostile_config(home: Path, sshd: SshServer, extra: str = "") -> tuple[Path, int]:
    """A config that would send every connection elsewhere; returns the marker file a
    LocalCommand would create, and the port a LocalForward would listen on."""
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(exist_ok=True)
    shutil.copy(sshd.client_key, ssh_dir / "job_key")
    os.chmod(ssh_dir / "job_key", 0o600)
    marker = home / "local-command-ran"
    forward = free_port()
    (ssh_dir / "config").write_text(
        "Host *\n"
        "    Hostname 203.0.113.9\n"
        "    ProxyCommand /bin/false\n"
        "    ProxyJump nobody@203.0.113.10\n"
        "    Port 1\n"
        "    User nobody\n"
        f"    LocalForward 127.0.0.1:{forward} 127.0.0.1:22\n"
        f"    DynamicForward 127.0.0.1:{free_port()}\n"
        "    RemoteForward 127.0.0.1:2222 127.0.0.1:22\n"
        "    PermitLocalCommand yes\n"
        f"    LocalCommand touch {marker}\n"
        "    ForwardAgent yes\n"
        "    ConnectTimeout 1\n"
        "    IdentityFile ~/.ssh/job_key\n" + extra
    )
    return marker, forward


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ssh_config_redirects_nothing_and_gives_the_key(
    sshd: SshServer, tmp_path: Path, isolated_home: Path
) -> None:
    marker, forward = hostile_config(isolated_home, sshd)

    async def main() -> None:
        # No configured keys and none at the default names: only the config's
        # IdentityFile can log in.
        opts = fast_options(sshd, identity_files=(), use_ssh_config=True)
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
        await t.start()
        try:
            st = await t.wait_for(is_up, 20)
            assert (st.user, st.host, st.port) == (sshd.user, "127.0.0.1", sshd.port)
            assert not listening(forward)
        finally:
            await t.end()

    run(main(), 60)
    log = sshd.log_text()
    assert f"Accepted publickey for {sshd.user} from 127.0.0.1" in log
    assert "nobody" not in log
    assert not marker.exists()


@pytest.mark.parametrize("agent_line", ["IdentityAgent {sock}", "IdentityAgent none"])
def test_identity_agent_from_ssh_config(
    sshd: SshServer,
    tmp_path: Path,
    isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    agent_line: str,
) -> None:
    """The config's IdentityAgent wins over SSH_AUTH_SOCK; ``none`` turns the agent off."""
    with agent_with(sshd.client_key, tmp_path) as sock:
        ssh_dir = isolated_home / ".ssh"
        ssh_dir.mkdir()
        (ssh_dir / "config").write_text(
            "Host *\n    Hostname 203.0.113.9\n    " + agent_line.format(sock=sock) + "\n"
        )
        if agent_line.endswith("none"):
            monkeypatch.setenv("SSH_AUTH_SOCK", sock)  # the agent that would work

        async def main() -> None:
            opts = fast_options(sshd, identity_files=(), use_ssh_config=True)
            t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
            await t.start()
            try:
                if agent_line.endswith("none"):
                    st = await t.wait_for(lambda st: st.state == "failed", 20)
                    assert st.last_error_kind == "auth"
                else:
                    await t.wait_for(is_up, 20)
            finally:
                await t.end()

        run(main(), 60)
