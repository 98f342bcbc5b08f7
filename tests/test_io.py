"""Atomic writes: the files get the mode a plain open() gives them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from harness.io import atomic_torch_save, atomic_write_json, atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask-022", "umask-002"])
def test_atomically_written_files_follow_the_umask_like_open(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        atomic_write_json(tmp_path / "result.json", {"a": 1})
        atomic_torch_save(tmp_path / "network-snapshot-00000001.pt", {"a": 1})
        with open(tmp_path / "plain.txt", "w") as file:
            file.write("a")
    finally:
        os.umask(old)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    expected = {0o022: 0o644, 0o002: 0o664}[umask]
    assert modes == dict.fromkeys(
        ["config.yaml", "result.json", "network-snapshot-00000001.pt", "plain.txt"], expected)
