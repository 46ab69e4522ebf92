from pathlib import Path

import pytest

from tests import pg


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh, empty database on each backend: a SQLite file path, or a postgresql:// URL."""
    if request.param == "sqlite":
        yield str(tmp_path / "permission.db")
    else:
        with pg.fresh_schema() as url:
            yield url
