"""The real tray under Xvfb: trayer hosts the icon, dunst serves notifications on a
private D-Bus session, ``PYSTRAY_BACKEND=appindicator``, and a real daemon keeps a real
tunnel to a real sshd up.

The test clicks the icon with xdotool, saves a screenshot of the open GTK menu
(``tests/artifacts/tray-menu.png``), checks that a large light rectangle appeared, then
walks the open menu with the keyboard (positions computed from the same pure menu model
the tray draws) to the cluster's "Reconnect now" and checks through the control API that
the tunnel reconnected. Then it kills the daemon (the icon turns to "no daemon") and
starts a new one (the tray reconnects by itself).

Without Xvfb, trayer, dunst, xdotool, ImageMagick, dbus-run-session or PyGObject it
skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobtunnel.daemon.api.schema import from_wire
from jobtunnel.tray import putty
from jobtunnel.tray.icon import COLOURS, Overall
from jobtunnel.tray.menu import Item, MenuContext, build_menu
from PIL import Image, ImageChops

from tests.helpers.daemonproc import Daemon, Env, endpoint_up, wait_for
from tests.helpers.deps import dependency_missing

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOOLS = {
    "Xvfb": "xvfb",
    "trayer": "trayer",
    "dunst": "dunst",
    "xdotool": "xdotool",
    "import": "imagemagick",
    "dbus-run-session": "dbus",
}


def missing() -> str | None:
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    try:
        import gi

        gi.require_version("Gtk", "3.0")
        gi.require_version("AyatanaAppIndicator3", "0.1")
    except (ImportError, ValueError) as exc:
        return f"PyGObject with GTK 3 and AyatanaAppIndicator3 is missing: {exc}"
    return None


def require_desktop() -> None:
    why = missing()
    if why is None:
        return
    dependency_missing(f"the real-tray test cannot run: {why}")


class Desktop:
    """Xvfb + trayer; screenshots and input through ImageMagick and xdotool."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        read, write = os.pipe()
        xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "xvfb.log").open("wb"),
        )
        self.procs.append(xvfb)
        os.close(write)
        with os.fdopen(read) as out:
            number = out.readline().strip()
        assert number, "Xvfb did not start"
        self.display = f":{number}"
        self.env = dict(os.environ, DISPLAY=self.display)
        self.spawn(
            "trayer", "--edge", "top", "--align", "left", "--widthtype", "request",
            "--height", "32", "--SetDockType", "true", "--transparent", "false",
            "--tint", "0x202020",
        )  # fmt: skip

    def spawn(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{Path(argv[0]).name}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            argv, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def run(self, *argv: str) -> str:
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=15, check=True
        )
        return done.stdout

    def tray_box(self) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) of trayer's widest window, once an icon has docked."""
        try:
            out = self.run("xdotool", "search", "--class", "trayer", "getwindowgeometry", "%@")
        except subprocess.CalledProcessError:
            return None
        boxes = []
        for block in out.split("Window ")[1:]:
            pos = block.split("Position: ")[1].split(" ")[0].split(",")
            size = block.split("Geometry: ")[1].split()[0].split("x")
            boxes.append((int(pos[0]), int(pos[1]), int(size[0]), int(size[1])))
        widest = max(boxes, key=lambda b: b[2], default=None)
        return widest if widest is not None and widest[2] >= 16 else None

    def screenshot(self, path: Path) -> Image.Image:
        self.run("import", "-window", "root", str(path))
        return Image.open(path).convert("RGB")

    def key(self, *keys: str) -> None:
        for k in keys:
            self.run("xdotool", "key", k)
            time.sleep(0.15)

    def close(self) -> None:
        """End everything started here: each helper's whole process group, then Xvfb."""
        xvfb, *helpers = self.procs
        for proc in reversed(helpers):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*reversed(helpers), xvfb]:
            if proc is xvfb:
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def desktop(tmp_path: Path) -> Iterator[Desktop]:
    require_desktop()
    d = Desktop(tmp_path)
    try:
        yield d
    finally:
        d.close()


def light_box(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int, float]:
    """Bounding box of pixels that turned light, and how much of that box they fill."""
    diff = ImageChops.difference(before, after).convert("L").point(lambda v: 255 if v > 40 else 0)
    light = after.convert("L").point(lambda v: 255 if v > 200 else 0)
    changed_light = ImageChops.multiply(diff, light)
    box = changed_light.getbbox()
    if box is None:
        return (0, 0, 0, 0, 0.0)
    x0, y0, x1, y1 = box
    region = changed_light.crop(box).tobytes()
    return x0, y0, x1 - x0, y1 - y0, sum(1 for v in region if v) / len(region)


