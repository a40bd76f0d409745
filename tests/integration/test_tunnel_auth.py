"""Authentication sources against the real sshd: passphrase callback, ssh config, agent."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.helpers.asyncrun import run
from tests.helpers.deps import require_tool
from tests.helpers.sshd import SshServer
from tests.helpers.tunnels import fast_options, make_tunnel, running

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(90)]


def test_encrypted_key_uses_passphrase_callback_once(sshd: SshServer, tmp_path: Path) -> None:
    locked = tmp_path / "locked_key"
    asyncssh.read_private_key(sshd.client_key).write_private_key(locked, passphrase="pw")
    locked.chmod(0o600)  # write_private_key follows the umask; a 0644 key is refused
    asked: list[str] = []

    async def ask(path: str) -> str:
        asked.append(path)
        return "pw"

    async def main() -> None:
        opts = fast_options(sshd, identity_files=(str(locked),))
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts, passphrase=ask)
        async with running(t, 20):
            sshd.kill_sessions()
            await t.wait_for(lambda st: st.reconnects == 1 and st.state == "up", 20)
        assert asked == [str(locked)], "asked again on reconnect"

    run(main(), 60)


def test_identity_file_from_ssh_config(
    sshd: SshServer, tmp_path: Path, isolated_home: Path
) -> None:
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    shutil.copy(sshd.client_key, ssh_dir / "rescale_job")
    os.chmod(ssh_dir / "rescale_job", 0o600)
    (ssh_dir / "config").write_text("Host 127.0.0.1\n    IdentityFile ~/.ssh/rescale_job\n")

    async def main() -> None:
        # No configured keys, none at the default names: only ~/.ssh/config names one.
        opts = fast_options(sshd, identity_files=(), use_ssh_config=True)
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
        async with running(t, 20):
            pass  # coming up is what is tested

        opts = fast_options(sshd, identity_files=(), use_ssh_config=False)
        t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
        await t.start()
        try:
            st = await t.wait_for(lambda st: st.state == "failed", 20)
            assert st.last_error_kind == "auth"
        finally:
            await t.end()

    run(main(), 60)


@contextlib.contextmanager
def ssh_agent(tmp_path: Path) -> Iterator[str]:
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


def test_agent_key(sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("ssh-agent", "openssh-client")
    require_tool("ssh-add", "openssh-client")
    with ssh_agent(tmp_path) as sock:
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        subprocess.run(["ssh-add", str(sshd.client_key)], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)

        async def main() -> None:
            for use_config in (True, False):
                opts = fast_options(sshd, identity_files=(), use_ssh_config=use_config)
                t = make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts)
                async with running(t, 20):
                    pass  # coming up is what is tested

        run(main(), 60)
