"""jobtunnel doctor: each check, its fix, and the exit status."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobtunnel.daemon import paths
from jobtunnel.daemon.api.client import DaemonNotRunning
from jobtunnel.daemon.api.schema import from_wire
from jobtunnel.daemon.cli import main
from jobtunnel.daemon.setup import doctor, firstrun, keys

from tests.helpers.recorded import recorded

pytestmark = pytest.mark.timeout(60)


def not_running(*args: Any, **kw: Any) -> Any:
    raise DaemonNotRunning()


def status_with(pid: int = 4242, ports: tuple[int, ...] = ()) -> dict[str, Any]:
    """The real daemon's recorded status reply (tests/data/status/up.json), its pid and
    the local ports of its one endpoint set (no endpoint when no port is given)."""
    status = recorded("up")
    status["daemon"]["pid"] = pid
    [endpoint] = status["endpoints"]
    [fwd] = endpoint["forwards"]
    endpoint["forwards"] = [dict(fwd, local_port=p) for p in ports]
    status["endpoints"] = [endpoint] if ports else []
    return status  # type: ignore[no-any-return]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_with_forward(port: int) -> Path:
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[tunnels]\nforwards = ["{port}"]\n')
    return path


def by_name(results: list[doctor.Check], name: str) -> list[doctor.Check]:
    return [c for c in results if c.name == name]


def test_fresh_home_lists_what_to_do(isolated_home: Path) -> None:
    results = doctor.run_checks(call=not_running)
    failing = {c.name: c.fix for c in results if c.status == "fail"}
    assert "jobtunnel keys generate" in failing["key"]
    assert "jobtunnel init" in failing["watched folder"]
    assert "jobtunnel run" in failing["daemon"]
    assert failing["login service"] == "jobtunnel service install"
    assert by_name(results, "config")[0].status == "info"  # defaults apply
    assert all(str(c).count("\n") == 0 for c in results)  # one line each


def test_after_init_and_service_only_the_daemon_is_missing(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_with_forward(free_port())
    firstrun.init()
    unit = doctor.service_file()
    assert unit == isolated_home / ".config/systemd/user/jobtunnel.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    results = doctor.run_checks(call=not_running)
    assert [c.name for c in results if c.status == "fail"] == ["daemon"]
    assert by_name(results, "daemon")[0].fix == "systemctl --user start jobtunnel"
    public = by_name(results, "public key")[0]
    assert keys.public_key(paths.key_file()).line in public.detail
    assert "SSH Public Key" in public.fix
    # Exit status through the CLI: non-zero while something needs the user.
    monkeypatch.setattr("jobtunnel.daemon.api.client.call_sync", not_running)
    assert main(["doctor"]) == 1


def test_all_good_exits_zero(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_with_forward(free_port())
    firstrun.init()
    doctor.service_file().parent.mkdir(parents=True)
    doctor.service_file().write_text("")
    status = status_with(4242)
    monkeypatch.setattr("jobtunnel.daemon.api.client.call_sync", lambda *a, **k: status)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "running (pid 4242)" in out and "all good" in out


def test_the_network_watch_is_named_and_polling_alone_is_said(isolated_home: Path) -> None:
    config = doctor.check_config(None)[1]
    assert doctor.check_network_watch(config, None) is None  # no daemon: nothing to say
    status = status_with(7)
    status["daemon"]["network_watch"] = ["routing socket", "system bus"]
    check = doctor.check_network_watch(config, from_wire(status))
    assert check is not None and check.status == "ok"
    assert check.detail == "routing socket, system bus"
    status["daemon"]["network_watch"] = ["polling every 2 s"]
    check = doctor.check_network_watch(config, from_wire(status))
    assert check is not None and check.status == "info" and "not at once" in check.detail
    status["daemon"]["network_watch"] = None
    check = doctor.check_network_watch(config, from_wire(status))
    assert check is not None and check.detail == "not reported by this daemon"


def test_an_unreadable_status_is_named(isolated_home: Path) -> None:
    broken = status_with(ports=(8888,))
    broken["endpoints"][0]["forwards"][0]["local_port"] = "8888"
    check, status = doctor.check_daemon(doctor.check_config(None)[1], lambda *a, **k: broken)
    assert status is None and check.status == "fail"
    assert "endpoints[0].forwards[0].local_port: expected int or null" in check.detail
    check, status = doctor.check_daemon(
        doctor.check_config(None)[1], lambda *a, **k: status_with(7, (8888,))
    )
    assert check.detail == "running (pid 7)" and status is not None
    assert status.endpoints[0].forwards[0].local_port == 8888


def test_loose_key_fails_with_chmod(isolated_home: Path) -> None:
    path = keys.generate()
    path.chmod(0o640)
    check = doctor.check_keys(doctor.check_config(None)[1])[0]
    assert check.status == "fail"
    assert check.fix == f"chmod 600 {path}"


def test_configured_key_checked_not_own(isolated_home: Path, tmp_path: Path) -> None:
    mine = keys.generate(path=tmp_path / "rescale_key")
    paths.config_file().parent.mkdir(parents=True)
    paths.config_file().write_text(f'[ssh]\nidentity_files = ["{mine}"]\n')
    config = doctor.check_config(None)[1]
    assert doctor.usable_keys(config) == [mine]
    assert [c.status for c in doctor.check_keys(config)] == ["ok"]


def test_broken_config_named(isolated_home: Path) -> None:
    path = paths.config_file()
    path.parent.mkdir(parents=True)
    path.write_text("[tunnels]\nforwards = 8888\n")
    check, config = doctor.check_config(None)
    assert check.status == "fail"
    assert str(path) in check.detail
    assert config.tunnels.forwards == ["8888"]  # the other checks go on with defaults


def test_taken_port_fails_unless_the_daemon_holds_it(isolated_home: Path, held_port: int) -> None:
    config = doctor.check_config(config_with_forward(held_port))[1]
    [check] = doctor.check_ports(config)
    assert check.status == "fail"
    assert f"127.0.0.1:{held_port}" in check.detail and "ss -ltnp" in check.fix
    [check] = doctor.check_ports(config, from_wire(status_with(ports=(held_port,))))
    assert check.status == "ok" and "jobtunnel daemon" in check.detail


def test_service_paths_per_platform(isolated_home: Path) -> None:
    mac = doctor.service_file("darwin")
    assert mac == isolated_home / "Library/LaunchAgents/com.jobtunnel.daemon.plist"
    assert doctor.service_file("win32") == paths.data_dir() / "service" / "jobtunnel.xml"
    assert doctor.check_service("win32").status == "fail"  # not installed in this home


def test_tray_backend_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    check = doctor.check_tray()
    assert check.status == "info" and "dummy" in check.detail