def selectable(items: tuple[Item, ...]) -> list[Item]:
    """Items GTK's keyboard navigation stops at: enabled, not separators."""
    return [i for i in items if not i.separator and i.enabled and (i.action or i.children)]


def shows_colour(shot: Image.Image, box: tuple[int, int, int, int], state: Overall) -> int:
    """How many pixels of the docked icon have ``state``'s colour (give or take 30)."""
    x, y, w, h = box
    raw = shot.crop((x, y, x + w, y + h)).tobytes()
    want = COLOURS[state]
    return sum(
        all(abs(raw[i + k] - want[k]) <= 30 for k in range(3)) for i in range(0, len(raw), 3)
    )


@pytest.mark.sshd
@pytest.mark.timeout(120)
def test_real_tray_menu_reconnect_and_daemon_restart(env: Env, desktop: Desktop) -> None:
    daemon = Daemon(env)
    try:
        daemon.wait_ready()
        drive_the_tray(env, desktop, daemon)
    finally:
        if not daemon.dead():
            daemon.kill()


def drive_the_tray(env: Env, desktop: Desktop, daemon: Daemon) -> None:
    env.logs.mkdir(parents=True, exist_ok=True)
    (env.logs / "job.log").write_text("Starting cluster\n" + env.log_line())
    wait_for(lambda: endpoint_up(env), "the tunnel to come up")

    tray_env = dict(env.vars, DISPLAY=desktop.display, PYSTRAY_BACKEND="appindicator")
    tray_log = desktop.workdir / "tray.log"
    script = f'dunst >"{desktop.workdir}/dunst.log" 2>&1 & exec "$@" 2>"{tray_log}"'
    tray = desktop.spawn(
        "dbus-run-session", "--", "sh", "-c", script, "sh",
        sys.executable, "-m", "jobtunnel.daemon", "-v", "tray",
        env=tray_env,
    )  # fmt: skip
    box = wait_for(desktop.tray_box, "the tray icon to dock in trayer")
    wait_for(lambda: "daemon connected" in tray_log.read_text(), "the tray to reach the daemon")
    log_text = tray_log.read_text()
    assert "tray backend: appindicator" in log_text, log_text
    time.sleep(1.0)  # the menu and icon are rebuilt on GTK's idle callback

    ARTIFACTS.mkdir(exist_ok=True)
    before = desktop.screenshot(desktop.workdir / "before.png")
    assert shows_colour(before, box, Overall.UP) >= 50
    x, y, w, h = box
    desktop.run("xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", "1")
    time.sleep(1.0)
    after = desktop.screenshot(ARTIFACTS / "tray-menu.png")
    mx, my, mw, mh, fill = light_box(before, after)
    assert mw >= 200 and mh >= 150 and fill > 0.6, (mx, my, mw, mh, fill)

    desktop.key("Escape")

    # A changed host key: the daemon refuses the server and, by design, does not retry
    # by itself. The old key comes back; only "Reconnect now" brings the tunnel back.
    saved = {p: p.read_bytes() for p in (env.sshd.host_key, Path(f"{env.sshd.host_key}.pub"))}
    env.sshd.new_host_key()
    env.sshd.restart()
    failed = wait_for(
        lambda: [
            e for e in env.status()["endpoints"]
            if e["state"] != "up" and "host key" in (e["last_error"] or "").lower()
        ],
        "the daemon to refuse the changed host key",
    )[0]  # fmt: skip
    for path, data in saved.items():
        path.write_bytes(data)
    env.sshd.restart()
    time.sleep(2.0)
    assert not endpoint_up(env), "the daemon retried a refused host key by itself"
    wait_for(lambda: "host key changed" in tray_log.read_text(), "the host-key notice")

    # Walk to the cluster's submenu and "Reconnect now", counting from the pure model.
    time.sleep(0.5)
    desktop.run("xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", "1")
    time.sleep(1.0)
    status = env.status()
    # As the app builds it (only whether each is set changes the items).
    context = MenuContext(now=time.time(), identity_file="k", public_key="p", log_file="l",
                          config_file="c", ssh_config="s", putty=putty.find_putty())  # fmt: skip
    top = selectable(build_menu(from_wire(status), context))
    header = next(i for i in top if i.text.startswith(failed["name"]))
    sub = selectable(header.children)
    reconnect = next(i for i in sub if i.text == "Reconnect now")
    desktop.key(*["Down"] * (top.index(header) + 1), "Right")
    desktop.key(*["Down"] * sub.index(reconnect))
    desktop.screenshot(ARTIFACTS / "tray-submenu.png")
    desktop.key("Return")
    wait_for(
        lambda: (e := endpoint_up(env)) and e["reconnects"] > failed["reconnects"],
        "the tunnel to reconnect after the menu click",
    )
    assert "menu: reconnect" in tray_log.read_text()

    # The daemon goes away: the icon says so; "Start daemon" in the menu brings one back
    # (detached), and the tray follows it by itself.
    daemon.kill(signal.SIGKILL)
    wait_for(lambda: "daemon not running" in tray_log.read_text(), "the tray to notice")
    time.sleep(0.5)
    gone = desktop.screenshot(desktop.workdir / "no-daemon.png")
    assert shows_colour(gone, box, Overall.NO_DAEMON) >= 30
    assert shows_colour(gone, box, Overall.UP) < 5
    desktop.run("xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", "1")
    time.sleep(1.0)
    desktop.screenshot(desktop.workdir / "no-daemon-menu.png")
    assert next(i.text for i in selectable(build_menu(None, context))) == "Start daemon"
    desktop.key("Down", "Return")
    started: int | None = None
    try:
        wait_for(
            lambda: tray_log.read_text().count("daemon connected") >= 2,
            "the tray to reach the daemon it started",
        )
        started = env.status()["daemon"]["pid"]
        wait_for(lambda: endpoint_up(env), "the tunnel under the new daemon")
        time.sleep(0.5)
        # "Quit" is the last item: Up from nothing selected reaches it.
        desktop.run("xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", "1")
        time.sleep(1.0)
        desktop.key("Up", "Return")
        assert tray.wait(10) == 0
    finally:
        if started is None:
            with contextlib.suppress(Exception):
                started = env.status()["daemon"]["pid"]
        if started is not None:
            os.kill(started, signal.SIGTERM)
            wait_for(lambda: env.cli("status").returncode != 0, "the started daemon to stop")
    text = tray_log.read_text()
    assert "Traceback" not in text and "tray stopped" in text, text


