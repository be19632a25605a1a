"""The folder statements and exports are written to: a local path or any fsspec URL.

`output_url` resolves the configured folder (`reports.output_url`; default `reports` in the state
directory). `ReportFolder.write` puts bytes at a path relative to it: locally through a temporary
file renamed into place, so a reader never sees half a file; on an object store (`s3://...`) with
one put, which is atomic there. A URL whose fsspec package is not installed fails with the URL and
the package to install, before anything is computed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem


class ReportFolderError(ValueError):
    """The report folder cannot be opened (unknown protocol, package missing)."""


def output_url(configured: str, state_dir: Path) -> str:
    """The configured folder URL, or `<state_dir>/reports`."""
    return configured.strip() or str(state_dir / "reports")


class ReportFolder:
    """Writes files under one folder URL."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise ReportFolderError(
                f"report folder {self.url!r}: {exc} (install the fsspec package for its "
                "protocol, e.g. s3fs for s3://)"
            ) from None
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, relative: str) -> str:
        """The full path (local) or URL of a file in the folder."""
        full = f"{self.root.rstrip('/')}/{relative.lstrip('/')}"
        return full if self.is_local else self.fs.unstrip_protocol(full)

    def write(self, relative: str, data: bytes) -> str:
        """Write `data` to `relative` (parents created); return where it went."""
        full = f"{self.root.rstrip('/')}/{relative.lstrip('/')}"
        if self.is_local:
            parent = full.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            tmp = f"{full}.{uuid.uuid4().hex[:8]}.tmp"
            with self.fs.open(tmp, "wb") as out:
                out.write(data)
            Path(tmp).replace(full)
        else:
            self.fs.pipe_file(full, data)
        return self.path(relative)

    def read(self, relative: str) -> bytes:
        return self.fs.cat_file(f"{self.root.rstrip('/')}/{relative.lstrip('/')}")
