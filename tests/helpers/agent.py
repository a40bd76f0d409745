"""A real OpenSSH ``ssh-agent`` for a test, holding one key added with ``ssh-add``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from .deps import require_tool

__all__ = ["agent_with"]


@contextlib.contextmanager
def agent_with(key: Path, tmp_path: Path) -> Iterator[str]:
    """The socket of an ssh-agent holding ``key``; the agent is stopped afterwards."""
    require_tool("ssh-agent", "openssh-client")
    require_tool("ssh-add", "openssh-client")
    sock = str(tmp_path / "agent.sock")
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": sock}
        subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)
