"""The jobtunnel command, run as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.samples import expected_cases, samples_dir


def jobtunnel(
    *args: str, env: dict[str, str] | None = None, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    run_env = dict(os.environ)
    run_env.pop("JOBTUNNEL_CONFIG", None)
    if home is not None:
        run_env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_STATE_HOME=str(home / ".state"),
        )
    run_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "jobtunnel.daemon", *args],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=120,
        check=False,
    )


def test_scan_json_matches_every_expected_sample(tmp_path: Path) -> None:
    names = [name for name, _ in expected_cases()]
    files = [str(samples_dir() / name) for name in names]
    result = jobtunnel("scan", "--json", *files, home=tmp_path)
    assert result.returncode == 0, result.stderr
    got: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        assert isinstance(record["line"], int) and record["line"] >= 1
        assert isinstance(record["port"], int)
        got[Path(record.pop("file")).name].append(record)
        record.pop("line")
    assert got == dict(expected_cases())


def test_scan_table_and_rejections_on_stderr(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text(
        "ssh -p 32100 uprod_Good1@52.1.2.3\n"
        "ssh uprod_Bad1@10.0.0.9\n"
        "ssh -p 70000 uprod_Bad2@52.1.2.4\n"
    )
    result = jobtunnel("scan", str(log), home=tmp_path)
    assert result.returncode == 0
    assert "uprod_Good1@52.1.2.3:32100" in result.stdout
    assert "Good1" in result.stdout.splitlines()[1]
    assert f"{log}:2: ignored uprod_Bad1@10.0.0.9: a private address" in result.stderr
    assert f"{log}:3:" in result.stderr and "outside 1-65535" in result.stderr
    assert "Bad" not in result.stdout


def test_scan_goes_on_after_a_missing_file_and_exits_2(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("ssh uprod_Good1@52.1.2.3\n")
    missing = tmp_path / "nope.log"
    result = jobtunnel("scan", "--json", str(missing), str(log), str(tmp_path), home=tmp_path)
    assert result.returncode == 2
    assert json.loads(result.stdout)["user"] == "uprod_Good1"
    errors = result.stderr.strip().splitlines()
    assert any(str(missing) in e and "No such file" in e for e in errors)
    assert any(str(tmp_path) in e and "folder" in e for e in errors)


def test_scan_of_a_file_without_endpoints_exits_0(tmp_path: Path) -> None:
    result = jobtunnel("scan", str(samples_dir() / "process_output-no-endpoint.log"), home=tmp_path)
    assert result.returncode == 0
    assert result.stdout == ""
    assert "no cluster endpoint found" in result.stderr


def test_scan_uses_the_config(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("ssh -p 2222 uprod_Local1@127.0.0.1\n")
    config = tmp_path / "c.toml"
    config.write_text("[detect]\nallow_private_addresses = true\n")
    result = jobtunnel("--config", str(config), "scan", "--json", str(log), home=tmp_path)
    assert json.loads(result.stdout)["host"] == "127.0.0.1"
    broken = tmp_path / "broken.toml"
    broken.write_text("[detect]\nallow_private_addresses = 1\n")
    result = jobtunnel("scan", str(log), env={"JOBTUNNEL_CONFIG": str(broken)}, home=tmp_path)
    assert result.returncode == 1
    assert f"{broken}:2: detect.allow_private_addresses" in result.stderr
    assert result.stdout == ""


def test_config_init_check_show_path(tmp_path: Path) -> None:
    path = tmp_path / ".config" / "jobtunnel" / "config.toml"
    assert jobtunnel("config", "path", home=tmp_path).stdout.strip() == str(path)
    assert jobtunnel("config", "check", home=tmp_path).returncode == 0
    first = jobtunnel("config", "init", home=tmp_path)
    assert first.returncode == 0 and path.exists()
    text = path.read_text()
    path.write_text(text.replace("# hold_seconds = 30", "hold_seconds = 45"))
    again = jobtunnel("config", "init", home=tmp_path)
    assert again.returncode == 0 and "left unchanged" in again.stdout
    assert "hold_seconds = 45" in path.read_text()
    assert jobtunnel("config", "check", home=tmp_path).stdout.strip() == f"{path}: OK"
    shown = json.loads(jobtunnel("config", "show", "--json", home=tmp_path).stdout)
    assert shown["tunnels"]["hold_seconds"] == 45
    path.write_text("[tunnels]\nhold_seconds = 45\nbind_address = '0.0.0.0.0'\n")
    bad = jobtunnel("config", "check", home=tmp_path)
    assert bad.returncode == 1
    assert f"{path}:3: tunnels.bind_address: bad value" in bad.stderr


@pytest.mark.parametrize("args", [[], ["scan"], ["config"], ["bogus"]])
def test_usage_errors_exit_2_with_help(tmp_path: Path, args: list[str]) -> None:
    result = jobtunnel(*args, home=tmp_path)
    assert result.returncode == 2
    assert "usage: jobtunnel" in result.stderr


def test_help_explains(tmp_path: Path) -> None:
    top = jobtunnel("--help", home=tmp_path).stdout
    assert "scan" in top and "config" in top and "examples:" in top
    scan = jobtunnel("scan", "--help", home=tmp_path).stdout
    assert "--json" in scan and "stderr" in scan
