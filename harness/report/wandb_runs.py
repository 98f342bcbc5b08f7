"""What W&B runs logged, read from the W&B API in the shape of offline runs
(`harness.wandb_offline.LoggedRun`)."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from harness.errors import UserError
from harness.wandb_offline import LoggedRun, logged_tables

API_TIMEOUT = 30  # seconds per W&B API request
API_STATES = {"finished": "finished", "failed": "failed", "crashed": "failed", "killed": "failed"}


def read_api_runs(project: str | None, group: str | None) -> list[LoggedRun]:
    """Runs of W&B project `project` ("entity/project"; default: your entity's harness project)
    in `group` (None: every group), through the W&B API (needs network and `wandb login`)."""
    import wandb

    from harness.config import TrackingConfig

    try:
        api = wandb.Api(timeout=API_TIMEOUT)
        path = project or f"{api.default_entity}/{TrackingConfig().project}"
        found = list(api.runs(path, filters={"group": group} if group else None))
    except (wandb.errors.Error, ValueError) as error:
        raise UserError(f"W&B API ({project or 'default project'}): {str(error).rstrip('. ')}; "
                        "run `wandb login` or use --source local / --source wandb-offline DIR"
                        ) from None
    runs = []
    with tempfile.TemporaryDirectory() as download:
        for found_run in found:
            summary = dict(found_run.summary._json_dict)

            def read(relative: str, run: Any = found_run) -> dict[str, Any]:
                file = run.file(relative).download(root=download, replace=True)
                with file:
                    return json.loads(file.read())

            job_type = getattr(found_run, "job_type", "") or ""
            runs.append(LoggedRun(
                run_id=found_run.id, name=found_run.name, group=getattr(found_run, "group", ""),
                job_type=job_type, state=API_STATES.get(found_run.state, "running"),
                config=dict(found_run.config), summary=summary,
                history=list(found_run.scan_history()) if job_type == "train" else [],
                tables=logged_tables(summary, read)))
    return sorted(runs, key=lambda run: run.run_id)
