"""Files jobtunnel writes: atomic replacement, create-only writes, private folders and keys.

Every file the daemon keeps (state, pinned host keys, the control token, login-service
files) goes through :func:`replace_atomically`, so a crash or a full disk leaves the old
file or the new one, never half of either.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import stat
import sys
import tempfile
from pathlib import Path

__all__ = [
    "permission_problem",
    "private_dir",
    "private_dir_posix",
    "private_dir_windows",
    "replace_atomically",
    "write_new",
]

log = logging.getLogger(__name__)


def write_new(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Create ``path`` atomically (temp file, fsync, hard link); FileExistsError if it exists.

    The temp file is made with ``mode`` from the start (mkstemp gives 0600, chmod widens it
    only when asked), so a private key is never readable by others, whatever the umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if sys.platform != "win32":
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if path exists, unlike rename
    finally:
        os.unlink(tmp)


def replace_atomically(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: all or nothing, fsynced, then the folder flushed.

    The temp file has ``mode`` from its creation (mkstemp makes it 0600 whatever the
    umask). OSError propagates with the temp file removed and ``path`` untouched.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        try:
            if sys.platform != "win32" and mode != 0o600:
                os.fchmod(fd, mode)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError as gone:
            if gone.errno != errno.ENOENT:
                log.warning("cannot remove temporary file %s: %s", tmp, gone.strerror)
        raise
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; Windows cannot open a folder for it (NTFS's rename is)."""
    if sys.platform != "win32":
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            log.warning("cannot open %s to flush it: %s", folder, exc.strerror)
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                log.warning("cannot flush directory %s: %s", folder, exc.strerror)
        finally:
            os.close(fd)


def private_dir(folder: Path) -> bool:
    """Create ``folder`` private to the user, or tighten it; False if it is shared and was left.

    POSIX: mode 0700. A shared folder such as /tmp (sticky or writable by others) is never
    tightened: that would break everyone else. Windows: see :func:`private_dir_windows`.
    The caller decides whether False is an error.
    """
    if sys.platform == "win32":
        return private_dir_windows(folder, os.environ.get("USERPROFILE"))
    else:
        return private_dir_posix(folder)


def private_dir_posix(folder: Path) -> bool:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = folder.stat().st_mode
    if mode & (stat.S_ISVTX | stat.S_IWOTH):
        return False
    if stat.S_IMODE(mode) != 0o700:
        os.chmod(folder, 0o700)
    return True


def private_dir_windows(folder: Path, profile: str | None) -> bool:
    """Private by the user profile's ACL: True only for a folder inside ``profile``.

    Everything jobtunnel keeps lives under ``%LOCALAPPDATA%`` (platformdirs), whose
    inherited ACL grants the user, SYSTEM and Administrators only, the same reliance
    Windows' own OpenSSH has for ``~/.ssh``. jobtunnel writes no ACL itself (no
    ``icacls``): a wrong one could lock the user out or leave the folder open, and none
    can be tried here. A folder outside the profile (``XDG_*`` or ``--config`` pointing
    elsewhere) is reported as shared.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if not profile:
        return False
    try:
        folder.resolve().relative_to(Path(profile).resolve())
    except ValueError:
        return False
    return True


def permission_problem(path: Path) -> str | None:
    """Why a private key must not be used (readable by group or others), with the fix.

    As OpenSSH does, only keys owned by the current user are checked, and only on POSIX
    (on Windows the key's folder is private by the profile's ACL, see private_dir_windows).
    """
    if sys.platform == "win32":
        return None
    else:
        return _posix_permission_problem(path, os.getuid())


def _posix_permission_problem(path: Path, uid: int) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if st.st_uid != uid or not st.st_mode & 0o077:
        return None
    return (
        f"private key {path} is readable by others (mode {st.st_mode & 0o777:04o}); "
        f"refused, as OpenSSH does. Fix: chmod 600 {shlex.quote(str(path))}"
    )
