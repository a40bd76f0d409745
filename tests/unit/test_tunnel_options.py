"""Key discovery and loading, auth options, TunnelOptions validation, event loop choice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh
import pytest
from jobtunnel.daemon import paths
from jobtunnel.daemon.engine.auth import (
    KeyLoader,
    agent_path,
    auth_options,
    default_identity_files,
)
from jobtunnel.daemon.engine.loop import event_loop_factory
from jobtunnel.daemon.engine.options import TunnelOptions

pytestmark = pytest.mark.timeout(60)


def test_key_loader_order_and_passphrase_asked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    own = paths.key_file()
    assert default_identity_files()[0] == own
    assert default_identity_files()[1] == tmp_path / ".ssh" / "id_ed25519"
    own.parent.mkdir(parents=True)
    plain = asyncssh.generate_private_key("ssh-ed25519")
    plain.write_private_key(own)
    own.chmod(0o600)  # write_private_key follows the umask; a 0644 key is refused
    (tmp_path / ".ssh").mkdir()
    locked = asyncssh.generate_private_key("ssh-ed25519")
    locked.write_private_key(tmp_path / ".ssh" / "id_ed25519", passphrase="s3cret")
    (tmp_path / ".ssh" / "id_ed25519").chmod(0o600)
    asked: list[str] = []

    async def ask(path: str) -> str:
        asked.append(path)
        return "s3cret"

    loader = KeyLoader(passphrase=ask)

    async def main() -> list[list[asyncssh.SSHKey]]:
        return [await loader.load("u", "h", 22, use_ssh_config=False) for _ in range(3)]

    rounds = asyncio.run(main())
    for keys in rounds:
        assert [k.get_fingerprint() for k in keys] == [
            plain.get_fingerprint(),
            locked.get_fingerprint(),
        ]
    assert asked == [str(tmp_path / ".ssh" / "id_ed25519")]

    # Without a passphrase source the encrypted key is skipped, not fatal.
    keys = asyncio.run(KeyLoader().load("u", "h", 22, use_ssh_config=False))
    assert [k.get_fingerprint() for k in keys] == [plain.get_fingerprint()]


def test_key_loader_reads_identity_file_from_ssh_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    special = asyncssh.generate_private_key("ssh-ed25519")
    special.write_private_key(ssh / "rescale_key")
    (ssh / "config").write_text("Host 10.9.*\n    IdentityFile ~/.ssh/rescale_key\n")
    loader = KeyLoader()
    assert ssh / "rescale_key" in loader.candidates("u", "10.9.0.1", 22, True)
    assert ssh / "rescale_key" not in loader.candidates("u", "10.8.0.1", 22, True)
    assert ssh / "rescale_key" not in loader.candidates("u", "10.9.0.1", 22, False)
    # A configured list wins over everything.
    assert KeyLoader([str(ssh / "x")]).candidates("u", "10.9.0.1", 22, True) == [ssh / "x"]


def test_auth_options_never_allow_interactive_auth() -> None:
    opts = auth_options([], agent=None)
    assert opts["password_auth"] is False and opts["kbdint_auth"] is False
    # asyncssh never reads ~/.ssh/config itself (it would apply Hostname, ProxyCommand).
    assert opts["config"] == [] and opts["agent_forwarding"] is False


def test_tunnel_options_defaults_and_validation() -> None:
    o = TunnelOptions(identity_files=["a"], ciphers=["aes128-ctr"], port_range=[2000, 3000])  # type: ignore[arg-type]
    assert o.identity_files == ("a",) and o.port_range == (2000, 3000)
    d = TunnelOptions()
    assert d.keepalive_interval == 5 and d.keepalive_count_max == 2
    assert d.bind_address == "127.0.0.1" and d.hold_seconds == 30
    assert d.ciphers[0] == "aes128-gcm@openssh.com"
    assert (d.initial_delay, d.max_delay, d.reset_after, d.give_up_after) == (
        0.5,
        30,
        60,
        43200,
    )
    for bad in (
        {"bind_address": ""},
        {"port_range": (10, 5)},
        {"initial_delay": 0},
        {"keepalive_count_max": 0},
        {"ciphers": ()},
        {"ciphers": ("aes128-gcm@openssh.com", "rot13")},
    ):
        with pytest.raises(ValueError):
            TunnelOptions(**bad)  # type: ignore[arg-type]


def test_event_loop_choice() -> None:
    import uvloop

    assert event_loop_factory("asyncio") is asyncio.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("auto") is uvloop.new_event_loop
    with pytest.raises(ValueError):
        event_loop_factory("trio")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", "/env.sock"),
        ("IdentityAgent ~/agent.sock", "{home}/agent.sock"),
        ("IdentityAgent SSH_AUTH_SOCK", "/env.sock"),
        ("IdentityAgent $OTHER_SOCK", "/other.sock"),
        ("IdentityAgent none", None),
    ],
)
def test_agent_path_from_ssh_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, expected: str | None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SSH_AUTH_SOCK", "/env.sock")
    monkeypatch.setenv("OTHER_SOCK", "/other.sock")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(f"Host *.example.com\n    {line}\n")
    want = expected.format(home=tmp_path) if expected else None
    assert agent_path("u", "c.example.com", 22, use_ssh_config=True) == want
    # Off, or another host: the environment's agent.
    assert agent_path("u", "c.example.com", 22, use_ssh_config=False) == "/env.sock"
    assert agent_path("u", "c.example.org", 22, use_ssh_config=True) == "/env.sock"
