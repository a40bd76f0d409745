"""Which SSH agent this machine has: ssh-agent, Pageant or Windows' OpenSSH agent.

POSIX (Linux, macOS): the socket in ``SSH_AUTH_SOCK`` (on macOS launchd sets it for the
login session's ssh-agent). Windows: ``SSH_AUTH_SOCK`` when set (a pipe or a socket),
else Pageant (found by its window, which needs ``pywin32``), else the OpenSSH agent's
pipe ``\\\\.\\pipe\\openssh-ssh-agent``. That is asyncssh's own order on Windows; this
module says which one answers, for ``jobtunnel doctor``. The OS lookups are parameters,
so every branch runs in tests on any OS.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import asyncssh

__all__ = [
    "OPENSSH_PIPE",
    "Agent",
    "AgentKey",
    "agent_keys",
    "choose_agent",
    "fingerprint",
    "pageant_running",
]

OPENSSH_PIPE = r"\\.\pipe\openssh-ssh-agent"

Kind = Literal["ssh-agent", "pageant", "openssh-windows", "none"]


@dataclass(frozen=True)
class Agent:
    """The agent found: ``path`` is what asyncssh's ``agent_path`` takes ('' for Pageant)."""

    kind: Kind
    path: str
    why: str


@dataclass(frozen=True)
class AgentKey:
    algorithm: str
    fingerprint: str
    comment: str


def pageant_running() -> bool | None:
    """Whether Pageant's window exists; None when pywin32 (needed to look) is missing."""
    try:
        # By name: pywin32 exists only on Windows (and has no type stubs here).
        win32ui = importlib.import_module("win32ui")
    except ImportError:
        return None
    try:
        win32ui.FindWindow("Pageant", "Pageant")
    except win32ui.error:
        return False
    return True


def choose_agent(
    platform: str = sys.platform,
    environ: Mapping[str, str] = os.environ,
    exists: Callable[[str], bool] = os.path.exists,
    pageant: Callable[[], bool | None] = pageant_running,
) -> Agent:
    """The agent jobtunnel's connections would use here."""
    sock = environ.get("SSH_AUTH_SOCK", "")
    if sock:
        if not exists(sock):
            return Agent("none", "", f"SSH_AUTH_SOCK names {sock}, which does not exist")
        kind: Kind = "openssh-windows" if sock.startswith("\\\\.\\pipe\\") else "ssh-agent"
        return Agent(kind, sock, f"SSH_AUTH_SOCK={sock}")
    if platform != "win32":
        return Agent("none", "", "SSH_AUTH_SOCK is not set (no ssh-agent in this session)")
    found = pageant()
    if found:
        return Agent("pageant", "", "Pageant is running")
    if exists(OPENSSH_PIPE):
        return Agent("openssh-windows", OPENSSH_PIPE, f"Windows' OpenSSH agent ({OPENSSH_PIPE})")
    if found is None:
        return Agent(
            "none", "", "no OpenSSH agent pipe, and Pageant cannot be looked for without pywin32"
        )
    return Agent("none", "", "neither Pageant nor Windows' OpenSSH agent (ssh-agent service)")


def fingerprint(blob: bytes) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key in wire format."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


async def _list_keys(path: str) -> list[AgentKey]:
    async with asyncssh.connect_agent(path) as agent:
        keys = await agent.get_keys()
    out = []
    for key in keys:
        comment = key.get_comment() or ""
        out.append(AgentKey(key.get_algorithm(), fingerprint(key.public_data), comment))
    return out


def agent_keys(agent: Agent, timeout: float = 5.0) -> list[AgentKey]:
    """The keys ``agent`` holds (asyncssh's agent client); OSError when it does not answer."""
    if agent.kind == "none":
        return []
    try:
        return asyncio.run(asyncio.wait_for(_list_keys(agent.path), timeout))
    except (asyncssh.Error, TimeoutError, ValueError) as exc:
        raise OSError(f"the agent did not answer: {exc}") from exc
