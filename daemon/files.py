"""Creating files that must never replace an existing one (configs, keys)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_new"]


def write_new(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Create ``path`` atomically (temp file, fsync, hard link); FileExistsError if it exists.

    The temp file is made with ``mode`` from the start (mkstemp gives 0600, chmod widens it
    only when asked), so a private key is never readable by others, whatever the umask.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if os.name == "posix":
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if path exists, unlike rename
    finally:
        os.unlink(tmp)
