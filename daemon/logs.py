"""Logging for the daemon: a rotating file in the user log dir, plus stderr."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from . import paths

__all__ = ["log_file", "setup_logging"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_file() -> Path:
    return paths.log_dir() / "jobtunnel.log"


def setup_logging(*, verbose: bool, to_file: bool) -> Path | None:
    """Configure the root logger; returns the log file (None when not logging to one)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # asyncssh logs every packet-level step at INFO; keep its chatter for --verbose.
    logging.getLogger("asyncssh").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.INFO if verbose else logging.WARNING)
    formatter = logging.Formatter(FORMAT)
    # pythonw.exe has no stderr (sys.stderr is None): the file is then the only log.
    if sys.stderr is not None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(formatter)
        root.addHandler(console)
    if not to_file:
        return None
    path = log_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=5 << 20, backupCount=3, encoding="utf-8"
        )
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write the log file %s: %s", path, exc)
        return None
    handler.setFormatter(formatter)
    root.addHandler(handler)
    return path
