"""Building a sweep's report: tables, figures, the provenance index and the W&B report run."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.io import atomic_write_text
from harness.report.figures import FIGURES, FigureResult, build_figures
from harness.report.formats import FORMATS, WRITERS
from harness.report.index import write_index
from harness.report.sources import (
    SOURCES,
    SweepData,
    load_runs,
    load_sweep,
    local_sweeps,
    wandb_groups,
)
from harness.report.tables import TABLES, Table

log = logging.getLogger(__name__)


def _requested(data: SweepData, key: str, known: Sequence[str]) -> list[str]:
    """The names the sweep file asks for under `report.<key>` (missing or empty: all)."""
    names = data.report.get(key)
    if not names:
        return list(known)
    if not isinstance(names, list) or any(name not in known for name in names):
        raise UserError(f"sweep {data.name}: report.{key} = {names!r}; expected a list of "
                        f"{', '.join(known)}")
    return list(names)


def command_line(sweeps: list[str] | None, runs_dir: Path, out_dir: Path, source: str,
                 source_path: str | None, formats: Sequence[str], track: bool) -> str:
    """The `python -m harness.report` command that rebuilds this report."""
    words = ["python", "-m", "harness.report"]
    words += [w for name in sweeps for w in ("--sweep", name)] if sweeps else ["--all"]
    words += ["--source", source, *([source_path] if source_path else [])]
    words += ["--runs-dir", str(runs_dir), "--out", str(out_dir), "--formats", ",".join(formats)]
    return shlex.join(words + (["--wandb"] if track else []))


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _log_to_wandb(data: SweepData, runs_dir: Path, tables: list[Table],
                  figures: list[FigureResult]) -> None:
    """A W&B run (job_type report, group = the sweep) with every table and figure."""
    import wandb

    from harness.config import resolve_config
    from harness.tracking import Tracker

    config = None
    for _, row in data.trials.iterrows():  # the sweep's own project, entity and settings
        flat = {k.removeprefix("config."): v for k, v in row.items()
                if k.startswith("config.") and v == v and v is not None}
        try:
            config = resolve_config(_unflatten(flat), f"trial {row['trial_id']}")
            break
        except UserError:
            continue
    config = config or resolve_config({})
    config.tracking.group = data.name
    tracker = Tracker(config, runs_dir / data.name, job_type="report", enabled=True,
                      name=f"{data.name}-report")
    tracker.log({f"tables/{t.name}": wandb.Table(dataframe=t.data.astype(object)
                                                 .where(t.data.notna(), None))
                 for t in tables})
    for figure in figures:
        for path in figure.paths:
            if path.suffix == ".png":
                tracker.log({}, iteration=0, images={f"figures/{figure.name}": path})
    tracker.finish()


def build_sweep(data: SweepData, out_dir: Path, runs_dir: Path, formats: Sequence[str],
                command: str, track: bool) -> list[Path]:
    """Write one sweep's tables, figures and index into `out_dir/<sweep>/`."""
    folder = out_dir / data.name
    figure_names = _requested(data, "figures", FIGURES)  # (both lists checked before writing)
    tables = [TABLES[name](data) for name in _requested(data, "tables", list(TABLES))]
    table_files: dict[str, list[Path]] = {}
    for table in tables:
        for extension in formats:
            path = folder / "tables" / f"{table.name}.{extension}"
            atomic_write_text(path, WRITERS[extension](table, data.name))
            table_files.setdefault(table.name, []).append(path)
    figures = build_figures(figure_names, data, folder / "figures")
    for figure in figures:
        if figure.skipped:
            log.warning("%s: figure %s not drawn: %s", data.name, figure.name, figure.skipped)
    index = write_index(folder, data, command, tables, table_files, figures)
    if track:
        _log_to_wandb(data, runs_dir, tables, figures)
    written = [p for paths in table_files.values() for p in paths]
    return written + [p for f in figures for p in f.paths] + [index]


def build_report(
    sweeps: list[str] | None = None,
    runs_dir: str | Path = "runs",
    out_dir: str | Path = "reports",
    source: str = "local",
    source_path: str | None = None,
    formats: Sequence[str] = FORMATS,
    track: bool = False,
) -> list[Path]:
    """Write `out_dir/<sweep>/` (tables/, figures/, README.md) for each sweep (None: all).

    `source`: "local" (run directories under `runs_dir`, no network), "wandb" (the W&B API;
    `source_path` = "entity/project") or "wandb-offline" (`source_path` = a folder holding W&B
    offline run directories). `track` logs the tables and figures to a W&B report run.
    Returns the paths written.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if source not in SOURCES:
        raise UserError(f"--source {source}: unknown; choose one of {', '.join(SOURCES)}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--formats {','.join(formats)}: choose from {','.join(FORMATS)}")
    runs = None
    if source != "local":
        group = sweeps[0] if sweeps and len(sweeps) == 1 else None
        runs = load_runs(source, source_path, group)
    names = sweeps or (local_sweeps(runs_dir) if runs is None else wandb_groups(runs))
    if not names:
        raise UserError(f"no sweeps found in {runs_dir if runs is None else source_path}; "
                        "run python -m harness.sweep SWEEP.yaml first")
    command = command_line(sweeps, runs_dir, out_dir, source, source_path, formats, track)
    written = []
    for name in names:
        data = load_sweep(name, source, runs_dir, source_path, runs)
        written += build_sweep(data, out_dir, runs_dir, formats, command, track)
        log.info("report of sweep %s: %s", name, out_dir / name)
    return written
