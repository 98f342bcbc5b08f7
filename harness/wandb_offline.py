"""W&B offline run files: what a run logged, read back without wandb's service.

wandb 0.31 keeps an offline run's config, history, summary and exit code only in
`run-<id>.wandb`: a 7-byte header (`:W&B`, 0xBEE1, version 0) followed by a LevelDB-style log
of 32 KiB blocks; each block holds records with a 7-byte header (CRC32-C, little-endian
length, kind: full/first/middle/last) whose payloads are `wandb_internal_pb2.Record`
protobufs. Logged tables are JSON files ({"columns", "data"}) under the run's `files/`.
A resumed run (a requeued trial) has one offline directory per attempt; `wandb sync` uploads
them all, so the run's history is the union of theirs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import UserError

MAGIC = b":W&B"
FILE_HEADER = 7  # magic, 0xBEE1 (little-endian), version byte
BLOCK = 32 * 1024  # bytes per log block (counted from the start of the file)
RECORD_HEADER = 7  # CRC32-C (4 bytes), payload length (2 bytes), kind (1 byte)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
TABLE_TYPE = "table-file"  # summary `_type` of a logged wandb.Table


@dataclass
class LoggedRun:
    """One W&B run: identity, flat config, scalar summary, history rows and logged tables."""

    run_id: str
    name: str = ""
    group: str = ""
    job_type: str = ""
    state: str = "running"  # "finished", "failed" or "running" (never finished)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def payloads(data: bytes, path: Path) -> Iterator[bytes]:
    """Record payloads of a .wandb log; stops quietly at a torn record (a run still writing)."""
    if data[: len(MAGIC)] != MAGIC:
        raise UserError(f"{path}: not a W&B run file (bad header); point --source wandb-offline "
                        "at a folder holding W&B offline run directories (offline-run-*)")
    position, pieces = FILE_HEADER, []
    while position + RECORD_HEADER <= len(data):
        space = BLOCK - position % BLOCK
        if space < RECORD_HEADER:  # block trailer padding
            position += space
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + RECORD_HEADER])
        start = position + RECORD_HEADER
        if kind == 0 or start + length > len(data):
            return
        body = data[start : start + length]
        position = start + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pieces = [body]
        elif kind == MIDDLE:
            pieces.append(body)
        elif kind == LAST:
            yield b"".join([*pieces, body])
            pieces = []


def _set_item(tree: dict[str, Any], item: Any) -> None:
    """Apply one protobuf config/summary/history item (a key or a nested key path)."""
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[path[-1]] = json.loads(item.value_json)


def _read_log(run: LoggedRun, path: Path) -> None:
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in payloads(path.read_bytes(), path):
        record = pb.Record.FromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group = record.run.display_name, record.run.run_group
            run.job_type = record.run.job_type
            for item in record.run.config.update:
                _set_item(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _set_item(run.config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _set_item(run.summary, item)
        elif kind == "history":
            step: dict[str, Any] = {}
            for item in record.history.item:
                _set_item(step, item)
            run.history.append(step)
        elif kind == "exit":
            run.state = "finished" if record.exit.exit_code == 0 else "failed"


def logged_tables(summary: dict[str, Any], read: Callable[[str], dict[str, Any] | None]
                  ) -> dict[str, pd.DataFrame]:
    """The run's logged tables by summary key, read with `read(relative path)`."""
    found = {}
    for key, value in sorted(summary.items()):
        if isinstance(value, dict) and value.get("_type") == TABLE_TYPE and "path" in value:
            content = read(value["path"])
            if content is not None:
                found[key] = pd.DataFrame(content["data"], columns=content["columns"])
    return found


def run_logs(root: Path, run_id: str | None = None) -> dict[str, list[Path]]:
    """Run id -> the `run-<id>.wandb` files of its offline directories under `root`, in time
    order (directory names `offline-run-YYYYmmdd_HHMMSS-<id>` sort by start time)."""
    pattern = (f"offline-run-*-{run_id}/run-{run_id}.wandb" if run_id
               else "offline-run-*/run-*.wandb")
    logs: dict[str, list[Path]] = {}
    for path in sorted(root.rglob(pattern), key=lambda p: p.parent.name):
        logs.setdefault(path.stem.removeprefix("run-"), []).append(path)
    return logs


def logged_iterations(root: Path, run_id: str, prefix: str = "") -> set[int]:
    """The `iteration` values of the history rows with a key starting with `prefix` that run
    `run_id`'s offline files under `root` hold (every attempt's file; a file cut short by a
    kill counts up to its last whole record, one that holds no record yet counts as empty)."""
    run = LoggedRun(run_id)
    for path in run_logs(root, run_id).get(run_id, []):
        if path.stat().st_size > FILE_HEADER:
            _read_log(run, path)
    return {int(row["iteration"]) for row in run.history
            if "iteration" in row and any(key.startswith(prefix) for key in row
                                          if key != "iteration")}


def read_offline_runs(root: Path) -> list[LoggedRun]:
    """Every W&B run with an offline directory under `root`, sorted by run id.

    The directories of one run id (a resumed run has several) are merged in time order:
    their names (`offline-run-YYYYmmdd_HHMMSS-<id>`) sort by start time.
    """
    logs = run_logs(root)
    runs = []
    for run_id in sorted(logs):
        run = LoggedRun(run_id)
        for path in logs[run_id]:
            _read_log(run, path)

        def read(relative: str, paths: list[Path] = logs[run_id]) -> dict[str, Any] | None:
            for log_path in reversed(paths):
                file = log_path.parent / "files" / relative
                if file.is_file():
                    return json.loads(file.read_text())
            return None

        run.tables = logged_tables(run.summary, read)
        runs.append(run)
    return runs
