"""First-boot provisioning: install a config a technician left on the boot partition.

`python -m agent.cli.provision --boot /boot/firmware --etc /etc/broadcast-agent [--root /]`
(broadcast-agent-provision.service runs it on every boot where the file exists).

- `<boot>/broadcast-agent.yaml` becomes `<etc>/agent.yaml` (0640 root:broadcast-agent);
- every file in `<boot>/broadcast-agent-secrets/` becomes `<etc>/<name>`, beside the
  config (0600, owned by broadcast-agent); the config names them relative to itself
  (`token_file: source.token`, as in config/agent.yaml).

The new config is validated together with its secrets in a staging directory beside
`<etc>` first, so an invalid one changes nothing: it stays on the boot partition with
`broadcast-agent.error.txt` beside it listing every error, and the exit code is 2. Its
secrets do not stay there (anyone who takes the SD card out could read them): they are
copied to a root-only quarantine (`--quarantine`, one 0700 folder per attempt), then
overwritten and removed from the boot partition, and the error file says where they are. Every
file is written to a temporary name, fsynced and renamed, so a power cut leaves either the
old or the new file; the originals leave the boot partition only after that.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config.loader import ConfigError, load_config
from agent.service.logs import configure_logging
from agent.state.durable import fsync_dir

log = logging.getLogger("broadcast-agent.provision")

SERVICE_USER = "broadcast-agent"
BOOT_CONFIG = "broadcast-agent.yaml"
BOOT_SECRETS = "broadcast-agent-secrets"
BOOT_ERRORS = "broadcast-agent.error.txt"
CONFIG_NAME = "agent.yaml"
EXIT_OK, EXIT_INVALID = 0, 2


@dataclass(frozen=True)
class Owners:
    """Numeric ids from the target root's own passwd/group (None: not there)."""

    service_uid: int | None
    service_gid: int | None

    @classmethod
    def of_root(cls, root: Path) -> Owners:
        return cls(_lookup_id(root / "etc/passwd", SERVICE_USER),
                   _lookup_id(root / "etc/group", SERVICE_USER))


def _lookup_id(table: Path, name: str) -> int | None:
    """The id column (third) of `name` in an /etc/passwd or /etc/group style file."""
    try:
        lines = table.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    return None


def provision(boot: Path, etc: Path, owners: Owners, *, quarantine: Path) -> int:
    """Install `<boot>/broadcast-agent.yaml` (and its secrets) into `etc`; the exit code."""
    source = boot / BOOT_CONFIG
    if not source.is_file():
        log.info("nothing to provision: %s does not exist", source)
        return EXIT_OK
    secrets = sorted(p for p in (boot / BOOT_SECRETS).glob("*")
                     if p.is_file() and p.name != CONFIG_NAME)
    etc.mkdir(mode=0o750, parents=True, exist_ok=True)
    _set_owner(etc, 0, owners.service_gid, 0o750)
    errors = _validate_staged(source, secrets, boot, etc)
    if errors:
        if secrets:
            kept = _quarantine(secrets, quarantine)
            errors.append(f"note: the {len(secrets)} file(s) of {BOOT_SECRETS}/ were moved to "
                          f"{kept} (root only) and wiped from this partition; put them back "
                          "beside the fixed config")
        _write_atomically(boot / BOOT_ERRORS, "".join(f"{e}\n" for e in errors).encode())
        log.error("%s is invalid, left in place; errors in %s:\n%s",
                  source, boot / BOOT_ERRORS, "\n".join(errors))
        return EXIT_INVALID
    for secret in secrets:
        target = etc / secret.name
        _write_atomically(target, secret.read_bytes(), 0o600,
                          (owners.service_uid, owners.service_gid))
        log.info("installed secret %s as %s (0600)", secret, target)
    config = etc / CONFIG_NAME
    _write_atomically(config, source.read_bytes(), 0o640, (0, owners.service_gid))
    log.info("installed %s as %s (0640)", source, config)
    for original in (*secrets, source, boot / BOOT_ERRORS):
        original.unlink(missing_ok=True)
    if secrets:
        _remove_if_empty(boot / BOOT_SECRETS)
    fsync_dir(boot)
    log.info("removed the provisioning files from %s", boot)
    return EXIT_OK


