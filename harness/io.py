"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

A write goes to `.<name>.<16 hex digits>.tmp` beside the file, then is renamed over it; a writer
killed in between leaves that temporary file behind (`remove_temp_files`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml

# this module's temporary names, `.<name>.<random>.tmp` (random: 16 hex digits, or the 8
# characters of tempfile.mkstemp in files that earlier versions left)
_TEMP = re.compile(r"\.(.+)\.(?:[0-9a-f]{16}|[0-9a-z_]{8})\.tmp")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over.

    The file gets the mode a plain `open(path, "w")` would give it (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def remove_temp_files(folder: Path, names: re.Pattern[str]) -> None:
    """Delete the temporary files that interrupted atomic writes of files named like `names`
    (matched against the whole name) left in `folder`."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if (found := _TEMP.fullmatch(path.name)) and names.fullmatch(found.group(1)):
            path.unlink(missing_ok=True)


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
