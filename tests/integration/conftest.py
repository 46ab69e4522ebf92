from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness import InProcessMesh, start_mesh


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[InProcessMesh]:
    """The whole mesh in this process, on default settings, stopped after the test."""
    m = await start_mesh(tmp_path)
    try:
        yield m
    finally:
        await m.stop()
