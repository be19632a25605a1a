"""Where the pipeline keeps its state, and whether it runs the offline demo.

The one place that reads deployment environment variables besides `dg.EnvVar` secrets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cost_pipeline.lib.config import CONFIG_ENV

if TYPE_CHECKING:
    import dagster as dg

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


# -- executor: how a run's steps execute (a deployment choice, no code edit) -------------------

EXECUTOR_ENV = "COST_PIPELINE_EXECUTOR"
CELERY_BROKER_ENV = "COST_PIPELINE_CELERY_BROKER"
CELERY_BACKEND_ENV = "COST_PIPELINE_CELERY_BACKEND"
EXECUTORS = ("in_process", "multiprocess", "celery")
# dagster-celery's own defaults: RabbitMQ on this host, results over the broker (rpc://).
DEFAULT_CELERY_BROKER = "pyamqp://guest@localhost:5672//"
DEFAULT_CELERY_BACKEND = "rpc://"


def executor_name() -> str:
    """`COST_PIPELINE_EXECUTOR`: `in_process` (default), `multiprocess` or `celery`."""
    name = (os.environ.get(EXECUTOR_ENV) or "in_process").strip().lower()
    if name not in EXECUTORS:
        raise ValueError(
            f"{EXECUTOR_ENV}={os.environ.get(EXECUTOR_ENV)!r}: "
            f"expected one of {', '.join(EXECUTORS)}"
        )
    return name


def _env_source(env_var: str, default: str) -> str | dict[str, str]:
    """The variable as a Dagster `{env: ...}` source when set (resolved in the run, so a broker
    password never lands in the definitions or the run config), else the default."""
    return {"env": env_var} if os.environ.get(env_var) else default


def executor_definition() -> dg.ExecutorDefinition:
    """The `dg.ExecutorDefinition` named by `COST_PIPELINE_EXECUTOR`.

    - `in_process`: every step in the run's own process (steps take well under a second, a
      process per step spends ~4 s importing the code).
    - `multiprocess`: one child process per step, as many at once as the machine has CPUs.
    - `celery`: each step is a task on the Celery broker `COST_PIPELINE_CELERY_BROKER` (results
      on `COST_PIPELINE_CELERY_BACKEND`), executed by `dagster-celery` workers started with the
      same environment variables.
    """
    import dagster as dg

    name = executor_name()
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(
            {
                "broker": _env_source(CELERY_BROKER_ENV, DEFAULT_CELERY_BROKER),
                "backend": _env_source(CELERY_BACKEND_ENV, DEFAULT_CELERY_BACKEND),
            },
            name="celery",
        )
    return dg.in_process_executor


# -- sensors: how often the daemon evaluates them -----------------------------------------------

SENSOR_INTERVAL_ENV = "COST_PIPELINE_SENSOR_INTERVAL_SECONDS"
DEFAULT_SENSOR_INTERVAL_SECONDS = 60


def sensor_interval_seconds() -> int:
    """`COST_PIPELINE_SENSOR_INTERVAL_SECONDS`, else 60: every sensor's minimum interval.

    Read when the code location loads, so the daemon's sensors follow the variable it was started
    with; the end-to-end daemon test sets a few seconds. A value that is not a positive integer
    fails the load, naming the variable.
    """
    raw = os.environ.get(SENSOR_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_SENSOR_INTERVAL_SECONDS
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise ValueError(f"{SENSOR_INTERVAL_ENV}={raw!r}: expected a whole number of seconds >= 1")
    return seconds
