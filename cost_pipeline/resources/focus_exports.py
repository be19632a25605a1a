"""The folder cloud providers deliver FOCUS exports into (`FOCUS_EXPORT_DIR`), and its twin.

Files are grouped into *deliveries*: a delivery is the set of export files in one folder (AWS
Data Exports, Azure Cost Management and GCP all write one folder per export run, splitting
large runs into parts). A delivery's instant is the newest modification time of its files:
when that delivery was written. A re-delivery of older content (same bytes, written again) is
therefore the newest delivery, and must not be skipped for its content having been seen before
(`lib.focus.delivery_is_new` keys ingested files by path and content).
The export *output* folder (`focus_export` asset) is here too, since it is the same domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from cost_pipeline.demo.infrastructure import write_demo_focus_exports
from cost_pipeline.environment import state_dir
from cost_pipeline.lib.focus import is_focus_file
from cost_pipeline.resources.warehouse import CostConfigResource


@dataclass(frozen=True)
class Delivery:
    """One export run: its folder (relative to the export root), files and instant."""

    name: str
    files: tuple[Path, ...]
    delivered_at: datetime


class FocusExports(dg.ConfigurableResource):
    """FOCUS files under `path`; an empty `path` means the source is not configured."""

    path: str = ""
    output_dir: str = Field(
        default="", description="Where `focus_export` writes; default <state dir>/focus_export."
    )

    @property
    def is_configured(self) -> bool:
        return bool(self.path)

    def export_dir(self) -> Path:
        return (
            Path(self.output_dir).expanduser() if self.output_dir else state_dir() / "focus_export"
        )

    def root(self) -> Path:
        return Path(self.path).expanduser()

    def list_files(self) -> list[Path]:
        """FOCUS data files (CSV, CSV.gz, Parquet) in path order; a missing folder is an error."""
        root = self.root()
        if not root.is_dir():
            raise FileNotFoundError(f"FOCUS export folder {root} does not exist or is not a folder")
        return sorted(p for p in root.rglob("*") if p.is_file() and is_focus_file(p))

    def deliveries(self) -> list[Delivery]:
        """The deliveries found, oldest first (ties broken by folder name)."""
        root = self.root()
        groups: dict[Path, list[Path]] = {}
        for f in self.list_files():
            groups.setdefault(f.parent, []).append(f)
        out = [
            Delivery(
                name=str(folder.relative_to(root)),
                files=tuple(files),
                delivered_at=datetime.fromtimestamp(max(f.stat().st_mtime for f in files), UTC),
            )
            for folder, files in groups.items()
        ]
        return sorted(out, key=lambda d: (d.delivered_at, d.name))


class FocusExportsTwin(FocusExports):
    """Offline twin: the demo's AWS- and GCP-style deliveries, written into `path` (default
    <state dir>/demo/focus) on first use."""

    cost_config: CostConfigResource = Field(default_factory=CostConfigResource)

    @property
    def is_configured(self) -> bool:
        return True

    def root(self) -> Path:
        root = super().root() if self.path else state_dir() / "demo" / "focus"
        write_demo_focus_exports(self.cost_config.get(), root)
        return root
