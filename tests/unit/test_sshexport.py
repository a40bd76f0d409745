"""The daemon's ssh_config files: rewritten only when their text changes, an ended job's
block gone, a failed write logged once with the old files kept; and the exec seam."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import NoReturn

import asyncssh
import pytest
from jobtunnel.daemon.api.schema import StatusSnapshot, TunnelState, from_wire
from jobtunnel.daemon.cli import sshconfig as cli
from jobtunnel.daemon.cli.launch import hand_over
from jobtunnel.daemon.config import Config, SshConfig
from jobtunnel.daemon.engine.hostkeys import HostKeyStore
from jobtunnel.daemon.process.sshexport import SshExport

from tests.helpers.recorded import recorded


def _snapshot(*states: TunnelState) -> StatusSnapshot:
    base = from_wire(recorded("up"))
    [ep] = base.endpoints
    endpoints = tuple(
        dataclasses.replace(ep, port=2200 + i, state=s, ssh_alias=f"rescale-job{i}", job_id=None)
        for i, s in enumerate(states)
    )
    return dataclasses.replace(base, endpoints=endpoints)


def test_rewritten_only_on_change_and_ended_blocks_go(tmp_path: Path) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    key = asyncssh.generate_private_key("ssh-ed25519")
    store.pin("root", "127.0.0.1", 2200, key)
    export = SshExport(store, tmp_path / "out" / "ssh_config", tmp_path / "out" / "kh")
    config = Config(ssh=SshConfig(identity_files=["~/k"]))
    export.update(_snapshot(TunnelState.UP, TunnelState.PENDING), config)
    text = export.config_file.read_text()
    assert "Host rescale-job0\n" in text and "Host rescale-job1\n" in text
    assert f'IdentityFile "{Path("~/k").expanduser()}"' in text
    pub = key.export_public_key("openssh").decode().split()
    assert export.known_hosts_file.read_text() == f"rescale-job0 {pub[0]} {pub[1]}\n"
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700

    stamp = export.config_file.stat().st_mtime_ns, export.config_file.stat().st_ino
    export.update(_snapshot(TunnelState.UP, TunnelState.PENDING), config)
    assert (export.config_file.stat().st_mtime_ns, export.config_file.stat().st_ino) == stamp

    export.update(_snapshot(TunnelState.UP, TunnelState.ENDED), config)
    assert "rescale-job1" not in export.config_file.read_text()

    store.forget("root", "127.0.0.1", 2200)
    export.update(_snapshot(TunnelState.UP, TunnelState.ENDED), config)
    assert export.known_hosts_file.read_text() == ""


def test_a_failed_write_keeps_the_old_files_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = SshExport(HostKeyStore(tmp_path / "kh0"), tmp_path / "ssh_config", tmp_path / "kh")
    export.update(_snapshot(TunnelState.UP), Config())
    before = export.config_file.read_text()

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("jobtunnel.daemon.process.sshexport.replace_atomically", full)
    with caplog.at_level(logging.ERROR):
        export.update(_snapshot(TunnelState.UP, TunnelState.UP), Config())
        export.update(_snapshot(TunnelState.UP, TunnelState.UP), Config())
    assert [r.getMessage() for r in caplog.records] == [
        f"ssh_config: cannot write {export.config_file}: No space left on device"
    ]
    assert export.config_file.read_text() == before
    monkeypatch.undo()
    export.update(_snapshot(TunnelState.UP, TunnelState.UP), Config())
    assert "rescale-job1" in export.config_file.read_text() and export.error is None


def test_hand_over_execs_on_posix_and_waits_on_windows() -> None:
    calls: list[tuple[str, list[str]]] = []

    def execvp(file: str, argv: list[str]) -> NoReturn:
        calls.append((file, argv))
        raise SystemExit(0)

    with pytest.raises(SystemExit):
        hand_over(["ssh", "-F", "cfg", "rescale-a"], windows=False, execvp=execvp)
    assert calls == [("ssh", ["ssh", "-F", "cfg", "rescale-a"])]
    ran: list[list[str]] = []
    status = hand_over(
        ["ssh", "x"], windows=True, execvp=execvp, run=lambda a: ran.append(list(a)) or 7
    )
    assert status == 7 and ran == [["ssh", "x"]] and len(calls) == 1


def test_scp_and_sftp_words_that_name_a_cluster() -> None:
    words = ["-P", "22", "-o", "A=b:c", "-r", "qpWia:out", "./local", "C:x", "/tmp/a:b"]
    assert [words[i] for i in cli._positionals("scp", words)] == [
        "qpWia:out",
        "./local",
        "C:x",
        "/tmp/a:b",
    ]
    assert cli._remote("qpWia:out") == ("qpWia", ":", "out")
    assert cli._remote("./local") is None and cli._remote("C:x") is None
    assert cli._remote("/tmp/a:b") is None
    assert cli._positionals("sftp", ["-b", "batch", "qpWia"]) == [2]


def test_the_bastion_and_its_pin_come_from_proxy_jump_and_a_bad_one_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = HostKeyStore(tmp_path / "known_hosts")
    key = asyncssh.generate_private_key("ssh-ed25519")
    # Pinned as the daemon's link pins it: the host as parse_user_hostport gives it.
    store.pin("me", "jump.example.org", 2222, key)
    export = SshExport(store, tmp_path / "out" / "ssh_config", tmp_path / "out" / "kh")
    config = Config(ssh=SshConfig(proxy_jump="me@Jump.Example.org:2222"))
    export.update(_snapshot(TunnelState.UP), config)
    text = export.config_file.read_text()
    assert "Host rescale-bastion\n    HostName jump.example.org\n    Port 2222\n" in text
    assert text.count("    ProxyJump rescale-bastion\n") == 1
    pub = key.export_public_key("openssh").decode().split()
    assert export.known_hosts_file.read_text() == f"rescale-bastion {pub[0]} {pub[1]}\n"

    bad = Config(ssh=SshConfig(proxy_jump="me%d@jump.example.org"))
    with caplog.at_level(logging.WARNING):
        export.update(_snapshot(TunnelState.UP), bad)
        export.update(_snapshot(TunnelState.UP, TunnelState.UP), bad)
    [record] = caplog.records
    assert record.getMessage().startswith(
        "ssh_config: no ProxyJump in any block, 'me%d'@'jump.example.org' port 22 not written: "
        "the bastion (ssh.proxy_jump): the username may hold only"
    )
    text = export.config_file.read_text()
    assert "ProxyJump" not in text and "rescale-bastion" not in text
    assert "Host rescale-job1\n" in text
