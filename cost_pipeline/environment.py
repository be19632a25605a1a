"""Where the pipeline keeps its state, and whether it runs the offline demo.

The one place that reads deployment environment variables besides `dg.EnvVar` secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

from cost_pipeline.lib.config import CONFIG_ENV

WAREHOUSE_ENV = "COST_WAREHOUSE_URL"
INTERACTION_LOG_ENV = "INTERACTION_LOG_DIR"


def state_dir() -> Path:
    """`$DAGSTER_HOME`, else `./.cost_pipeline/`: the warehouse file and demo data live here."""
    home = os.environ.get("DAGSTER_HOME")
    return (Path(home) if home else Path.cwd() / ".cost_pipeline").resolve()


def default_warehouse_url() -> str:
    """`COST_WAREHOUSE_URL`, else a SQLite file in `state_dir()`."""
    return os.environ.get(WAREHOUSE_ENV) or f"sqlite:///{state_dir() / 'cost_warehouse.db'}"


def demo_data_dir() -> Path:
    """Where `cost-pipeline demo` writes the generated company's files."""
    return state_dir() / "demo"


def config_file() -> str:
    """The configured file path, or "" for the packaged demo configuration."""
    return os.environ.get(CONFIG_ENV, "")


def env_or_demo_dir(env_var: str, demo_subdir: str, *, demo: bool) -> str:
    """A source folder from its env var; in the demo, the generated folder; else "" (off)."""
    value = os.environ.get(env_var, "")
    if value:
        return value
    return str(demo_data_dir() / demo_subdir) if demo else ""
