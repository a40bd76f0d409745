"""Missing dependencies: a skip on a developer's machine, a failure under CI=true."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

from .sshd import sshd_available


def dependency_missing(why: str) -> NoReturn:
    """Skip for a missing dependency, but FAIL under CI=true: CI never passes by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {why}")
    pytest.skip(why)


def require_tool(name: str, package: str) -> str:
    """The tool's path; :func:`dependency_missing` without it."""
    path = shutil.which(name)
    if path is None:
        dependency_missing(f"{name} is not installed (Debian package {package})")
    return path


def require_sshd() -> None:
    why = sshd_available()
    if why is not None:
        dependency_missing(f"the test sshd cannot run: {why}")
