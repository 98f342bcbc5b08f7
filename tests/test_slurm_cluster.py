"""submitit against the real one-node SLURM cluster of slurm/start_local_cluster.sh.

Skipped unless `sbatch` is on PATH and the cluster answers. The cluster is found through
`SLURM_CONF` when it is set, else through `env.sh` in the cluster's base directory
(`SLURM_LOCAL_BASE_DIR`, default /tmp/ssgan3d-slurm). Start it with:

    slurm/install_local_cluster.sh && slurm/start_local_cluster.sh
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
LOCAL_PROFILE = REPO / "slurm" / "profiles" / "local.yaml"
DEFAULT_BASE_DIR = "/tmp/ssgan3d-slurm"
JOB_TIMEOUT_S = 60


def _controller_listening(conf: str) -> bool:
    """Whether slurmctld's port accepts connections (sinfo retries ~10 s when it does not)."""
    host, port = "127.0.0.1", 6817
    for line in Path(conf).read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "slurmctldhost":
            # "name(address)" or "name"
            name, _, addr = value.strip().partition("(")
            host = addr.rstrip(")") or name
        elif key.strip().lower() == "slurmctldport":
            port = int(value.strip().split("-")[0])
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _find_slurm_conf() -> tuple[str | None, str]:
    """The SLURM_CONF of the local cluster, or None and why it cannot be used."""
    if shutil.which("sbatch") is None:
        return None, "sbatch not on PATH (run slurm/install_local_cluster.sh)"
    conf = os.environ.get("SLURM_CONF")
    if not conf:
        base = os.environ.get("SLURM_LOCAL_BASE_DIR", DEFAULT_BASE_DIR)
        env_file = Path(base) / "env.sh"
        if not env_file.is_file():
            return None, f"local SLURM cluster not started ({env_file} missing)"
        for line in env_file.read_text().splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and words[1].startswith("SLURM_CONF="):
                conf = words[1].split("=", 1)[1]
        if not conf:
            return None, f"no SLURM_CONF line in {env_file}"
    if not Path(conf).is_file():
        return None, f"SLURM_CONF={conf} does not exist (run slurm/start_local_cluster.sh)"
    if not _controller_listening(conf):
        return None, f"local SLURM cluster not running (slurmctld of {conf} not listening)"
    try:
        subprocess.run(
            ["sinfo", "-h"],
            env={**os.environ, "SLURM_CONF": conf},
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (subprocess.SubprocessError, OSError):
        return None, f"local SLURM cluster not answering (sinfo with SLURM_CONF={conf})"
    return conf, ""


@pytest.fixture(scope="module")
def slurm_conf():
    """Export the local cluster's SLURM_CONF for the module (sbatch, sacct inherit it)."""
    conf, reason = _find_slurm_conf()
    if conf is None:
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", conf)
        yield conf


@pytest.fixture(scope="module")
def executor(slurm_conf, tmp_path_factory):
    """An AutoExecutor on the local cluster, configured from slurm/profiles/local.yaml."""
    submitit = pytest.importorskip("submitit")
    ex = submitit.AutoExecutor(folder=tmp_path_factory.mktemp("submitit") / "%j")
    assert ex.cluster == "slurm"
    ex.update_parameters(**yaml.safe_load(LOCAL_PROFILE.read_text()))
    return ex


def _add(a, b):
    return a + b


def _visible_gpus():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


# The job's Python cannot import this test module, so pickle its functions by value.
cloudpickle = pytest.importorskip("cloudpickle")
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _wait(job):
    """The job's result, failing (and cancelling it) after JOB_TIMEOUT_S seconds."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} not done after {JOB_TIMEOUT_S}s: {job.stderr()}")
        time.sleep(0.2)
    return job.result()


@pytest.fixture(scope="module")
def finished_job(executor):
    """A trivial job, submitted once for the module and waited for."""
    started = time.monotonic()
    job = executor.submit(_add, 2, 3)
    result = _wait(job)
    print(f"submitit round trip (submit to result): {time.monotonic() - started:.2f} s")
    return job, result


def test_autoexecutor_runs_function(finished_job):
    job, result = finished_job
    assert result == 5


def test_gpu_request_sets_cuda_visible_devices(executor, monkeypatch):
    # Jobs inherit the submitter's environment: make sure SLURM is what sets the variable.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    no_gpu_job = executor.submit(_visible_gpus)
    executor.update_parameters(gpus_per_node=1)
    try:
        gpu_job = executor.submit(_visible_gpus)
    finally:
        executor.update_parameters(gpus_per_node=None)
    assert _wait(gpu_job) in {"0", "1"}  # one of the node's two fake GPUs
    assert _wait(no_gpu_job) is None


def test_sacct_reports_completed(finished_job):
    job, _ = finished_job
    deadline = time.monotonic() + 15  # accounting reaches slurmdbd asynchronously
    state = ""
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["sacct", "-j", str(job.job_id), "-X", "-n", "-P", "-o", "State"],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        state = out.splitlines()[0] if out else ""
        if state == "COMPLETED":
            break
        time.sleep(0.3)
    assert state == "COMPLETED"
