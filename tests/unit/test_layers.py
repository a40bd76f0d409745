"""The import contracts (pyproject's [tool.importlinter]) hold, and break when they should.

The broken cases run import-linter on a copy of the packages with one bad import added, so
a contract that stopped checking anything (a renamed package, a typo) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the ``jobtunnel`` namespace laid out under ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in ("daemon", "tray"):
        shutil.copytree(
            ROOT / package,
            tree / "jobtunnel" / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def add_import(module: Path, line: str) -> None:
    text = module.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    module.write_text(head + sep + line + "\n" + rest if sep else line + "\n" + text)


def test_the_contracts_hold_for_the_real_tree(tmp_path: Path) -> None:
    result = lint(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("daemon/core/forward.py", "import asyncio", "core is pure"),
        ("daemon/core/policy.py", "import time", "core is pure"),
        ("daemon/core/forward.py", "from .. import config", "core is pure"),
        ("tray/menu.py", "from jobtunnel.daemon.engine import tunnel", "the tray is a client"),
        ("daemon/engine/hostkeys.py", "from ..process import store", "layers"),
        ("daemon/api/wire.py", "from ..engine import hostkeys", "layers"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = copy_tree(tmp_path)
    target = tree / "jobtunnel" / module
    add_import(target, line)
    result = lint(tree)
    assert result.returncode != 0, result.stdout
    broken = result.stdout[result.stdout.index("Broken contracts") :]
    assert contract in broken, result.stdout
