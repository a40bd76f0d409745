"""jobtunnel init: creates what is missing, changes nothing on a second run."""

from __future__ import annotations

from pathlib import Path

import pytest
from jobtunnel.daemon import paths
from jobtunnel.daemon.cli import main
from jobtunnel.daemon.config import default_config_text
from jobtunnel.daemon.setup import firstrun, keys

pytestmark = pytest.mark.timeout(60)


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_init_from_nothing_then_again(isolated_home: Path) -> None:
    first = firstrun.init()
    key = paths.key_file()
    assert first.key == key and key.exists() and Path(f"{key}.pub").exists()
    assert paths.config_file().read_text() == default_config_text()
    assert first.folders == [isolated_home / "JobLogs"] and first.folders[0].is_dir()
    assert len(first.done) == 3
    assert first.public is not None and first.public.line.startswith("ssh-ed25519 ")

    before = snapshot(isolated_home)
    second = firstrun.init()
    assert second.done == []
    assert second.public == first.public
    assert snapshot(isolated_home) == before


def test_configured_keys_are_not_replaced(isolated_home: Path, tmp_path: Path) -> None:
    mine = keys.generate(path=tmp_path / "work_key")
    paths.config_file().parent.mkdir(parents=True)
    paths.config_file().write_text(
        f'[ssh]\nidentity_files = ["{mine}"]\n[watch]\nfolders = ["~/a", "~/b"]\n'
    )
    result = firstrun.init()
    assert result.key == mine
    assert keys.own_keys() == []
    assert (isolated_home / "a").is_dir() and (isolated_home / "b").is_dir()


def test_broken_config_still_makes_the_key_and_exits_1(
    isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths.config_file().parent.mkdir(parents=True)
    paths.config_file().write_text("[watch]\nfolders = 3\n")
    assert main(["init", "--no-service"]) == 1
    out = capsys.readouterr().out
    assert "folders" in out and "fix them" in out
    assert keys.own_keys() == [paths.key_file()]
    assert not (isolated_home / "JobLogs").exists()


def test_cli_prints_the_rescale_steps(
    isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    line = keys.public_key(paths.key_file()).line
    assert line in out
    assert "Account -> Job Settings -> SSH Public Key" in out
    assert "Access Restriction (CIDR)" in out and "/32" in out
    # Not on a terminal: the login service command is printed, not run.
    assert "jobtunnel service install" in out
    assert "made: " in out
    assert main(["init"]) == 0
    assert "made: " not in capsys.readouterr().out
