"""Shared by the disk-full tests: a disk that fills during `torch.save`, and `shutil.disk_usage`
reporting a chosen free space."""

from __future__ import annotations

import errno
import os
import shutil
from types import SimpleNamespace
from typing import IO

import pytest
import torch

HINT = "free some space and run the same command again"  # the end of every disk-full line


class DiskWithRoom:
    """A file on a disk with `room` bytes left: the write that does not fit writes what fits,
    then raises ENOSPC as the OS does."""

    def __init__(self, file: IO[bytes], room: int):
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self.room:
            self.file.write(data[:self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def report_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """Make `shutil.disk_usage` report `free` bytes free (of 1 GiB) everywhere."""
    total = 1 << 30
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: SimpleNamespace(total=total, used=total - free, free=free))


def fill_disk_in_torch_save(monkeypatch: pytest.MonkeyPatch, room: int, saves_first: int = 0
                            ) -> None:
    """After `saves_first` more `torch.save` calls that fit, every one writes into a disk with
    `room` bytes left (torch's own errors follow)."""
    real_save, calls = torch.save, []

    def save(obj: object, file: IO[bytes]) -> None:
        calls.append(None)
        real_save(obj, file if len(calls) <= saves_first else DiskWithRoom(file, room))

    monkeypatch.setattr(torch, "save", save)
