"""Shared fixtures: a registry on a real SQLite file and on the real PostgreSQL server.

Every registry test runs on both databases. Each PostgreSQL test gets a
schema of its own (via ``search_path``), dropped afterwards. Where the
server is unreachable the PostgreSQL half is skipped, except when
``TVSTORE_REQUIRE_POSTGRES=1`` (set by ``.ci/run``): then it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # shared contract/helper modules

from models import TinyModels, make_tiny_models  # noqa: E402

PG_ADMIN_URL = os.environ.get("TVSTORE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("TVSTORE_REQUIRE_POSTGRES") == "1"


def _pg_engine():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_available() -> bool:
    from sqlalchemy import text

    try:
        with _pg_engine().connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception as exc:  # pragma: no cover - depends on the machine
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required (TVSTORE_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        return False


@contextmanager
def pg_schema(prefix: str = "t") -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, private schema (dropped afterwards)."""
    from sqlalchemy import text

    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    engine = _pg_engine()
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def pg_url(pg_available: bool) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, private schema."""
    if not pg_available:
        pytest.skip("PostgreSQL server not reachable at 127.0.0.1:5432")
    with pg_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def blob_dir(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def registry(database_url: str, blob_dir: Path):
    from tvstore import Registry

    reg = Registry.open(database_url=database_url, blob_url=str(blob_dir))
    reg.init()
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """A tiny BERT base and fine-tunes of it, as real files on disk (built once)."""
    return make_tiny_models(tmp_path_factory.mktemp("models"))


def tvstore_executable() -> str:
    """The ``tvstore`` script installed beside this interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).parent / "tvstore"
    found = str(beside) if beside.exists() else shutil.which("tvstore")
    if found is None:
        pytest.fail("the tvstore command is not installed: pip install -e .")
    return found


class Cli:
    """Runs the installed ``tvstore`` command in a subprocess against one registry."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def __call__(self, *args: str, check: bool = True, expect: int | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [tvstore_executable(), *map(str, args)], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=300
        )
        wanted = 0 if expect is None and check else expect
        if wanted is not None:
            assert proc.returncode == wanted, (
                f"tvstore {' '.join(map(str, args))} exited {proc.returncode}, wanted {wanted}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc


@pytest.fixture
def cli(database_url: str, blob_dir: Path, tmp_path: Path) -> Cli:
    env = {**os.environ, "TVSTORE_DATABASE_URL": database_url, "TVSTORE_BLOB_URL": str(blob_dir)}
    env.pop("TVSTORE_HOME", None)
    return Cli(env, tmp_path)
