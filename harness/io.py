"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

A write goes to `.<name>.<16 hex digits>.tmp` beside the file, then is renamed over it; a writer
killed in between leaves that temporary file behind (`remove_temp_files`). A write that finds the
disk or the quota full removes its temporary file and raises a UserError, one line that names
the file and says how much it needs and how much is free.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import yaml

from harness.errors import UserError

# this module's temporary names, `.<name>.<random>.tmp` (random: 16 hex digits, or the 8
# characters of tempfile.mkstemp in files that earlier versions left)
_TEMP = re.compile(r"\.(.+)\.(?:[0-9a-f]{16}|[0-9a-z_]{8})\.tmp")
# the errors of a write that ran out of room, in the words of the one-line message
_OUT_OF_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
# how torch.save's zip writer (caffe2 inline_container.cc) reports a write that failed
_TORCH_WRITE_FAILED = re.compile(r"unexpected pos|failed writing|file write failed")
_NEARLY_FULL = 1 << 20  # bytes: with less free, a failed torch write is put down to a full disk


def atomic_write(
    path: str | Path,
    write: Callable[[IO[bytes]], None],
    size: int | None = None,  # bytes the file will have, if known (for the disk-full message)
) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over.

    The file gets the mode a plain `open(path, "w")` would give it (0666 less the umask). When
    the disk or the quota is full, `path` is left as it was, the temporary file is removed and a
    UserError says so.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        reason = _out_of_room(error, path.parent)  # (before the removal frees the space)
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if reason is None:
            raise
        raise UserError(_out_of_room_message(path, reason, size, written)) from error


def append_text(path: str | Path, text: str) -> None:
    """Append `text` (UTF-8) to `path`, whole or not at all: when the disk or the quota is full,
    the file is cut back to its old end and a UserError says so, as `atomic_write` does."""
    path = Path(path)
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        end = os.fstat(fd).st_size
        left = memoryview(data)
        try:
            while left:
                left = left[os.write(fd, left):]
        except Exception as error:
            os.ftruncate(fd, end)
            reason = _out_of_room(error, path.parent)
            if reason is None:
                raise
            raise UserError(_out_of_room_message(path, reason, len(data), 0)) from error
    finally:
        os.close(fd)


def _out_of_room(error: BaseException, folder: Path) -> str | None:
    """Why `error`, raised while writing into `folder`, is a full disk or quota (the words of
    `_OUT_OF_ROOM`); None when it is something else, or an interrupt."""
    if not isinstance(error, Exception):
        return None
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and all(link is not seen for seen in chain):
        chain.append(link)
        link = link.__cause__ or link.__context__
    for link in chain:
        if isinstance(link, OSError) and link.errno in _OUT_OF_ROOM:
            return _OUT_OF_ROOM[link.errno]
    # torch's writer may say only that a write failed: believe it is the disk when it is full
    torch_failed = any(isinstance(link, RuntimeError) and _TORCH_WRITE_FAILED.search(str(link))
                       for link in chain)
    if torch_failed and _free_bytes(folder) < _NEARLY_FULL:
        return _OUT_OF_ROOM[errno.ENOSPC]
    return None


def out_of_room_line(error: OSError) -> str | None:
    """The one line for an OSError that a full disk or quota raised outside the atomic writes
    (creating a directory, a lock file); None for any other error."""
    if error.errno not in _OUT_OF_ROOM:
        return None
    path = Path(error.filename) if error.filename else None
    if path is None:
        return f"{_OUT_OF_ROOM[error.errno]}; free some space and run the same command again"
    return _out_of_room_message(path, _OUT_OF_ROOM[error.errno], None, 0)


def _out_of_room_message(path: Path, reason: str, size: int | None, written: int) -> str:
    """The one line for a write of `path` that ran out of room after `written` bytes."""
    details = []
    if size is not None and size > written:
        details.append(f"writing it needs about {_human_bytes(size)}")
    elif written:
        details.append(f"writing it needs more than {_human_bytes(written)}")
    if reason == _OUT_OF_ROOM[errno.ENOSPC]:  # (a quota is not what the disk has free)
        details.append(f"{_human_bytes(_free_bytes(path.parent))} free there")
    known = f" ({', '.join(details)})" if details else ""
    return f"{path}: {reason}{known}; free some space and run the same command again"


def _free_bytes(folder: Path) -> int:
    """Bytes free to unprivileged users on the filesystem of `folder` (or of its nearest
    existing parent, if it could not be made)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _human_bytes(count: int) -> str:
    """`count` bytes as `df -h` would put it: 512 B, 16.0 KiB, 41.3 MiB, 2.0 GiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def remove_temp_files(folder: Path, names: re.Pattern[str]) -> None:
    """Delete the temporary files that interrupted atomic writes of files named like `names`
    (matched against the whole name) left in `folder`."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if (found := _TEMP.fullmatch(path.name)) and names.fullmatch(found.group(1)):
            path.unlink(missing_ok=True)


def read_text_file(path: str | Path, fix: str) -> str:
    """The UTF-8 text of `path`; a UserError naming the file, the first bad byte and `fix`
    (what the user can do) when it is not UTF-8."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        bad = error.object[error.start]
        raise UserError(f"{path}: not UTF-8 text (byte {error.start} is {bad:#04x}); {fix}"
                        ) from None


def read_json_file(path: str | Path, fix: str) -> Any:
    """The JSON content of `path`; a UserError naming the file, where it is damaged and `fix`
    when it is not UTF-8 or not JSON."""
    try:
        return json.loads(read_text_file(path, fix))
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: "
                        f"{error.msg}); {fix}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    data = text.encode()
    atomic_write(path, lambda file: file.write(data), size=len(data))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def atomic_write_yaml(path: str | Path, data: Any) -> None:
    """Write `data` as block-style YAML to `path` atomically."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """`torch.save(obj)` to `path` atomically."""
    atomic_write(path, lambda file: torch.save(obj, file), size=_storage_bytes(obj))


def _storage_bytes(obj: Any) -> int:
    """The bytes of the distinct tensor storages in `obj` (through dicts, lists and tuples):
    about the size of `torch.save(obj)`, which adds little beyond them."""
    storages: dict[tuple[str, int], int] = {}
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[(str(storage.device), storage.data_ptr())] = storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return sum(storages.values())
