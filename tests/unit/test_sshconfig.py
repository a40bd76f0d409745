"""The ssh_config generator: aliases, quoting, and what an attacker's log can (not) write.

The user and host come from untrusted log files. The real OpenSSH (``ssh -G``, which
parses a config and prints the result without connecting) is the judge of what a
generated file means."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from jobtunnel.daemon.core.sshconfig import Cluster, Settings, aliases, export, quote

from tests.helpers.deps import dependency_missing

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGgVb1Yk2bQ2bP1zt4ojbqtKUGyY6Nn6H5xGMZ5v1a3M"
SETTINGS = Settings(("/home/me/.local/share/jobtunnel/id_ed25519",), "/home/me/kh")
# Each tries to end the value and add a directive of its own, or turn one into two words.
HOSTILE = [
    "x\nProxyCommand touch /tmp/pwned",
    "x\rProxyCommand touch /tmp/pwned",
    "x ProxyCommand=touch",
    "x\tLocalCommand=touch",
    'x" ProxyCommand "touch',
    "x'y",
    "x#comment",
    "x%d",
    "x=y",
    "x,y",
    "x*",
    "!x",
    "-oProxyCommand=touch",
    ".hidden",
    "",
    "x\\y",
    "x\0y",
    "x\u2028ProxyCommand touch",
    "é",
]


def _ssh_g(config: str, alias: str, tmp_path: Path) -> dict[str, list[str]]:
    if shutil.which("ssh") is None:
        dependency_missing("ssh is not installed (Debian: openssh-client)")
    path = tmp_path / "ssh_config"
    path.write_text(config)
    result = subprocess.run(
        ["ssh", "-G", "-F", str(path), alias],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    parsed: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        parsed.setdefault(key, []).append(value)
    return parsed


def test_block_as_openssh_reads_it(tmp_path: Path) -> None:
    job = Cluster("uprod_qpWia", "107.23.132.81", 32100, "qpWia")
    result = export([job], {job.key: KEY}, SETTINGS)
    assert result.refused == ()
    assert result.known_hosts == f"rescale-qpWia {KEY}\n"
    got = _ssh_g(result.config, "rescale-qpWia", tmp_path)
    assert got["hostname"] == ["107.23.132.81"]
    assert got["port"] == ["32100"]
    assert got["user"] == ["uprod_qpWia"]
    assert got["identityfile"] == list(SETTINGS.identity_files)
    assert got["identitiesonly"] == ["yes"]
    assert got["userknownhostsfile"] == ["/home/me/kh"]
    assert got["globalknownhostsfile"] == ["none"]
    assert got["hostkeyalias"] == ["rescale-qpwia"]  # known_hosts names are without case
    assert got["stricthostkeychecking"] == ["true"]
    assert got["updatehostkeys"] == ["false"]
    assert "proxycommand" not in got
    # Another name matches nothing of ours.
    other = _ssh_g(result.config, "rescale-other", tmp_path)
    assert other["hostname"] == ["rescale-other"]


def test_aliases_job_id_fallback_and_collisions() -> None:
    a = Cluster("uprod_qpWia", "1.2.3.4", 22, "qpWia")
    same_job_moved = Cluster("uprod_qpWia", "5.6.7.8", 22, "qpWia")
    other_case = Cluster("uprod_qpwia", "1.2.3.4", 22, "qpwia")
    manual = Cluster("me", "2001:db8::1", 2222, None)
    got = aliases([a, same_job_moved, other_case, manual])
    assert got == {
        a.key: "rescale-qpWia",
        same_job_moved.key: "rescale-uprod_qpWia-5.6.7.8-22",
        other_case.key: "rescale-uprod_qpwia-1.2.3.4-22",
        manual.key: "rescale-me-2001-db8-1-2222",
    }
    # The long form taken too (without case): numbered.
    twin = Cluster("ME", "2001:DB8::1", 2222, None)
    assert aliases([manual, twin])[twin.key] == "rescale-ME-2001-DB8-1-2222-2"


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_user_or_host_never_adds_a_directive(value: str, tmp_path: Path) -> None:
    good = Cluster("uprod_good", "1.2.3.4", 22, "good")
    bad_user = Cluster(value, "1.2.3.4", 22, "evil")
    bad_host = Cluster("uprod_evil2", value, 22, "evil2")
    bad_job = Cluster("uprod_x", "1.2.3.5", 22, value)  # a job id is sanitised, not refused
    result = export([good, bad_user, bad_host, bad_job], {}, SETTINGS)
    refused = {c for c, _ in result.refused}
    assert bad_user in refused and bad_host in refused
    assert all(why for _, why in result.refused)
    assert value not in result.config or value in ("", "x")
    # Every line is a comment, a Host line, or one of the keywords we write.
    ours = {
        "Host",
        "HostName",
        "Port",
        "User",
        "IdentityFile",
        "IdentitiesOnly",
        "UserKnownHostsFile",
        "GlobalKnownHostsFile",
        "HostKeyAlias",
        "StrictHostKeyChecking",
        "CheckHostIP",
        "UpdateHostKeys",
    }
    for line in result.config.split("\n"):
        if line.strip() and not line.startswith("#"):
            assert line.split()[0] in ours, line
    assert "\r" not in result.config and "\0" not in result.config
    for alias in aliases([good, bad_job]).values():
        got = _ssh_g(result.config, alias, tmp_path)
        assert "proxycommand" not in got and "localcommand" not in got
        assert got["permitlocalcommand"] == ["no"]
        assert len(got["hostname"]) == 1 and got["hostname"][0].startswith("1.2.3.")


def test_paths_are_quoted_as_openssh_reads_them(tmp_path: Path) -> None:
    odd = str(tmp_path / 'My Keys/k"e%y\\#=z x')
    job = Cluster("uprod_a", "1.2.3.4", 22, "a")
    result = export([job], {}, Settings((odd,), str(tmp_path / "known hosts")))
    got = _ssh_g(result.config, "rescale-a", tmp_path)
    # ssh -G prints IdentityFile before it expands %% (to %) when it loads the key.
    assert got["identityfile"] == [odd.replace("%", "%%")]
    assert got["userknownhostsfile"] == [str(tmp_path / "known hosts")]
    with pytest.raises(ValueError, match="line break"):
        quote("a\nb")


def test_pins_are_keyed_by_alias_and_bad_pin_text_is_left_out() -> None:
    a = Cluster("uprod_a", "1.2.3.4", 22, "a")
    b = Cluster("uprod_b", "1.2.3.4", 22, "b")
    c = Cluster("uprod_c", "1.2.3.4", 22, "c")
    pins = {a.key: KEY, b.key: "ssh-ed25519 AAAA\nrescale-a ssh-rsa AAAA", c.key: "x"}
    result = export([a, b, c], pins, SETTINGS)
    assert result.known_hosts == f"rescale-a {KEY}\n"
    assert result.config.count("\nHost ") == 3  # blocks without a pin stay: ssh refuses them


BASTION = Cluster("me", "jump.example.org", 2222)
JUMP_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm8Q2cV1l4zZ3e0O0mS7b5mYyFv0uQx2KX6o8Kq7n1b"


def test_bastion_block_its_pin_and_proxy_jump_as_openssh_reads_them(tmp_path: Path) -> None:
    job = Cluster("uprod_qpWia", "107.23.132.81", 32100, "qpWia")
    settings = Settings(SETTINGS.identity_files, SETTINGS.known_hosts, BASTION)
    result = export([job], {job.key: KEY, BASTION.key: JUMP_KEY}, settings)
    assert result.refused == ()
    assert result.known_hosts == f"rescale-bastion {JUMP_KEY}\nrescale-qpWia {KEY}\n"
    assert result.config.count("\nHost ") == 2
    got = _ssh_g(result.config, "rescale-qpWia", tmp_path)
    assert got["proxyjump"] == ["rescale-bastion"]
    assert got["hostname"] == ["107.23.132.81"] and got["hostkeyalias"] == ["rescale-qpwia"]
    hop = _ssh_g(result.config, "rescale-bastion", tmp_path)
    assert hop["hostname"] == ["jump.example.org"]
    assert hop["port"] == ["2222"] and hop["user"] == ["me"]
    assert hop["identityfile"] == list(SETTINGS.identity_files)
    assert hop["identitiesonly"] == ["yes"]
    assert hop["userknownhostsfile"] == ["/home/me/kh"]
    assert hop["globalknownhostsfile"] == ["none"]
    assert hop["hostkeyalias"] == ["rescale-bastion"]
    assert hop["stricthostkeychecking"] == ["true"]
    assert "proxyjump" not in hop and "proxycommand" not in hop  # no loop
    # Without a pin the bastion's block stays (ssh refuses it until jobtunnel pinned it).
    unpinned = export([job], {job.key: KEY}, settings)
    assert unpinned.known_hosts == f"rescale-qpWia {KEY}\n"
    assert "Host rescale-bastion\n" in unpinned.config
    # Without a bastion: no ProxyJump anywhere.
    assert "ProxyJump" not in export([job], {}, SETTINGS).config


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_bastion_is_refused_and_nothing_jumps(value: str, tmp_path: Path) -> None:
    job = Cluster("uprod_good", "1.2.3.4", 22, "good")
    for bastion in (Cluster(value, "jump", 22), Cluster("me", value, 22)):
        settings = Settings(SETTINGS.identity_files, SETTINGS.known_hosts, bastion)
        result = export([job], {bastion.key: JUMP_KEY, job.key: KEY}, settings)
        [(refused, why)] = result.refused
        assert refused == bastion and why.startswith("the bastion (ssh.proxy_jump): ")
        assert "rescale-bastion" not in result.config and "ProxyJump" not in result.config
        assert result.known_hosts == f"rescale-good {KEY}\n"
        assert value not in result.config or value in ("", "x")
        got = _ssh_g(result.config, "rescale-good", tmp_path)
        assert "proxyjump" not in got and "proxycommand" not in got
    bad_port = Cluster("me", "jump", 0)
    result = export([job], {}, Settings((), SETTINGS.known_hosts, bad_port))
    assert result.refused == (
        (bad_port, "the bastion (ssh.proxy_jump): port 0 is outside 1-65535"),
    )


def test_the_bastion_alias_is_never_a_clusters() -> None:
    job = Cluster("uprod_bastion", "1.2.3.4", 22, "bastion")
    other_case = Cluster("uprod_x", "1.2.3.4", 22, "Bastion")
    got = aliases([job, other_case])
    assert got == {
        job.key: "rescale-uprod_bastion-1.2.3.4-22",
        other_case.key: "rescale-uprod_x-1.2.3.4-22",
    }
    settings = Settings((), SETTINGS.known_hosts, BASTION)
    result = export([job, other_case], {}, settings)
    assert result.refused == ()
    assert result.config.count("Host rescale-bastion\n") == 1
    # Names handed in (the status's) that take the bastion's alias: that block is left out.
    names = {job.key: "rescale-bastion", other_case.key: "rescale-BASTION"}
    result = export([job, other_case], {job.key: KEY}, settings, names)
    assert [c for c, _ in result.refused] == [job, other_case]
    assert all("is the bastion's" in why for _, why in result.refused)
    assert result.config.count("\nHost ") == 1 and result.known_hosts == ""
