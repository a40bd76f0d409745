"""Login services: every platform's files rendered and checked by the tools that read them,
the rendered command lines really run, and install/uninstall leave a home as they found it.

systemd-analyze and desktop-file-validate are needed; without them these tests skip, and
under CI=true they fail.
"""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from jobtunnel.daemon.setup import loginservice as ls
from jobtunnel.daemon.setup.loginservice import Result, Target

from tests.helpers.deps import dependency_missing, require_tool

pytestmark = pytest.mark.timeout(60)

TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def target(platform: ls.Platform, **changes: object) -> Target:
    return replace(ls.target_for(platform), **changes)  # type: ignore[arg-type]


def files_of(t: Target) -> dict[str, ls.FileSpec]:
    return {spec.path.name: spec for spec in ls.plan(t)}


def unit_keys(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values, from a unit or .desktop file (comments skipped)."""
    keys: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            keys.setdefault(f"{section}.{key}", []).append(value)
    return keys


def odd_python(tmp_path: Path, name: str = "my py$ 100%") -> Path:
    """This interpreter under a path that needs quoting: a space, % and $ (and more).

    In a virtualenv the whole environment is linked (a link to the bare executable would
    lose the environment's site-packages)."""
    prefix = Path(sys.prefix)
    exe = Path(sys.executable)
    if sys.prefix != sys.base_prefix and exe.is_relative_to(prefix):
        (tmp_path / name).symlink_to(prefix, target_is_directory=True)
        return tmp_path / name / exe.relative_to(prefix)
    (tmp_path / name).mkdir()
    (tmp_path / name / "python").symlink_to(exe)
    return tmp_path / name / "python"


# -- Linux ---------------------------------------------------------------------------------


def _verify(units: Sequence[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("systemd-analyze", "systemd")
    runtime = tmp_path / "verify-run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    return subprocess.run(
        [tool, "--user", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_systemd_units_verify_and_say_what_the_design_asks(
    isolated_home: Path, tmp_path: Path
) -> None:
    # An interpreter path with a space, % and $: a quoting slip would split or change it
    # and systemd-analyze would report a missing executable.
    t = target("linux", python=odd_python(tmp_path))
    units = tmp_path / "units"
    units.mkdir()
    written = []
    for name in (ls.DAEMON_UNIT, ls.TRAY_UNIT):
        path = units / name
        path.write_text(files_of(t)[name].text)
        written.append(path)
    result = _verify(written, tmp_path)
    assert result.returncode == 0 and not result.stdout + result.stderr, result

    daemon = unit_keys(written[0].read_text())
    assert daemon["Service.Type"] == ["notify"]
    assert daemon["Service.Restart"] == ["on-failure"]
    assert int(daemon["Service.WatchdogSec"][0]) > 0
    assert daemon["Install.WantedBy"] == ["default.target"]
    assert "graphical-session.target" not in written[0].read_text().split("[Install]")[0]
    tray = unit_keys(written[1].read_text())
    assert tray["Unit.PartOf"] == ["graphical-session.target"]
    assert "graphical-session.target" in tray["Unit.After"]
    assert tray["Install.WantedBy"] == ["graphical-session.target"]


def test_systemd_verify_really_checks(isolated_home: Path, tmp_path: Path) -> None:
    """The check above could not pass by accident: a wrong interpreter or key fails it."""
    bad = tmp_path / "bad"
    bad.mkdir()
    t = target("linux", python=tmp_path / "no-such-python")
    (bad / ls.DAEMON_UNIT).write_text(files_of(t)[ls.DAEMON_UNIT].text)
    assert _verify([bad / ls.DAEMON_UNIT], tmp_path).returncode != 0
    good = files_of(target("linux"))[ls.DAEMON_UNIT].text
    (bad / ls.DAEMON_UNIT).write_text(good.replace("WatchdogSec=", "WatchdogSecs="))
    typo = _verify([bad / ls.DAEMON_UNIT], tmp_path)
    assert "Unknown key" in typo.stdout + typo.stderr


def test_systemd_refuses_what_it_cannot_run(isolated_home: Path, tmp_path: Path) -> None:
    # systemd rejects ' " and \\ in an executable name, quoted or not: say so at install.
    with pytest.raises(ValueError, match="systemd cannot run"):
        ls.plan(target("linux", python=tmp_path / "it's" / "python"))


def exec_argv(unit_text: str) -> list[str]:
    """ExecStart= as argv, undoing the systemd quoting of :func:`ls.systemd_quote`."""
    (line,) = unit_keys(unit_text)["Service.ExecStart"]
    return [arg.replace("%%", "%") for arg in shlex.split(line)]


def daemon_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "JOBTUNNEL_"))}
    env.pop("NOTIFY_SOCKET", None)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_RUNTIME_DIR=str(home / "run"),
    )
    (home / "run").mkdir(mode=0o700)
    config = home / ".config" / "jobtunnel" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f"[watch]\nfolders = ['{home / 'JobLogs'}']\n")
    return env


