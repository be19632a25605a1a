"""Shared fixtures: warehouses on SQLite and PostgreSQL, the demo config, a Dagster instance."""

from __future__ import annotations

import atexit
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from cost_pipeline.lib.config import CONFIG_ENV, CostConfig, load_config, packaged_config_path
from cost_pipeline.store.warehouse import Warehouse

POSTGRES_ENV = "COST_PIPELINE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
ENABLE_HINT = (
    f"PostgreSQL tests skipped: no server at {DEFAULT_POSTGRES_ADMIN_URL}. Start one (e.g. "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) or set "
    f"{POSTGRES_ENV} to an admin URL of a server where the tests may create databases."
)


def _postgres_admin_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_ADMIN_URL)
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return url
    except sa.exc.OperationalError:
        return None
    finally:
        engine.dispose()


_ADMIN_URL: str | bool | None = False


def postgres_admin_url() -> str:
    """The admin URL, or skip (locally) / fail (in CI, where these tests must run)."""
    global _ADMIN_URL
    if _ADMIN_URL is False:
        _ADMIN_URL = _postgres_admin_url()
    if _ADMIN_URL is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests. " + ENABLE_HINT)
        pytest.skip(ENABLE_HINT)
    return str(_ADMIN_URL)


_TEMPLATE: str | None = None


def _migrated_template(admin: sa.Engine, admin_url: str) -> str:
    """A database holding the migrated catalogue, made once per test process: each warehouse
    test copies it (CREATE DATABASE ... TEMPLATE) instead of creating ~370 day partitions."""
    global _TEMPLATE
    if _TEMPLATE is None:
        name = f"cost_pipeline_tmpl_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.engine.make_url(admin_url).set(database=name).render_as_string(False)
        wh = Warehouse(url)
        wh.migrate()
        wh.dispose()
        _TEMPLATE = name
        atexit.register(_drop_database, admin_url, name)
    return _TEMPLATE


def _drop_database(admin_url: str, name: str) -> None:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@contextmanager
def throwaway_postgres_database(*, migrated: bool = False) -> Iterator[str]:
    """Create a fresh PostgreSQL database (empty, or with the warehouse's tables); yield its
    URL; drop it afterwards."""
    admin_url = postgres_admin_url()
    name = f"cost_pipeline_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    template = f' TEMPLATE "{_migrated_template(admin, admin_url)}"' if migrated else ""
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"{template}')
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL warehouse (tables migrated) for one test, dropped afterwards."""
    with throwaway_postgres_database(migrated=True) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite warehouse (tables migrated) for one test."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    wh = Warehouse(url)
    wh.migrate()
    wh.dispose()
    return url


ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=ENGINES)
def db_engine(request: pytest.FixtureRequest) -> str:
    """The database engine a test runs on; shared, so a test using both a warehouse and a
    Dagster instance runs twice (all SQLite, all Postgres), not four times."""
    return request.param


@pytest.fixture
def warehouse_url(db_engine: str, request: pytest.FixtureRequest) -> str:
    """The warehouse URL on each supported engine: tests using it run on SQLite and Postgres."""
    return request.getfixturevalue("sqlite_url" if db_engine == "sqlite" else "postgres_url")


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    wh = Warehouse(warehouse_url)
    try:
        yield wh
    finally:
        wh.dispose()


@pytest.fixture
def dagster_instance(db_engine: str) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance on each supported storage: SQLite files, or dagster-postgres.

    The Postgres instance keeps its run, event-log and schedule storage in a throw-away
    database (skipped locally / failed in CI when no server is reachable, like `postgres_url`).
    """
    if db_engine == "sqlite":
        with dg.instance_for_test() as instance:
            yield instance
        return
    with throwaway_postgres_database() as url:
        # dagster-postgres takes a plain libpq URL.
        pg_url = sa.engine.make_url(url).set(drivername="postgresql")
        overrides = {
            "storage": {"postgres": {"postgres_url": pg_url.render_as_string(hide_password=False)}}
        }
        # The instance is disposed on exit; DROP DATABASE ... WITH (FORCE) ends any pooled
        # connection it leaves behind.
        with dg.instance_for_test(overrides=overrides) as instance:
            yield instance


@pytest.fixture(scope="session")
def demo_config() -> CostConfig:
    return load_config()


_PINNED: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """The packaged demo configuration with its window and partitions pinned to fixed dates.

    The product's demo follows today's date; tests must not, so every test that loads the
    default configuration (explicitly, through a resource, or through the partitions that the
    definitions build at import time) gets the window 2026-09-01 .. 2026-10-30 and daily
    partitions from 2026-01-01. Set before collection, because test modules import the
    definitions.
    """
    raw = yaml.safe_load(packaged_config_path().read_text())
    raw["demo"].update(start_date="2026-09-01", days=60)
    raw["partitions"] = {"first_day": "2026-01-01"}
    path = Path(tempfile.mkdtemp(prefix="cost-pipeline-config-")) / "demo_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    _PINNED["previous"] = os.environ.get(CONFIG_ENV)
    _PINNED["path"] = str(path)
    os.environ[CONFIG_ENV] = str(path)


def pytest_unconfigure(config: pytest.Config) -> None:
    previous = _PINNED.get("previous")
    if previous is None:
        os.environ.pop(CONFIG_ENV, None)
    else:
        os.environ[CONFIG_ENV] = previous


@pytest.fixture(scope="session")
def pinned_demo_window() -> Path:
    """The pinned demo configuration file (see `pytest_configure`)."""
    return Path(str(_PINNED["path"]))
