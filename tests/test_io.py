"""Atomic writes: the files get the mode a plain open() gives them; a full disk or quota is one
line naming the file, with the file as it was and no temporary file left."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

import pytest
import torch
from full_disk import HINT, fill_disk_in_torch_save, report_free

from harness.errors import UserError
from harness.io import (
    append_text,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
)

# what torch.save raises (its zip writer, inline_container.cc) when a write of its file failed
TORCH_WRITE_FAILED = "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"


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


def temp_files(folder: Path) -> list[str]:
    """The names of the temporary files in `folder`."""
    return [path.name for path in folder.iterdir() if path.name.endswith(".tmp")]


@pytest.mark.parametrize(("code", "words", "free"), [
    (errno.ENOSPC, "no space left on device", ", 4.0 KiB free there"),
    (errno.EDQUOT, "disk quota exceeded", ""),  # (the quota, not the disk, is full)
])
def test_a_full_disk_or_quota_is_one_line_and_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str, free: str
) -> None:
    path = tmp_path / "result.json"
    path.write_text("old")
    report_free(monkeypatch, 4096)

    def write(file: IO[bytes]) -> None:
        file.write(b"x" * 4096)
        raise OSError(code, os.strerror(code))

    with pytest.raises(UserError) as raised:
        atomic_write(path, write, size=10_000)
    assert str(raised.value) == f"{path}: {words} (writing it needs about 9.8 KiB{free}); {HINT}"
    assert path.read_text() == "old" and temp_files(tmp_path) == []


def test_torch_save_into_a_disk_that_fills_is_one_line_and_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's own error chain (ENOSPC from the file, then its zip writer's RuntimeError)."""
    path = tmp_path / "training-state-00000002.pt"
    atomic_torch_save(path, {"iteration": 1, "w": torch.ones(3)})
    fill_disk_in_torch_save(monkeypatch, room=5000)
    report_free(monkeypatch, 5000)
    with pytest.raises(UserError) as raised:
        atomic_torch_save(path, {"iteration": 2, "w": torch.zeros(1000, 1000)})
    assert str(raised.value) == (f"{path}: no space left on device (writing it needs about "
                                 f"3.8 MiB, 4.9 KiB free there); {HINT}")
    assert isinstance(raised.value.__cause__, RuntimeError)  # what torch raised, for --debug
    assert temp_files(tmp_path) == []
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["iteration"] == 1


@pytest.mark.parametrize(("free", "full"), [(64 << 10, True), (512 << 20, False)])
def test_torchs_failed_write_is_a_full_disk_only_when_the_disk_is_nearly_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, full: bool
) -> None:
    def failing_save(obj: object, file: IO[bytes]) -> None:
        file.write(b"PK" * 100)
        raise RuntimeError(TORCH_WRITE_FAILED)

    monkeypatch.setattr(torch, "save", failing_save)
    report_free(monkeypatch, free)
    path = tmp_path / "network-snapshot-00000002.pt"
    expected = UserError if full else RuntimeError  # (another failure stays what it was)
    with pytest.raises(expected) as raised:
        atomic_torch_save(path, {"w": torch.zeros(256)})
    if full:
        assert str(raised.value) == (f"{path}: no space left on device (writing it needs about "
                                     f"1.0 KiB, 64.0 KiB free there); {HINT}")
    else:
        assert str(raised.value) == TORCH_WRITE_FAILED
    assert not path.exists() and temp_files(tmp_path) == []


def test_an_append_that_does_not_fit_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.jsonl"
    append_text(path, '{"iteration": 2}\n')
    real_write, calls = os.write, []

    def filling_write(fd: int, data: bytes) -> int:  # 5 bytes fit, then the disk is full
        calls.append(fd)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", filling_write)
    report_free(monkeypatch, 0)
    with pytest.raises(UserError) as raised:
        append_text(path, '{"iteration": 4}\n')
    monkeypatch.undo()
    assert str(raised.value) == (f"{path}: no space left on device (writing it needs about "
                                 f"17 B, 0 B free there); {HINT}")
    assert path.read_text() == '{"iteration": 2}\n'
