"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write(path, lambda file: file.write(text.encode()))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_write_yaml(path: str | Path, data: Any) -> None:
    """Write `data` as block-style YAML to `path` atomically."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """`torch.save(obj)` to `path` atomically."""
    atomic_write(path, lambda file: torch.save(obj, file))