@pytest.mark.sshd
@pytest.mark.timeout(90)
def test_tray_without_a_working_notification_service(env: Env, desktop: Desktop) -> None:
    """A notification service that is registered on the session bus but fails to start
    (its Exec is /bin/false): the tray docks, its menu works, and it says so once."""
    services = desktop.workdir / "share" / "dbus-1" / "services"
    services.mkdir(parents=True)
    (services / "org.freedesktop.Notifications.service").write_text(
        "[D-BUS Service]\nName=org.freedesktop.Notifications\nExec=/bin/false\n"
    )
    daemon = Daemon(env)
    try:
        daemon.wait_ready()
        env.logs.mkdir(parents=True, exist_ok=True)
        (env.logs / "job.log").write_text("Starting cluster\n" + env.log_line())
        wait_for(lambda: endpoint_up(env), "the tunnel to come up")
        data_dirs = f"{desktop.workdir / 'share'}:{os.environ.get('XDG_DATA_DIRS', '/usr/share')}"
        tray_env = dict(
            env.vars,
            DISPLAY=desktop.display,
            PYSTRAY_BACKEND="appindicator",
            XDG_DATA_DIRS=data_dirs,
        )
        tray_log = desktop.workdir / "tray.log"
        tray = desktop.spawn(
            "dbus-run-session", "--", "sh", "-c", f'exec "$@" 2>"{tray_log}"', "sh",
            sys.executable, "-m", "jobtunnel.daemon", "-v", "tray",
            env=tray_env,
        )  # fmt: skip
        box = wait_for(desktop.tray_box, "the tray icon to dock in trayer")
        wait_for(lambda: "daemon connected" in tray_log.read_text(), "the tray to reach the daemon")
        time.sleep(1.0)
        # The menu works: "Pause all", reached with the keyboard from the pure model.
        x, y, w, h = box
        desktop.run("xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", "1")
        time.sleep(1.0)
        context = MenuContext(now=time.time(), identity_file="k", public_key="p", log_file="l",
                              config_file="c")  # fmt: skip
        top = selectable(build_menu(from_wire(env.status()), context))
        pause = next(i for i in top if i.text == "Pause all")
        desktop.key(*["Down"] * (top.index(pause) + 1), "Return")
        wait_for(
            lambda: env.status()["endpoints"][0]["state"] == "paused", "the pause from the menu"
        )
        # Quit is the last item.
        desktop.run("xdotool", "mousemove", str(x + w // 2), str(y + h // 2), "click", "1")
        time.sleep(1.0)
        desktop.key("Up", "Return")
        assert tray.wait(10) == 0
    finally:
        if not daemon.dead():
            daemon.kill()
    text = tray_log.read_text()
    assert "Traceback" not in text and "tray stopped" in text, text
    assert "menu: pause_all" in text
    assert text.count("notifications are skipped") == 1, text
    assert "failed to start" in text
