"""SLURM: whether a cluster answers, its partitions, and cluster profiles (slurm/profiles/).

A profile is a flat YAML file whose keys are parameters of
`submitit.AutoExecutor.update_parameters` (see slurm/README.md); this module reads and checks
it. Jobs reach SLURM only through submitit (harness/launch/executors.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.config import read_yaml
from harness.errors import UserError

PROFILES_DIR = Path(__file__).resolve().parents[2] / "slurm" / "profiles"
SINFO_TIMEOUT_S = 15
# Job states after which a job never runs again (sacct's names; "CANCELLED by 0" included).
ENDED_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "REVOKED")


def probe_cluster() -> tuple[list[str] | None, str]:
    """The cluster's partitions, or None and why no cluster answers."""
    if shutil.which("sinfo") is None:
        return None, "sinfo not found"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                             timeout=SINFO_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None, "sinfo did not answer"
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return None, f"sinfo failed ({lines[-1] if lines else f'exit code {out.returncode}'})"
    return [p.strip().rstrip("*") for p in out.stdout.split() if p.strip()], ""


def profile_path(profile: str) -> Path:
    """A profile's file: a name in slurm/profiles/ or a path to a YAML file."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml") or "/" in profile:
        return path
    return PROFILES_DIR / f"{profile}.yaml"


def valid_parameters() -> set[str]:
    """The parameter names `submitit.AutoExecutor.update_parameters` accepts for SLURM."""
    from submitit.auto.auto import AutoExecutor
    from submitit.slurm.slurm import SlurmExecutor

    return AutoExecutor._valid_parameters() | {
        f"slurm_{name}" for name in SlurmExecutor._valid_parameters()}


def check_parameters(params: dict[str, Any], where: str) -> dict[str, Any]:
    """`params` if every key is an AutoExecutor parameter; a UserError naming the key."""
    valid = valid_parameters()
    for key in params:
        if key not in valid:
            import difflib

            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see slurm/README.md for the keys"
            raise UserError(f"{where}: unknown SLURM parameter {key!r}; {hint}")
    return params


def load_profile(profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A profile's parameters with `overrides` on top, checked."""
    path = profile_path(profile)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise UserError(f"SLURM profile {profile!r}: {path} not found; use one of {names} or "
                        "a path to a YAML profile")
    params = read_yaml(path)
    check_parameters(params, str(path))
    check_parameters(overrides or {}, "slurm.overrides of the sweep file")
    return {**params, **(overrides or {})}
