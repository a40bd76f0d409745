"""Nobody let in, nothing given away: the real daemon process.

- forwards listen on loopback only (read from /proc/net/tcp for the daemon's pid);
- the control socket is 0600 in a 0700 folder, and a peer of another uid is refused
  (SO_PEERCRED) even when the file modes are opened up;
- a private key readable by others is refused, with the fix named;
- with a passphrase-protected key in ssh-agent, no passphrase or key bytes reach any log
  or state file (a ``--verbose`` daemon, every file under its home searched);
- a changed host key stays refused across a daemon SIGKILL and restart.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemonproc import Daemon, Env, endpoint_up, get, wait_for
from tests.helpers.deps import require_tool
from tests.helpers.services import HTTP_BODY
from tests.helpers.soak import proc_tcp
from tests.helpers.sshd import free_port

# The daemon test's fixtures: an isolated user with a config, a real sshd, daemon starter.

pytestmark = pytest.mark.timeout(120)


def _up(env: Env) -> dict[str, Any]:
    (env.logs).mkdir(exist_ok=True)
    (env.logs / "job.log").write_text(env.log_line())
    return wait_for(lambda: endpoint_up(env), "the tunnel")  # type: ignore[no-any-return]


def test_forwards_listen_on_loopback_only(env: Env, daemons: Callable[[], Daemon]) -> None:
    # Two forwards, one with an explicit loopback bind address; plus a SOCKS forward.
    text = env.config_text(
        [f"{free_port()}:127.0.0.1:{env.http_port}", f"127.0.0.1:0:127.0.0.1:{env.http_port}"]
    )
    env.config.write_text(
        text.replace("hold_seconds = 10", "hold_seconds = 10\ndynamic_forwards = ['0']")
    )
    daemon = daemons()
    ep = _up(env)
    assert len(ep["forwards"]) == 3
    listening = {local for state, local, _ in proc_tcp(daemon.proc.pid) if state == "LISTEN"}
    ports = {f["local_port"] for f in ep["forwards"]}
    assert {port for _, port in listening} == ports, (listening, ports)
    for host, _ in listening:
        assert ipaddress.ip_address(host).is_loopback, listening
    assert {f["bind_address"] for f in ep["forwards"]} == {"127.0.0.1"}
    assert get(ep["forwards"][0]["local_port"]) == HTTP_BODY


@pytest.fixture
def open_runtime_dir(env: Env) -> Iterator[Path]:
    """XDG_RUNTIME_DIR outside pytest's 0700 tmp dir, so another user can reach it if
    the modes allow: then SO_PEERCRED, not the file modes, is what must refuse."""
    top = Path(tempfile.mkdtemp(prefix="jt-sec-"))
    os.chmod(top, 0o711)
    runtime = top / "run"
    runtime.mkdir(mode=0o700)  # a runtime dir must be 0700 (else platformdirs leaves it)
    env.vars["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        yield runtime
    finally:
        subprocess.run(["rm", "-rf", str(top)], check=False)


def _as_nobody(path: Path) -> str:
    """Connect to ``path`` as uid/gid 65534 in a forked child; what it saw."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(str(path))
            # The daemon answers a refused peer at once; a request written now could
            # race the close (EPIPE), so only ask if the socket is still open.
            data = b""
            with contextlib.suppress(OSError):
                if not select.select([s], [], [], 1.0)[0]:
                    s.sendall(b'{"v": 1, "id": 1, "cmd": "status", "args": {}}\n')
                while chunk := s.recv(65536):
                    data += chunk
            os.write(w, data or b"EOF")
        except BaseException as exc:
            os.write(w, f"child error: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return out.decode(errors="replace")


def test_control_socket_is_private_and_refuses_another_uid(
    env: Env, daemons: Callable[[], Daemon], open_runtime_dir: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to become another user")
    daemon = daemons()
    sock = open_runtime_dir / "jobtunnel" / "control.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    # As created, another user cannot even reach the socket.
    assert "PermissionError" in _as_nobody(sock)
    # With the modes opened up, the daemon itself refuses by the peer's uid.
    os.chmod(open_runtime_dir, 0o711)
    os.chmod(sock.parent, 0o711)
    os.chmod(sock, 0o666)
    reply = json.loads(_as_nobody(sock))
    assert reply["ok"] is False and "not the daemon's user" in reply["error"]
    assert "endpoints" not in json.dumps(reply)
    wait_for(lambda: "uid 65534" in daemon.text(), "the refusal in the daemon log")
    os.chmod(open_runtime_dir, 0o700)
    assert env.status()["daemon"]["pid"] == daemon.proc.pid  # its own user still gets in


def test_a_private_key_readable_by_others_is_refused(
    env: Env, daemons: Callable[[], Daemon], tmp_path: Path
) -> None:
    loose = tmp_path / "keys" / "id_loose"
    loose.parent.mkdir()
    loose.write_bytes(env.sshd.client_key.read_bytes())
    loose.chmod(0o644)
    env.config.write_text(env.config.read_text().replace(str(env.sshd.client_key), str(loose)))
    daemon = daemons()
    (env.logs).mkdir(exist_ok=True)
    (env.logs / "job.log").write_text(env.log_line())
    wait_for(lambda: "readable by others" in daemon.text(), "the refusal in the log")
    text = daemon.text()
    assert f"chmod 600 {loose}" in text
    time.sleep(1.0)
    assert endpoint_up(env) is None
    [ep] = env.status()["endpoints"]
    assert ep["last_error"] and "auth" in (ep["last_error_kind"] or "")
    loose.chmod(0o600)  # the named fix works without a restart
    wait_for(lambda: endpoint_up(env), "the tunnel once the key is 0600", timeout=30)


class VerboseDaemon(Daemon):
    """``jobtunnel run --verbose``: debug logging is where secrets would leak first."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.log = env.home / f"daemon-verbose-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobtunnel.daemon", "run", "--verbose"],
                env=env.vars,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Path]:
    require_tool("ssh-agent", "openssh-client")
    require_tool("ssh-add", "openssh-client")
    sock = tmp_path / "agent" / "sock"
    sock.parent.mkdir(mode=0o700)
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: sock.exists() or proc.poll() is not None, "ssh-agent's socket", 10)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield sock
    finally:
        proc.kill()
        proc.wait(10)


def test_passphrase_key_via_agent_leaves_no_secret_in_any_file(
    env: Env, agent: Path, tmp_path: Path
) -> None:
    keygen = require_tool("ssh-keygen", "openssh-client")
    passphrase = "Tr0ub4dor&3-correct-horse-" + os.urandom(6).hex()
    keys = tmp_path / "keys"  # outside the daemon's home: only copies would be found there
    keys.mkdir(mode=0o700)
    key = keys / "id_encrypted"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", passphrase, "-C", "enc", "-f", str(key)],
        check=True,
    )
    # Only the encrypted key may log in; the daemon gets it only through the agent.
    env.sshd.authorized_keys.write_text(Path(f"{key}.pub").read_text())
    askpass = keys / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
    askpass.chmod(0o700)
    added = subprocess.run(
        ["ssh-add", str(key)],
        env={
            **os.environ,
            "SSH_AUTH_SOCK": str(agent),
            "SSH_ASKPASS": str(askpass),
            "SSH_ASKPASS_REQUIRE": "force",
            "DISPLAY": ":0",
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert added.returncode == 0, added.stderr
    env.config.write_text(
        env.config.read_text().replace(f"identity_files = ['{env.sshd.client_key}']", "")
    )
    env.vars["SSH_AUTH_SOCK"] = str(agent)
    daemon = VerboseDaemon(env)
    try:
        daemon.wait_ready()
        ep = _up(env)
        assert get(ep["forwards"][0]["local_port"]) == HTTP_BODY
        # A reconnect authenticates again.
        env.sshd.kill_sessions()
        wait_for(lambda: (e := endpoint_up(env)) and e["reconnects"] >= 1, "the reconnect")
    finally:
        daemon.kill(signal.SIGTERM)
    assert "DEBUG" in daemon.text()  # it was verbose

    # Every secret form: the passphrase, and slices of the private key file's base64
    # body and of its decoded bytes (the encrypted blob).
    body = "".join(
        line for line in key.read_text().splitlines() if line and not line.startswith("-----")
    )
    raw = base64.b64decode(body)
    needles = [passphrase.encode(), passphrase.encode("utf-16-le")]
    needles += [body[i : i + 24].encode() for i in range(0, len(body) - 24, 24)]
    needles += [raw[i : i + 24] for i in range(64, len(raw) - 24, 24)]
    searched = 0
    for path in sorted(env.home.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        searched += 1
        for needle in needles:
            assert needle not in data, f"secret bytes in {path}"
    assert searched >= 4  # logs, state, known_hosts, config at least


def test_a_changed_host_key_stays_refused_across_a_daemon_kill_and_restart(
    env: Env, daemons: Callable[[], Daemon]
) -> None:
    """tests/e2e/test_daemon.py shows the refusal and `jobtunnel trust`; here a restarted
    daemon (fresh memory, pins from the known_hosts file only) must refuse too, and a
    client of the forward never gets bytes from the impostor."""
    daemon = daemons()
    ep = _up(env)
    port = ep["forwards"][0]["local_port"]
    env.sshd.stop()
    env.sshd.new_host_key()
    env.sshd.start()

    def refused() -> bool:
        return any(e["last_error_kind"] == "host_key_changed" for e in env.status()["endpoints"])

    wait_for(refused, "the changed key to be refused")
    daemon.kill(signal.SIGKILL)
    daemon = daemons()
    wait_for(refused, "the changed key to be refused by the restarted daemon")
    assert "Host key changed" in daemon.text()
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.settimeout(15)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                data += chunk
    assert HTTP_BODY not in data and b"HTTP/1.0 200" not in data
    assert endpoint_up(env) is None
    known_hosts = Path(env.vars["XDG_STATE_HOME"]) / "jobtunnel" / "known_hosts"
    assert len(known_hosts.read_text().splitlines()) == 1  # the old pin, not replaced
