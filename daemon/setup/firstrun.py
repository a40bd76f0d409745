"""``jobtunnel init``: from nothing to a key, a config and a watched folder.

Every step only creates what is missing, so running it again changes nothing that
exists. The login service is another command (``jobtunnel service install``); the CLI
offers it. No network call is made: the user finds their public IP themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..config import Config, ConfigError, default_config_text, load_config
from ..files import write_new
from . import keys
from .doctor import service_file, usable_keys

__all__ = ["InitResult", "init", "rescale_steps", "write_default_config"]


@dataclass
class InitResult:
    """What ``init`` found and did; ``done`` lists the changes, in order."""

    done: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    key: Path | None = None
    public: keys.OwnKey | None = None
    config_error: str | None = None
    folders: list[Path] = field(default_factory=list)
    service_file: Path | None = None
    service_installed: bool = False


def write_default_config(path: Path) -> bool:
    """Write the commented default config at ``path``; False when a file is already there."""
    if path.exists():
        return False
    try:
        write_new(path, default_config_text())
    except FileExistsError:
        return False
    return True


def init(config_path: Path | None = None, passphrase: str | None = None) -> InitResult:
    """Create whatever is missing: the key (Ed25519, own location), the config, the
    watched folders. Raises KeyFileError/OSError only for what cannot be created."""
    result = InitResult()
    path = config_path or paths.config_file()
    if write_default_config(path):
        result.done.append(f"wrote the commented default config {path}")
    else:
        result.kept.append(f"config {path}")
    try:
        config, _ = load_config(path)
    except ConfigError as exc:
        # Folders come from the config: with a broken one, make the key only.
        result.config_error = str(exc)
        config = Config()

    existing = usable_keys(config)
    if config.ssh.identity_files or keys.own_keys():
        result.key = existing[0] if existing else None
        if result.key:
            result.kept.append(f"key {result.key}")
    if result.key is None and not config.ssh.identity_files:
        result.key = keys.generate("ed25519", passphrase=passphrase)
        result.done.append(f"made a new Ed25519 key {result.key}")
    if result.key is not None:
        try:
            result.public = keys.public_key(result.key)
        except keys.KeyFileError:
            result.public = None

    if result.config_error is None:
        for folder in config.watch.folders:
            where = Path(folder).expanduser()
            result.folders.append(where)
            if where.is_dir():
                result.kept.append(f"watched folder {where}")
            else:
                where.mkdir(parents=True, exist_ok=True)
                result.done.append(f"created the watched folder {where}")

    result.service_file = service_file()
    result.service_installed = result.service_file.exists()
    return result


def rescale_steps(public: keys.OwnKey | None, folders: list[Path]) -> str:
    """What to do in Rescale's web UI, once per account."""
    where = folders[0] if folders else Path("~/JobLogs")
    key_words = (
        f"the public key:\n\n    {public.line}\n\n    ({public.fingerprint}; "
        "`jobtunnel keys show --copy` puts it on the clipboard)"
        if public
        else "your public key (`jobtunnel keys show`)"
    )
    return f"""\
In Rescale, once per account:
  1. Account -> Job Settings -> SSH Public Key: paste {key_words}
  2. Same page, Access Restriction (CIDR): your computer's current public IP address must
     be allowed. Find it in a browser (open https://ifconfig.me, or search "what is my
     IP") and enter it as ADDRESS/32, e.g. 203.0.113.7/32. Behind a company VPN or proxy
     the address is your company's: ask IT for its outbound range. jobtunnel itself
     makes no network call to find it.
  3. Start a job with SSH enabled; save its log into {where} (e.g. set it as your
     browser's download folder for job logs). jobtunnel connects when the log shows
     the cluster's address: `jobtunnel status` shows the tunnels.
"""
