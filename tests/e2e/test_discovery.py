"""Discovery end to end: a cluster in a network namespace of its own (so its listening
sockets are its own), a real OpenSSH sshd and a real Jupyter server in it, the real daemon
here. Jupyter is forwarded by itself with its token; an HTTP server is offered and
forwarded on request, again after a restart; a service that starts later is found, one
that stops is gone; a configured forward where nothing listens says so."""

from __future__ import annotations

import json
import pwd
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemonproc import Daemon, Env, make_env, wait_for
from tests.helpers.deps import dependency_missing
from tests.helpers.netns import Netns, namespace
from tests.helpers.sshd import SshServer

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(240)]

TOKEN = "0123abcd"
JUPYTER_PORT, HTTP_PORT, LATE_PORT, NOTHING_PORT = 18888, 18080, 18081, 5901

# Inside the namespace: Jupyter's runtime folder (where the sshd's SFTP looks) is the
# test's own folder, bind-mounted; Jupyter starts in the background, then sshd.
SCRIPT = (
    'mount --bind "$1" "$2" && '
    '{ JUPYTER_RUNTIME_DIR="$2" "$3" -m jupyter server --allow-root --no-browser '
    f"--ServerApp.ip=127.0.0.1 --port={JUPYTER_PORT} --ServerApp.token={TOKEN} "
    '--ServerApp.root_dir="$5" > "$4" 2>&1 & } && shift 5 && exec "$@"'
)


def runtime_dir_of(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir) / ".local" / "share" / "jupyter" / "runtime"


def cluster(ns: Netns, tmp: Path) -> tuple[SshServer, Path]:
    try:
        import jupyter_server  # noqa: F401
    except ImportError:
        dependency_missing("jupyter_server is not installed (the test extra has it)")
    runtime = tmp / "runtime"
    runtime.mkdir()
    probe = SshServer(tmp / "probe")
    target = runtime_dir_of(probe.user)
    target.mkdir(parents=True, exist_ok=True)  # a mount point; what Jupyter writes stays in tmp
    (tmp / "nb").mkdir()
    wrapper = ns.wrap(
        ["sh", "-c", SCRIPT, "sh", str(runtime), str(target), sys.executable,
         str(tmp / "jupyter.log"), str(tmp / "nb")]
    )  # fmt: skip
    sshd = SshServer(tmp / "sshd", listen=ns.ns_ip, wrapper=wrapper)
    sshd.start(timeout=30)
    wait_for(lambda: list(runtime.glob("jpserver-*.json")), "Jupyter's runtime file", 90)
    return sshd, runtime


def http_in(ns: Netns, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ns.wrap([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: f":{port:04X} " in ns.run("cat", "/proc/net/tcp").stdout, "http.server")
    return proc


def endpoint(env: Env) -> dict[str, Any] | None:
    eps = env.status()["endpoints"]
    return eps[0] if eps else None


def services(env: Env) -> dict[int, dict[str, Any]]:
    ep = endpoint(env)
    return {s["port"]: s for s in ep["services"]} if ep else {}


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.read()


def test_a_clusters_services_are_found_forwarded_and_offered(tmp_path: Path) -> None:
    with namespace() as ns:
        sshd, _runtime = cluster(ns, tmp_path)
        plain = http_in(ns, HTTP_PORT)
        env = make_env(tmp_path / "user", sshd, NOTHING_PORT)
        text = env.config_text([str(NOTHING_PORT)])
        text = text.replace("discover_interval = 0", "discover_interval = 5")
        env.config.write_text(text)
        daemon = Daemon(env)
        try:
            daemon.wait_ready()
            env.logs.mkdir(exist_ok=True)
            (env.logs / "job.log").write_text(f"ssh -p {sshd.port} {sshd.user}@{ns.ns_ip}\n")

            found = wait_for(
                lambda: (s := services(env)).get(JUPYTER_PORT, {}).get("url") and s,
                "Jupyter forwarded with its URL",
                60,
            )
            # The cluster's own loopback listeners, nothing of this machine's (its sshd
            # listens on the namespace's outside address only: not reachable as loopback).
            assert set(found) == {JUPYTER_PORT, HTTP_PORT}, found
            jupyter = found[JUPYTER_PORT]
            assert jupyter["state"] == "forwarded" and jupyter["kind"] == "jupyter"
            local = jupyter["local_port"]
            assert jupyter["url"] == f"http://localhost:{local}/lab?token={TOKEN}"
            status, body = get(f"http://127.0.0.1:{local}/api/status?token={TOKEN}")
            assert status == 200 and "started" in json.loads(body)
            assert found[HTTP_PORT]["state"] == "offered"
            configured = endpoint(env)["forwards"][0]  # type: ignore[index]
            assert configured["no_service"] and configured["remote_port"] == NOTHING_PORT

            name = endpoint(env)["name"]  # type: ignore[index]
            shown = env.cli("services", name)
            assert f"jobtunnel forward {name} {HTTP_PORT}" in shown.stdout, shown.stdout
            done = env.cli("forward", name, str(HTTP_PORT))
            assert done.returncode == 0, done.stderr
            offered = wait_for(
                lambda: services(env)[HTTP_PORT].get("local_port"), "the forward on request"
            )
            assert get(f"http://127.0.0.1:{offered}/")[0] == 200

            late = http_in(ns, LATE_PORT)
            listed = env.cli("services", name, "--refresh", "--json")
            assert listed.returncode == 0, listed.stderr
            assert LATE_PORT in {s["port"] for s in json.loads(listed.stdout)}
            late.kill()
            late.wait(10)
            listed = env.cli("services", name, "--refresh", "--json")
            after = {s["port"]: s["state"] for s in json.loads(listed.stdout)}
            assert after.get(LATE_PORT, "gone") == "gone"

            # The port the user chose is forwarded again after a restart, on the same port.
            assert daemon.kill(signal.SIGTERM) == 0
            daemon = Daemon(env)
            daemon.wait_ready()
            again = wait_for(
                lambda: services(env).get(HTTP_PORT, {}).get("local_port"), "the chosen port"
            )
            assert again == offered
            assert "Traceback" not in daemon.text()
        finally:
            if not daemon.dead():
                daemon.kill()
            plain.kill()
            sshd.stop()
