"""``jobtunnel ssh-config --install/--uninstall``: the Include line in ``~/.ssh/config``.

Install puts one line at the top of the file (created 0600 in a 0700 ``~/.ssh`` when
there is none), after a backup of the file beside it; uninstall removes exactly that
line. Either changes nothing, and says why in one sentence, when the file does not parse
(``ssh -G`` is the judge where ssh is installed), the line is already there (or already
gone), or ``~/.ssh`` cannot be written. A symlinked config is edited where it points.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..core import sshinclude
from ..files import replace_atomically, write_new

__all__ = ["Outcome", "SshIncludeError", "install", "uninstall", "user_config"]

Ask = Callable[[str], "bool | None"]


class SshIncludeError(Exception):
    """Nothing was changed; the message says why (and what to do)."""


@dataclass(frozen=True)
class Outcome:
    changed: bool
    message: str
    backup: Path | None = None


def user_config() -> Path:
    """The user's OpenSSH client config, ``~/.ssh/config``."""
    return Path.home() / ".ssh" / "config"


def _read(config: Path) -> str:
    try:
        return config.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError:
        raise SshIncludeError(f"{config} is not UTF-8 text; nothing changed") from None
    except OSError as exc:
        raise SshIncludeError(f"cannot read {config}: {exc.strerror}; nothing changed") from None


def _parse_check(config: Path, text: str) -> None:
    problem = sshinclude.syntax_problem(text)
    if problem is not None:
        raise SshIncludeError(
            f"{config}:{problem[0]}: {problem[1]}; fix the file first (nothing changed)"
        )
    ssh = shutil.which("ssh")
    if ssh is None or not text:
        return
    # ssh -G parses the file as every later ssh would, and connects nowhere.
    result = subprocess.run(
        [ssh, "-G", "-F", str(config), "jobtunnel-config-check.invalid"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        why = " ".join(result.stderr.split()) or f"ssh -G exited {result.returncode}"
        raise SshIncludeError(
            f"OpenSSH cannot read {config}: {why}; fix it first (nothing changed)"
        )


def _backup(config: Path) -> Path:
    for n in range(1, 1000):
        candidate = config.with_name(f"{config.name}.before-jobtunnel" + (f".{n}" if n > 1 else ""))
        try:
            write_new(candidate, config.read_bytes(), mode=0o600)
        except FileExistsError:
            continue
        return candidate
    raise SshIncludeError(f"too many backups of {config} beside it; nothing changed")


def _write(config: Path, text: str, existed: bool) -> Path | None:
    """Back up, then replace atomically; on any failure nothing is left changed."""
    folder = config.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = config.stat().st_mode & 0o777 if existed else 0o600
        backup = _backup(config) if existed else None
    except OSError as exc:
        raise SshIncludeError(
            f"cannot write in {folder}: {exc.strerror}; nothing changed"
        ) from None
    try:
        replace_atomically(config, text, mode=mode)
    except OSError as exc:
        if backup is not None:
            with contextlib.suppress(OSError):
                backup.unlink()
        raise SshIncludeError(f"cannot write {config}: {exc.strerror}; nothing changed") from None
    return backup


def install(ask: Ask, config: Path | None = None, target: Path | None = None) -> Outcome:
    """Add the Include line for ``target`` (jobtunnel's ssh_config) at the top of
    ``config``, after ``ask`` agreed (None from it: no terminal to ask on)."""
    link = config or user_config()
    config = link.resolve() if link.is_symlink() else link
    target = target or paths.ssh_config_file()
    text = _read(config)
    found = sshinclude.includes(text, str(target))
    if found is not None:
        return Outcome(False, f"{config}:{found} already includes {target}; nothing changed")
    try:
        line = sshinclude.include_line(str(target))
    except ValueError as exc:
        raise SshIncludeError(f"{exc}; nothing changed") from None
    _parse_check(config, text)
    answer = ask(f"Add this line at the top of {config}?\n  {line}\n")
    if answer is None:
        raise SshIncludeError("not asking without a terminal: add --yes (nothing changed)")
    if not answer:
        return Outcome(False, "nothing changed")
    existed = config.exists()
    backup = _write(config, sshinclude.add(text, line), existed)
    saved = f" (the old file is {backup})" if backup else ""
    return Outcome(True, f"added the Include line to {config}{saved}", backup)


def uninstall(ask: Ask, config: Path | None = None, target: Path | None = None) -> Outcome:
    """Remove exactly the line :func:`install` added."""
    link = config or user_config()
    config = link.resolve() if link.is_symlink() else link
    target = target or paths.ssh_config_file()
    text = _read(config)
    try:
        line = sshinclude.include_line(str(target))
    except ValueError as exc:
        raise SshIncludeError(f"{exc}; nothing changed") from None
    kept = sshinclude.remove(text, line)
    if kept is None:
        return Outcome(False, f"{config} has no line added by jobtunnel; nothing changed")
    answer = ask(f"Remove this line from {config}?\n  {line}\n")
    if answer is None:
        raise SshIncludeError("not asking without a terminal: add --yes (nothing changed)")
    if not answer:
        return Outcome(False, "nothing changed")
    backup = _write(config, kept, True)
    saved = f" (the old file is {backup})"
    return Outcome(True, f"removed the Include line from {config}{saved}", backup)