def _quarantine(secrets: list[Path], quarantine: Path) -> Path:
    """Copy ``secrets`` into a new root-only folder under ``quarantine``, then overwrite
    and remove the originals; the folder."""
    quarantine.mkdir(mode=0o700, parents=True, exist_ok=True)
    quarantine.chmod(0o700)
    kept = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%dT%H%M%S-"), dir=quarantine))
    for secret in secrets:
        _write_atomically(kept / secret.name, secret.read_bytes(), 0o600, (0, 0))
    for secret in secrets:
        with open(secret, "r+b") as f:  # best effort: flash may keep older copies
            f.write(bytes(secret.stat().st_size))
            f.flush()
            os.fsync(f.fileno())
        secret.unlink()
        log.warning("moved secret %s to %s", secret, kept)
    _remove_if_empty(secrets[0].parent)
    fsync_dir(secrets[0].parent.parent)
    return kept


def _validate_staged(source: Path, secrets: list[Path], boot: Path, etc: Path) -> list[str]:
    """The errors of the config as the agent would load it once installed: beside the
    files already installed overlaid with the new secrets, with `<etc>/conf.d` merged on
    top. Error lines name the files where the technician wrote them."""
    with tempfile.TemporaryDirectory(prefix=".provision-", dir=etc) as staging_name:
        staging = Path(staging_name)
        staged_config = staging / CONFIG_NAME
        for installed in etc.iterdir():
            if installed.is_file():
                shutil.copyfile(installed, staging / installed.name)
        for secret in secrets:
            shutil.copyfile(secret, staging / secret.name)
        shutil.copyfile(source, staged_config)
        (staging / "conf.d").symlink_to(etc / "conf.d")
        try:
            load_config(staged_config)
        except ConfigError as error:
            renames = ((str(staged_config), str(source)), (str(staging), str(etc)))
            return [_renamed(line, renames) for line in error.errors]
    return []


def _renamed(line: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        line = line.replace(old, new)
    return line


def _write_atomically(target: Path, data: bytes, mode: int = 0o644,
                      owner: tuple[int | None, int | None] = (None, None)) -> None:
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as temp:
            os.fchmod(temp.fileno(), mode)
            uid, gid = owner
            if os.geteuid() == 0 and (uid, gid) != (None, None):
                os.fchown(temp.fileno(), -1 if uid is None else uid, -1 if gid is None else gid)
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _set_owner(path: Path, uid: int, gid: int | None, mode: int) -> None:
    path.chmod(mode)
    if os.geteuid() == 0 and gid is not None:
        os.chown(path, uid, gid)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError as error:
        log.warning("left %s in place: %s", directory, error.strerror)


def _inside(root: Path, path: Path) -> Path:
    return root / path.relative_to(path.anchor) if path.is_absolute() else root / path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.cli.provision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boot", type=Path, default=Path("/boot/firmware"),
                        help="the boot partition (default: %(default)s)")
    parser.add_argument("--etc", type=Path, default=Path("/etc/broadcast-agent"),
                        help="the config directory (default: %(default)s)")
    parser.add_argument("--quarantine", type=Path,
                        default=Path("/var/lib/broadcast-agent/quarantine"),
                        help="where the secrets of an invalid config go, root only "
                             "(default: %(default)s)")
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="the system root holding both, and its etc/passwd and etc/group "
                             "(default: %(default)s; another one to provision an image)")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO, "%(message)s")
    root: Path = args.root
    owners = Owners.of_root(root)
    if owners.service_uid is None:
        log.warning("user %s not found in %s: setting modes only", SERVICE_USER,
                    root / "etc/passwd")
    return provision(_inside(root, args.boot), _inside(root, args.etc), owners,
                     quarantine=_inside(root, args.quarantine))


if __name__ == "__main__":
    sys.exit(main())
