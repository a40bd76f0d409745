"""PuTTY's terminal on a cluster in one click: where PuTTY is, and its command line (pure).

``putty -ssh -P PORT -i KEY.ppk USER@HOST``, plus the endpoint's forwards as ``-L`` /
``-D`` when jobtunnel's own tunnel is not holding them (while it is up, those local ports
are jobtunnel's, and PuTTY would only warn that it cannot bind them). PuTTY reads only
its own key format, so the key is the ``.ppk`` beside jobtunnel's key, written by
``jobtunnel keys export --ppk`` on the first click.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import PureWindowsPath

from jobtunnel.daemon.api.schema import EndpointView

__all__ = ["find_putty", "ppk_for", "putty_command"]

Which = Callable[[str], str | None]


def find_putty(
    platform: str = sys.platform,
    which: Which = shutil.which,
    environ: Mapping[str, str] | None = None,
    exists: Callable[[str], bool] | None = None,
) -> str | None:
    """PuTTY's executable here: on PATH, else (Windows) where its installer puts it."""
    found = which("putty")
    if found or platform != "win32":
        return found
    env = os.environ if environ is None else environ
    is_file = os.path.isfile if exists is None else exists
    for var in ("ProgramFiles", "ProgramFiles(x86)", "ProgramW6432"):
        root = env.get(var)
        if root:
            candidate = str(PureWindowsPath(root, "PuTTY", "putty.exe"))
            if is_file(candidate):
                return candidate
    return None


def ppk_for(identity_file: str) -> str:
    """The PuTTY copy of an OpenSSH key: beside it, with ``.ppk``."""
    return identity_file + ".ppk"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def putty_command(
    putty: str, ep: EndpointView, ppk: str, *, with_forwards: bool = True
) -> list[str]:
    """The argv that opens PuTTY on ``ep`` with key ``ppk`` (and its forwards)."""
    argv = [putty, "-ssh", "-P", str(ep.port), "-i", ppk]
    for fwd in ep.forwards if with_forwards else ():
        bind = _bracket(fwd.bind_address or "127.0.0.1")
        local = fwd.local_port or fwd.remote_port
        if fwd.dynamic:
            argv += ["-D", f"{bind}:{local}"]
        else:
            remote = _bracket(fwd.remote_host or "localhost")
            argv += ["-L", f"{bind}:{local}:{remote}:{fwd.remote_port}"]
    argv.append(f"{ep.user}@{ep.host}")
    return argv
