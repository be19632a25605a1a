"""A landing folder that an upstream system drops files into (the app's interaction log)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

LOG_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".parquet")


class LandingFolderResource(dg.ConfigurableResource):
    """Files under `path` (recursively); an empty `path` means the source is not configured."""

    path: str = ""

    @property
    def is_configured(self) -> bool:
        return bool(self.path)

    def list_files(self, suffixes: tuple[str, ...] = LOG_SUFFIXES) -> list[Path]:
        """Data files in name order, gzipped or not; a missing folder is an error, not 'empty'."""
        root = Path(self.path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"landing folder {root} does not exist or is not a folder")
        return sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and p.name.removesuffix(".gz").endswith(suffixes)
        )