def test_rendered_execstart_runs_the_daemon_under_systemd_notify(tmp_path: Path) -> None:
    home = tmp_path / "user"
    home.mkdir()
    env = daemon_env(home)
    t = replace(ls.target_for("linux", env), python=odd_python(tmp_path))
    argv = exec_argv(files_of(t)[ls.DAEMON_UNIT].text)
    assert argv[0] == str(t.python) and argv[1:] == ["-P", "-m", "jobtunnel.daemon", "run"]

    # What systemd gives a Type=notify service with WatchdogSec=: a notify socket and the
    # watchdog period. The daemon must say READY=1 and then ping.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(1.0)
    env.update(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="1000000")
    log = (tmp_path / "daemon.out").open("wb")
    # Started from the home folder, as systemd starts user services.
    proc = subprocess.Popen(argv, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT)
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            any("READY=1" in m for m in messages) and "WATCHDOG=1" in messages
        ):
            assert proc.poll() is None, (tmp_path / "daemon.out").read_text()
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                continue
        assert any("READY=1" in m for m in messages) and "WATCHDOG=1" in messages, messages
        status = subprocess.run(
            [sys.executable, "-m", "jobtunnel.daemon", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["daemon"]["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, (tmp_path / "daemon.out").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        notify.close()
        log.close()


def desktop_exec(text: str) -> list[str]:
    """Exec= as argv, by the Desktop Entry spec: string unescaping, then arguments split on
    spaces, double-quoted ones with backslash before " ` $ and \\, then %% -> %."""
    (value,) = unit_keys(text)["Desktop Entry.Exec"]
    value = value.replace("\\\\", "\\")
    args: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == " ":
            i += 1
            continue
        arg = ""
        if value[i] == '"':
            i += 1
            while value[i] != '"':
                if value[i] == "\\":
                    assert value[i + 1] in '"`$\\', value[i : i + 2]
                    i += 1
                arg += value[i]
                i += 1
            i += 1
        else:
            while i < len(value) and value[i] != " ":
                arg += value[i]
                i += 1
        args.append(arg.replace("%%", "%"))
    return args


def desktop_text(t: Target) -> str:
    # Rendered alone: the systemd units refuse some of the odd paths used here.
    return ls.render(ls.load_template("jobtunnel-tray.desktop"), ls.values_for(t, "desktop"))


def test_autostart_file_validates(isolated_home: Path, tmp_path: Path) -> None:
    tool = require_tool("desktop-file-validate", "desktop-file-utils")
    t = target("linux", python=odd_python(tmp_path, 'my $py 100%\'s \\ "x"'))
    path = tmp_path / "jobtunnel-tray.desktop"
    path.write_text(desktop_text(t))
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and not result.stdout + result.stderr, result
    keys = unit_keys(path.read_text())
    assert keys["Desktop Entry.TryExec"] == [str(t.python).replace("\\", "\\\\")]
    assert desktop_exec(path.read_text())[:2] == ["sh", "-c"]


@pytest.mark.parametrize("user_manager", [True, False])
def test_autostart_command_never_starts_a_second_tray(
    isolated_home: Path, tmp_path: Path, user_manager: bool
) -> None:
    """With a user manager it only asks systemd for the tray unit; without one it starts
    the daemon and the tray itself, with the right interpreter and arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "systemctl").write_text(
        f"#!/bin/sh\necho systemctl \"$*\" >> '{calls}'\nexit {0 if user_manager else 1}\n"
    )
    fake_python = tmp_path / "odd $dir 50%" / "py'thon"
    fake_python.parent.mkdir()
    fake_python.write_text(f"#!/bin/sh\necho python \"$*\" >> '{calls}'\n")
    for script in (bin_dir / "systemctl", fake_python):
        script.chmod(0o755)
    argv = desktop_exec(desktop_text(target("linux", python=fake_python)))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    subprocess.run(argv, env=env, timeout=20, check=True)
    deadline = time.monotonic() + 10
    want = 2 if user_manager else 4
    while len(calls.read_text().splitlines()) < want and time.monotonic() < deadline:
        time.sleep(0.05)  # the daemon was started in the background
    lines = sorted(calls.read_text().splitlines())
    if user_manager:
        assert lines == [
            "systemctl --user import-environment DISPLAY XAUTHORITY WAYLAND_DISPLAY",
            "systemctl --user start jobtunnel-tray.service",
        ]
    else:
        assert [x for x in lines if x.startswith("python")] == [
            "python -P -m jobtunnel.daemon run",
            "python -P -m jobtunnel.daemon tray",
        ]


# -- macOS and Windows ---------------------------------------------------------------------


@pytest.mark.parametrize(("label", "command"), [(ls.AGENTS[0], "run"), (ls.AGENTS[1], "tray")])
def test_launch_agents(isolated_home: Path, tmp_path: Path, label: str, command: str) -> None:
    t = target("macos")
    spec = files_of(t)[f"{label}.plist"]
    assert spec.path == t.home / "Library" / "LaunchAgents" / f"{label}.plist"
    agent = plistlib.loads(spec.data())
    assert agent["Label"] == label
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ProcessType"] == "Interactive"
    assert agent["LimitLoadToSessionType"] == "Aqua"
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert Path(agent[key]).parent == t.log_dir
    args = agent["ProgramArguments"]
    assert args[0] == sys.executable and Path(args[0]).exists()
    assert args[1:] == ["-P", "-m", "jobtunnel.daemon", command]
    # The same interpreter and module answer, even from a folder holding a decoy
    # jobtunnel package (launchd and systemd start services in such folders: home).
    decoy = tmp_path / "jobtunnel" / "daemon"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise SystemExit('decoy imported')\n")
    (decoy / "__main__.py").write_text("raise SystemExit('decoy imported')\n")
    done = subprocess.run(
        [*args[:4], "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and done.stdout.startswith("jobtunnel "), done


@pytest.mark.parametrize(("task", "command"), [("jobtunnel", "run"), ("jobtunnel-tray", "tray")])
def test_windows_logon_tasks(isolated_home: Path, task: str, command: str) -> None:
    t = target("windows", user="DESK\\ana")
    spec = files_of(t)[f"{task}.xml"]
    data = spec.data()
    assert data.startswith(b"\xff\xfe")  # UTF-16 with a byte order mark, as schtasks wants
    root = ET.fromstring(data)

    def get(path: str) -> str | None:
        return root.findtext(path, namespaces=TASK_NS)

    assert get("t:RegistrationInfo/t:URI") == f"\\{task}"
    assert root.find("t:Triggers/t:LogonTrigger", TASK_NS) is not None
    assert get("t:Triggers/t:LogonTrigger/t:UserId") == "DESK\\ana"
    assert get("t:Principals/t:Principal/t:UserId") == "DESK\\ana"
    assert get("t:Principals/t:Principal/t:LogonType") == "InteractiveToken"
    assert get("t:Principals/t:Principal/t:RunLevel") == "LeastPrivilege"
    assert get("t:Settings/t:ExecutionTimeLimit") == "PT0S"
    assert get("t:Settings/t:DisallowStartIfOnBatteries") == "false"
    assert get("t:Settings/t:StopIfGoingOnBatteries") == "false"
    assert get("t:Settings/t:MultipleInstancesPolicy") == "IgnoreNew"
    assert get("t:Actions/t:Exec/t:Command") == str(Path(sys.executable).with_name("pythonw.exe"))
    assert get("t:Actions/t:Exec/t:Arguments") == f"-P -m jobtunnel.daemon {command}"
    (exec_action,) = root.findall("t:Actions/t:Exec", TASK_NS)  # one action per task
    assert exec_action is not None


def test_xml_values_are_escaped(isolated_home: Path, tmp_path: Path) -> None:
    odd = tmp_path / "a&b <c>"
    t = target("macos", python=odd, log_dir=odd)
    agent = plistlib.loads(files_of(t)[f"{ls.AGENTS[0]}.plist"].data())
    assert agent["ProgramArguments"][0] == str(odd)
    w = target("windows", python=odd, user="a&b")
    root = ET.fromstring(files_of(w)["jobtunnel.xml"].data())
    assert root.findtext("t:Actions/t:Exec/t:Command", namespaces=TASK_NS) == str(odd)


def test_render_refuses_a_missing_value() -> None:
    with pytest.raises(ValueError, match="@NOPE@"):
        ls.render("x=@PYTHON@ @NOPE@", {"PYTHON": "p"})


# -- install / uninstall -------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes | str | None]:
    """Every folder, file (with its bytes) and link (with its target) under ``root``."""
    found: dict[str, bytes | str | None] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[key] = None
        else:
            found[key] = path.read_bytes()
    return found


class FakeSystemctl:
    """Records commands; does to the unit folder what `systemctl --user enable/disable` does."""

    def __init__(self, units: Path, present: bool = True) -> None:
        self.units = units
        self.present = present
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Result:
        self.calls.append(list(argv))
        if not self.present:
            return Result(1, "Failed to connect to bus: No medium found")
        args = list(argv)[2:]
        units = [a for a in args if a.endswith(".service")]
        if args[0] == "enable":
            for unit in units:
                link = self.units / ls.WANTS[unit] / unit
                link.parent.mkdir(exist_ok=True)
                link.unlink(missing_ok=True)
                link.symlink_to(self.units / unit)
        elif args[0] == "disable":
            for unit in units:
                (self.units / ls.WANTS[unit] / unit).unlink(missing_ok=True)
        return Result(0, "")


@pytest.fixture
def home(isolated_home: Path) -> Iterator[Path]:
    # Something of the user's own in the folders install writes to: it must survive.
    (isolated_home / ".config" / "autostart").mkdir(parents=True)
    (isolated_home / ".config" / "autostart" / "mine.desktop").write_text("[Desktop Entry]\n")
    yield isolated_home


def test_install_uninstall_with_a_user_manager(home: Path) -> None:
    before = snapshot(home)
    units = home / ".config" / "systemd" / "user"
    fake = FakeSystemctl(units)
    said: list[str] = []
    assert ls.main("install", "linux", runner=fake, out=said.append) == 0
    assert {p.name for p in units.iterdir()} == {
        ls.DAEMON_UNIT,
        ls.TRAY_UNIT,
        "default.target.wants",
        "graphical-session.target.wants",
    }
    assert (home / ".config" / "autostart" / "jobtunnel-tray.desktop").exists()
    assert [c[2:] for c in fake.calls] == [
        ["show-environment"],
        ["daemon-reload"],
        ["enable", "--now", ls.DAEMON_UNIT],
        ["enable", ls.TRAY_UNIT],
        ["is-active", "--quiet", "graphical-session.target"],
        ["start", ls.TRAY_UNIT],
    ]
    assert any("starts at every login" in line for line in said)
    installed = snapshot(home)

    # Idempotent: the same files, nothing new.
    assert ls.main("install", "linux", runner=fake, out=said.append) == 0
    assert snapshot(home) == installed
    assert ls.main("status", "linux", runner=fake, out=said.append) == 0

    fake.calls.clear()
    assert ls.main("uninstall", "linux", runner=fake, out=said.append) == 0
    assert ["disable", "--now", ls.TRAY_UNIT, ls.DAEMON_UNIT] in [c[2:] for c in fake.calls]
    assert snapshot(home) == before


def test_install_without_a_user_manager_says_so(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files are written (the autostart file works at the next login), nothing is enabled,
    the exit status is 1 and the message says how to start jobtunnel instead."""
    before = snapshot(home)
    fake = FakeSystemctl(home / ".config" / "systemd" / "user", present=False)
    assert ls.main("install", "linux", runner=fake) == 1
    err = capsys.readouterr().err
    assert "did not answer" in err and "No medium found" in err and "jobtunnel run &" in err
    assert fake.calls == [["systemctl", "--user", "show-environment"]]
    assert (home / ".config" / "autostart" / "jobtunnel-tray.desktop").exists()
    assert ls.main("status", "linux", runner=fake) == 1
    assert ls.main("uninstall", "linux", runner=fake) == 0
    assert snapshot(home) == before


def test_the_real_command_here(home: Path, tmp_path: Path) -> None:
    """`jobtunnel service install` where `systemctl --user` has no bus (this container)."""
    if ls.run_command(["systemctl", "--user", "show-environment"]).returncode == 0:
        pytest.skip("a systemd user manager answers here: install would enable real units")
    before = snapshot(home)
    run = [sys.executable, "-m", "jobtunnel.daemon", "service"]
    done = subprocess.run([*run, "install"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "jobtunnel run &" in done.stderr, done
    assert "wrote" in done.stdout
    done = subprocess.run([*run, "uninstall"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done
    assert snapshot(home) == before


def test_a_file_of_the_users_own_is_never_replaced_or_removed(home: Path) -> None:
    units = home / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    (units / ls.DAEMON_UNIT).write_text("[Service]\nExecStart=/bin/true\n")
    before = snapshot(home)
    fake = FakeSystemctl(units)
    assert ls.main("install", "linux", runner=fake, out=lambda _: None) == 1
    assert snapshot(home) == before and fake.calls == []
    assert ls.main("uninstall", "linux", runner=fake, out=lambda _: None) == 0
    assert (units / ls.DAEMON_UNIT).read_text() == "[Service]\nExecStart=/bin/true\n"


@pytest.mark.parametrize("platform", ls.PLATFORMS)
def test_root_writes_there_and_runs_nothing(
    isolated_home: Path, tmp_path: Path, platform: ls.Platform
) -> None:
    root = tmp_path / "root"
    root.mkdir()

    def no_commands(argv: Sequence[str]) -> Result:
        raise AssertionError(f"ran {argv} with --root")

    assert ls.main("install", platform, root=root, runner=no_commands, out=lambda _: None) == 0
    for spec in ls.plan(ls.target_for(platform)):
        written = root / spec.path.relative_to("/")
        assert written.read_bytes() == spec.data()
    assert ls.main("status", platform, root=root, runner=no_commands, out=lambda _: None) == 0
    assert ls.main("uninstall", platform, root=root, runner=no_commands, out=lambda _: None) == 0
    assert snapshot(root) == {}


@pytest.mark.parametrize("platform", ["macos", "windows"])
def test_another_platform_only_with_dry_run_or_root(isolated_home: Path, platform: str) -> None:
    said: list[str] = []
    assert ls.main("install", platform, out=said.append) == 2
    assert ls.main("install", platform, dry_run=True, out=said.append) == 0
    assert not any(isolated_home.rglob("*.plist")) and not any(isolated_home.rglob("*.xml"))
    assert any(line.startswith(("  launchctl bootstrap", "  schtasks /Create")) for line in said)


def test_templates_ship_in_the_wheel(tmp_path: Path) -> None:
    """A regular (non-editable) install carries the templates and renders from them."""
    repo = Path(__file__).resolve().parents[2]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(repo)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    if built.returncode != 0:
        dependency_missing(f"the wheel could not be built: {built.stderr[-2000:]}")
    (wheel,) = tmp_path.glob("jobtunnel-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import importlib.resources as r, jobtunnel.daemon.setup.loginservice as ls; "
        "print(r.files('jobtunnel.service_files')); "
        "print(len(ls.plan(ls.target_for('linux'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, PYTHONPATH=str(site)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    folder, count = done.stdout.split()
    assert Path(folder) == site / "jobtunnel" / "service_files" and count == "3"
    assert not (site / "jobtunnel" / "service_files" / "setup.sh").exists()
