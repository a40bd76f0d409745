"""ssh.proxy_jump in the generated ssh_config, used by the REAL ssh through two real sshds:
the cluster is reached through ``rescale-bastion``, both host keys checked strictly against
jobtunnel's pins (as the daemon's own link through the bastion pinned them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon.api.schema import TunnelState, from_wire
from jobtunnel.daemon.config import Config, SshConfig
from jobtunnel.daemon.core.sshconfig import Cluster, aliases
from jobtunnel.daemon.engine.hostkeys import HostKeyStore
from jobtunnel.daemon.process.sshexport import SshExport

from tests.helpers.asyncrun import run
from tests.helpers.recorded import recorded
from tests.helpers.sshd import SshServer, ssh_alias
from tests.helpers.tunnels import fast_options, make_tunnel, running

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]

ACCEPTED = "Accepted publickey for"


def _jump(bastion: SshServer) -> str:
    return f"{bastion.user}@127.0.0.1:{bastion.port}"


def _written(store: HostKeyStore, sshd: SshServer, bastion: SshServer, out: Path) -> str:
    """The daemon's two files for the one live endpoint, the sshd; its alias."""
    base = from_wire(recorded("up"))
    [ep] = base.endpoints
    assert ep.state == TunnelState.UP
    cluster = Cluster(sshd.user, "127.0.0.1", sshd.port)
    alias = aliases([cluster])[cluster.key]
    ep = dataclasses.replace(
        ep, user=sshd.user, host="127.0.0.1", port=sshd.port, job_id=None, ssh_alias=alias
    )
    snapshot = dataclasses.replace(base, endpoints=(ep,))
    config = Config(ssh=SshConfig(identity_files=[str(sshd.client_key)], proxy_jump=_jump(bastion)))
    SshExport(store, out / "ssh_config", out / "ssh_known_hosts").update(snapshot, config)
    return alias


def test_real_ssh_reaches_the_cluster_through_the_bastion(
    sshd: SshServer, bastion: SshServer, tmp_path: Path
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")

    async def pin_both() -> None:
        # The daemon's own link through the bastion pins both keys, each under its identity.
        opts = fast_options(sshd, proxy_jump=_jump(bastion))
        async with running(make_tunnel(sshd, ["0:127.0.0.1:9"], tmp_path, options=opts), 20):
            pass

    run(pin_both(), 60)
    out = tmp_path / "out"
    alias = _written(store, sshd, bastion, out)
    config = out / "ssh_config"
    text = config.read_text()
    assert "Host rescale-bastion\n" in text and "    ProxyJump rescale-bastion\n" in text
    hop_pub = Path(f"{bastion.host_key}.pub").read_text().split()
    host_pub = Path(f"{sshd.host_key}.pub").read_text().split()
    assert sorted((out / "ssh_known_hosts").read_text().splitlines()) == sorted(
        [f"rescale-bastion {hop_pub[0]} {hop_pub[1]}", f"{alias} {host_pub[0]} {host_pub[1]}"]
    )

    logins = bastion.log_text().count(ACCEPTED)
    result = ssh_alias(config, alias, "echo", "ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    assert bastion.log_text().count(ACCEPTED) == logins + 1  # it went through the bastion

    # It needs the bastion: without it the cluster, though up, is not reached.
    bastion.stop()
    assert ssh_alias(config, alias, "true").returncode != 0


def test_a_wrong_bastion_pin_fails_before_the_cluster_is_reached(
    sshd: SshServer, bastion: SshServer, tmp_path: Path
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    store.pin(sshd.user, "127.0.0.1", sshd.port, asyncssh.read_public_key(f"{sshd.host_key}.pub"))
    wrong = asyncssh.generate_private_key("ssh-ed25519")
    store.pin(bastion.user, "127.0.0.1", bastion.port, wrong)
    out = tmp_path / "out"
    alias = _written(store, sshd, bastion, out)
    cluster_log = len(sshd.log_text())

    result = ssh_alias(out / "ssh_config", alias, "echo", "ok")
    assert result.returncode != 0 and result.stdout == ""
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    assert ACCEPTED not in bastion.log_text()
    assert "Connection from" not in sshd.log_text()[cluster_log:]
