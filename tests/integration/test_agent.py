"""Which agent doctor finds and which keys it holds: a real ssh-agent with a key added
by ssh-add, read through asyncssh's agent client; Windows' choices with the lookups
injected (Pageant's window, the OpenSSH pipe)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from jobtunnel.daemon.engine.agent import OPENSSH_PIPE, Agent, agent_keys, choose_agent
from jobtunnel.daemon.setup import doctor

from tests.helpers.agent import agent_with
from tests.helpers.deps import require_tool


@pytest.fixture
def key(tmp_path: Path) -> Path:
    require_tool("ssh-keygen", "openssh-client")
    path = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", str(path)],
        check=True,
    )
    return path


def test_doctor_names_the_ssh_agent_and_its_keys(key: Path, tmp_path: Path) -> None:
    listed = subprocess.run(
        ["ssh-keygen", "-lf", f"{key}.pub"], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    with agent_with(key, tmp_path) as sock:
        found = choose_agent("linux", {"SSH_AUTH_SOCK": sock})
        assert found == Agent("ssh-agent", sock, f"SSH_AUTH_SOCK={sock}")
        held = agent_keys(found)
        assert [(k.algorithm, k.fingerprint, k.comment) for k in held] == [
            ("ssh-ed25519", listed, "me@laptop")
        ]
        check = doctor.check_agent(lambda: found)
    assert check.status == "ok"
    assert (
        check.detail
        == f"ssh-agent (SSH_AUTH_SOCK={sock}): 1 key(s): ssh-ed25519 {listed} me@laptop"
    )
    # The agent is gone: said, not raised.
    gone = doctor.check_agent(lambda: found)
    assert gone.status == "info" and "does not answer" in gone.detail


def test_posix_without_an_agent() -> None:
    assert choose_agent("darwin", {}).kind == "none"
    stale = choose_agent("linux", {"SSH_AUTH_SOCK": "/nonexistent/agent"})
    assert stale.kind == "none" and "does not exist" in stale.why
    assert doctor.check_agent(lambda: stale).detail.startswith("none: SSH_AUTH_SOCK names")


def test_windows_prefers_pageant_then_the_openssh_pipe() -> None:
    pipe_only = {OPENSSH_PIPE}
    pageant = choose_agent("win32", {}, lambda p: False, lambda: True)
    assert pageant == Agent("pageant", "", "Pageant is running")  # asyncssh's '' = Pageant
    openssh = choose_agent("win32", {}, pipe_only.__contains__, lambda: False)
    assert openssh.kind == "openssh-windows" and openssh.path == OPENSSH_PIPE
    neither = choose_agent("win32", {}, lambda p: False, lambda: False)
    assert neither.kind == "none" and "Pageant" in neither.why
    no_pywin32 = choose_agent("win32", {}, lambda p: False, lambda: None)
    assert no_pywin32.kind == "none" and "pywin32" in no_pywin32.why
    # Without pywin32 the OpenSSH pipe is still found.
    assert choose_agent("win32", {}, pipe_only.__contains__, lambda: None).kind == (
        "openssh-windows"
    )
    # SSH_AUTH_SOCK wins where it is set (a pipe of its own, say).
    own = r"\\.\pipe\my-agent"
    chosen = choose_agent("win32", {"SSH_AUTH_SOCK": own}, {own}.__contains__, lambda: True)
    assert chosen.kind == "openssh-windows" and chosen.path == own


def test_an_empty_agent_says_how_to_add_a_key() -> None:
    pageant = Agent("pageant", "", "Pageant is running")
    check = doctor.check_agent(lambda: pageant, lambda a: [])
    assert check.detail.endswith("holds no keys") and "Pageant" in check.fix
    agent = Agent("ssh-agent", "/s", "SSH_AUTH_SOCK=/s")
    assert doctor.check_agent(lambda: agent, lambda a: []).fix == "ssh-add KEYFILE"
