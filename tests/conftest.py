"""Shared fixtures: a tiny synthetic dataset cache for the whole session, smoke configs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared-data cache shared by every test of the session (generated on first use)."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture()
def smoke_overrides(data_cache: Path) -> list[str]:
    """`--set` overrides that point a smoke-preset run at the session's data cache."""
    return [f"data.cache_dir={data_cache}"]
