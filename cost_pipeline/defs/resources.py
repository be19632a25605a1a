"""The one place resources are instantiated: real clients from env vars, offline twins in the demo.

Secrets are read only through `dg.EnvVar`, so they never appear in run config, logs or metadata.
"""

from __future__ import annotations

import os
from typing import Any

from cost_pipeline import environment
from cost_pipeline.lib.config import CostConfig, load_config
from cost_pipeline.resources.landing import LandingFolderResource
from cost_pipeline.resources.warehouse import CostConfigResource, WarehouseResource


def build_resources(config: CostConfig | None = None) -> dict[str, Any]:
    """Resources for the current environment; `config` defaults to `COST_PIPELINE_CONFIG`."""
    config = config or load_config(environment.config_file() or None)
    demo = config.demo.enabled
    return {
        "warehouse": WarehouseResource(url=environment.default_warehouse_url()),
        "cost_config": CostConfigResource(path=environment.config_file()),
        "interaction_log": LandingFolderResource(
            path=environment.env_or_demo_dir(
                environment.INTERACTION_LOG_ENV, "interactions", demo=demo
            )
        ),
    }


def is_set(name: str) -> bool:
    return bool(os.environ.get(name))
