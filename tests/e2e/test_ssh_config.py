"""End to end: the daemon's ssh_config used by the REAL ssh, scp and sftp against the
suite's real sshd, with strict host-key checking against jobtunnel's pins."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemonproc import Daemon, Env, endpoint_up, wait_for
from tests.helpers.deps import dependency_missing
from tests.helpers.sshd import ssh_alias


def _tools() -> None:
    for tool in ("ssh", "scp", "sftp"):
        if shutil.which(tool) is None:
            dependency_missing(f"{tool} is not installed (Debian: openssh-client)")


def _files(env: Env) -> tuple[Path, Path]:
    data = Path(env.vars["XDG_DATA_HOME"]) / "jobtunnel"
    return data / "ssh_config", data / "ssh_known_hosts"


def _alias_written(env: Env) -> dict[str, Any] | None:
    """The endpoint once it is up and its block and pin are in the files."""
    ep = endpoint_up(env)
    config, known = _files(env)
    if ep is None or not ep.get("ssh_alias") or not known.exists():
        return None
    alias = ep["ssh_alias"]
    if f"Host {alias}\n" in config.read_text() and known.read_text().startswith(f"{alias} "):
        return ep
    return None


@pytest.mark.timeout(180)
def test_real_ssh_scp_sftp_through_the_generated_config_then_a_changed_key_fails(
    env: Env, daemons: Callable[[], Daemon], tmp_path: Path
) -> None:
    _tools()
    daemons()
    (env.logs / "job.log").write_text(env.log_line())
    ep = wait_for(lambda: _alias_written(env), "the endpoint's block and pin")
    alias = ep["ssh_alias"]
    # No job id (the test user is not uprod_<id>): the long alias, sanitised.
    assert alias == f"rescale-{env.sshd.user}-127.0.0.1-{env.sshd.port}"
    config, known = _files(env)
    assert (config.stat().st_mode & 0o777, known.stat().st_mode & 0o777) == (0o600, 0o600)
    text = config.read_text()
    assert f'IdentityFile "{env.sshd.client_key}"' in text
    assert "StrictHostKeyChecking yes" in text and f"HostKeyAlias {alias}" in text
    # The exported pin is the sshd's own host key.
    host_pub = Path(f"{env.sshd.host_key}.pub").read_text().split()
    assert known.read_text().split() == [alias, host_pub[0], host_pub[1]]

    # 1. the generated file, directly.
    result = ssh_alias(config, alias, "echo", "via-F")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "via-F\n"

    # 2. through the Include line in the user's ~/.ssh/config (HOME is the test's own;
    # ssh reads the passwd home, so the file is named with -F).
    user_config = env.home / ".ssh" / "config"
    user_config.parent.mkdir(mode=0o700)
    user_config.write_text("Host *\n    ServerAliveInterval 30\n")
    installed = env.cli("ssh-config", "--install", "--yes")
    assert installed.returncode == 0, installed.stderr
    assert user_config.read_text().startswith(f'Include "{config}"')
    assert ssh_alias(user_config, alias, "true").returncode == 0

    # 3. jobtunnel ssh NAME COMMAND (NAME as other endpoint commands take it).
    hi = env.cli("ssh", ep["name"], "echo", "hi")
    assert hi.returncode == 0, hi.stderr
    assert hi.stdout == "hi\n"

    # 4. scp with the alias, and jobtunnel scp with NAME:PATH.
    source = tmp_path / "results.csv"
    source.write_text("a,b\n1,2\n")
    copied = tmp_path / "copied.csv"
    scp = subprocess.run(
        ["scp", "-F", str(config), "-o", "BatchMode=yes", str(source), f"{alias}:{copied}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert scp.returncode == 0, scp.stderr
    assert copied.read_text() == "a,b\n1,2\n"
    back = tmp_path / "back.csv"
    result = env.cli("scp", f"{alias}:{copied}", str(back))
    assert result.returncode == 0, result.stderr
    assert back.read_text() == "a,b\n1,2\n"

    # 5. sftp in batch mode.
    batch = tmp_path / "batch"
    batch.write_text(f"get {copied} {tmp_path / 'via-sftp.csv'}\n")
    result = env.cli("sftp", "-b", str(batch), alias)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "via-sftp.csv").read_text() == "a,b\n1,2\n"

    # 6. a new host key: strict checking refuses it, with the pin unchanged.
    env.sshd.new_host_key()
    env.sshd.restart()
    refused = ssh_alias(config, alias, "true")
    assert refused.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert known.read_text().split()[2] == host_pub[1]
    result = env.cli("ssh", ep["name"], "true")
    assert result.returncode != 0

    # 7. forgotten: its block and pin go.
    assert env.cli("forget", ep["name"]).returncode == 0
    wait_for(lambda: f"Host {alias}\n" not in config.read_text(), "the block to go")
    assert alias not in known.read_text()
    assert env.cli("ssh", ep["name"], "true").returncode == 1

    uninstalled = env.cli("ssh-config", "--uninstall", "--yes")
    assert uninstalled.returncode == 0, uninstalled.stderr
    assert user_config.read_text() == "Host *\n    ServerAliveInterval 30\n"
