"""The versions installed beside the base install: ``<root>/versions/<version>/``, each
the unpacked wheel of a bundle, complete or absent: it is unpacked into a hidden temporary
folder, every file fsynced, then renamed into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agent.state.durable import fsync_dir
from agent.update.bundle import Bundle


class VersionStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "versions"
        self.downloads = root / "downloads"

    def path(self, version: str) -> Path:
        return self.versions / version

    def installed(self, version: str | None) -> bool:
        return version is not None and self.path(version).is_dir()

    def clean(self) -> None:
        """Remove what an interrupted unpack, removal or download left behind."""
        self._clean_versions()
        self.downloads.mkdir(parents=True, exist_ok=True)
        for leftover in self.downloads.iterdir():
            leftover.unlink(missing_ok=True)

    def _clean_versions(self) -> None:
        self.versions.mkdir(parents=True, exist_ok=True)
        for leftover in self.versions.glob(".*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def install(self, bundle: Bundle) -> Path:
        """``bundle``'s version under versions/, replacing an older copy of it (never the
        running version: the caller refuses that)."""
        self._clean_versions()
        temp = self.versions / f".new-{bundle.version}"
        temp.mkdir()
        bundle.extract_wheel(temp)
        for folder, _, _ in os.walk(temp):
            fsync_dir(Path(folder))
        self._remove(bundle.version)
        target = self.path(bundle.version)
        os.rename(temp, target)
        fsync_dir(self.versions)
        return target

    def keep_only(self, *versions: str | None) -> None:
        """Remove every installed version but ``versions``."""
        for folder in self.versions.iterdir():
            if not folder.name.startswith(".") and folder.name not in versions:
                self._remove(folder.name)

    def _remove(self, version: str) -> None:
        folder = self.path(version)
        if not folder.exists():
            return
        trash = self.versions / f".old-{version}"
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(folder, trash)
        fsync_dir(self.versions)
        shutil.rmtree(trash)
