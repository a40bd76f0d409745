"""Keeps jobtunnel's ssh_config and its known_hosts export in step with the endpoints.

The service hands in every status snapshot it publishes (already coalesced); the files
are rewritten (atomically, 0600) only when their text changes: a new or moved endpoint,
an ended or forgotten one (its block goes), a new pin. The text itself is
:func:`jobtunnel.daemon.core.sshconfig.export`'s; with ``ssh.proxy_jump`` set, the
bastion's block and its pin (from the same store, under the bastion's own identity, as
the daemon's links pin it) come with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import paths
from ..api.schema import StatusSnapshot, TunnelState
from ..config import Config
from ..core.address import parse_user_hostport
from ..core.sshconfig import Cluster, Settings, export
from ..core.throttle import Seen
from ..engine.auth import default_identity_files
from ..engine.hostkeys import HostKeyStore
from ..files import private_dir, replace_atomically

__all__ = ["SshExport", "bastion_of", "clusters_of", "identity_files"]

log = logging.getLogger(__name__)


def identity_files(config: Config) -> tuple[str, ...]:
    """The keys the daemon offers, in its order (ssh skips the ones that do not exist)."""
    configured = [str(Path(f).expanduser()) for f in config.ssh.identity_files]
    return tuple(configured or (str(p) for p in default_identity_files()))


def bastion_of(config: Config) -> Cluster | None:
    """The ``ssh.proxy_jump`` host as the links see it (None: connect directly), keyed as
    its pin is: the same parse as :meth:`TunnelOptions.bastion`."""
    if not config.ssh.proxy_jump:
        return None
    user, host, port = parse_user_hostport(config.ssh.proxy_jump)
    return Cluster(user, host, port)


def clusters_of(snapshot: StatusSnapshot) -> tuple[list[Cluster], dict[tuple[str, str, int], str]]:
    """The live endpoints of a snapshot (not ended, with an alias) and their aliases."""
    clusters: list[Cluster] = []
    names: dict[tuple[str, str, int], str] = {}
    for ep in snapshot.endpoints:
        if ep.state == TunnelState.ENDED or not ep.ssh_alias:
            continue
        cluster = Cluster(ep.user, ep.host, ep.port, ep.job_id)
        clusters.append(cluster)
        names[cluster.key] = ep.ssh_alias
    return clusters, names


class SshExport:
    """The two files; :meth:`update` after every published status."""

    def __init__(
        self,
        host_keys: HostKeyStore,
        config_file: Path | None = None,
        known_hosts_file: Path | None = None,
    ) -> None:
        self.host_keys = host_keys
        self.config_file = config_file or paths.ssh_config_file()
        self.known_hosts_file = known_hosts_file or paths.ssh_known_hosts_file()
        self._written: tuple[str, str] | None = None
        self._pins: dict[tuple[str, str, int], str] = {}
        self._pins_stamp: tuple[int, int] | None = None
        self._seen = Seen()
        self.error: str | None = None

    def _current_pins(self) -> dict[tuple[str, str, int], str]:
        try:
            st = self.host_keys.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        if stamp != self._pins_stamp:
            self._pins = {(p.user, p.host, p.port): p.key_text() for p in self.host_keys.pins()}
            self._pins_stamp = stamp
        return self._pins

    def update(self, snapshot: StatusSnapshot, config: Config) -> None:
        """Rewrite the files if what they should say changed; errors are logged once."""
        clusters, names = clusters_of(snapshot)
        try:
            bastion = bastion_of(config)
            settings = Settings(identity_files(config), str(self.known_hosts_file), bastion)
            result = export(clusters, self._current_pins(), settings, names)
        except ValueError as exc:  # one of our own paths holds a line break
            self._failed(f"cannot write {self.config_file}: {exc}")
            return
        for cluster, why in result.refused:
            if not self._seen.first(f"{cluster.user}@{cluster.host}:{cluster.port}", why):
                continue
            if cluster == bastion:
                log.warning(
                    "ssh_config: no ProxyJump in any block, %r@%r port %d not written: %s",
                    cluster.user,
                    cluster.host,
                    cluster.port,
                    why,
                )
            else:
                log.warning(
                    "ssh_config: no block for %r@%r port %d: %s",
                    cluster.user,
                    cluster.host,
                    cluster.port,
                    why,
                )
        text = (result.config, result.known_hosts)
        if text == self._written:
            return
        try:
            private_dir(self.config_file.parent)
            # Pins first: a block is never there before the key it is checked against.
            replace_atomically(self.known_hosts_file, result.known_hosts)
            replace_atomically(self.config_file, result.config)
        except OSError as exc:
            self._failed(f"cannot write {self.config_file}: {exc.strerror or exc}")
            return
        if self._written is None or self.error is not None:
            log.info("ssh_config: %d clusters in %s", len(clusters), self.config_file)
        self._written = text
        self.error = None

    def _failed(self, message: str) -> None:
        if message != self.error:
            log.error("ssh_config: %s", message)
        self.error = message
