"""Where trials run: in this process, in local processes, or on SLURM (both via submitit).

    local      this process, one trial after another (its output goes to RUN_DIR/trial.log)
    processes  parallel local processes (submitit's LocalExecutor)
    slurm      SLURM jobs (submitit's AutoExecutor); a batch of trials is one job array whose
               parallelism is --max-parallel; resources come from a profile in slurm/profiles/
    auto       slurm when a cluster answers and has the profile's partition, else local

Every executor runs callables (trial.TrialJob, search.SearchWorker) and says of a job id
whether it is still alive, so a driver started again can re-attach to jobs in state.json.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.launch import slurm

log = logging.getLogger(__name__)

EXECUTORS = ("local", "processes", "slurm", "auto")
PENDING, RUNNING, ENDED = "pending", "running", "ended"  # what `states` says of a job
_PENDING_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
                   "SUSPENDED", "RESV_DEL_HOLD")
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # local processes: no time limit to speak of
SLURM_MAX_NUM_TIMEOUT = 30  # requeues after a time limit before a job gives up
JOB_FOLDERS = {"processes": "jobs/%j", "slurm": "slurm/%j"}  # submitit folders, sweep-relative
TRIAL_LOG = "trial.log"  # output of a trial run in-process, in its run directory


class Executor:
    """Runs job callables and reports whether their jobs are alive."""

    name = "base"
    in_process = False  # `run` blocks in this process instead of `submit`

    def submit(self, jobs: list[Callable[[], Any]]) -> list[str]:
        """Start `jobs` (one batch: a job array on SLURM); their job ids, in order."""
        raise NotImplementedError

    def states(self, job_ids: list[str]) -> dict[str, str]:
        """pending, running or ended for each job id."""
        raise NotImplementedError


class InProcessExecutor(Executor):
    """Runs each job in this process, its output captured in a log file."""

    name = "local"
    in_process = True

    def run(self, job: Callable[[], Any], log_file: Path) -> Any:
        """Call `job` with stdout, stderr and logging sent to `log_file`."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as out, _captured(out):
            return job()

    def states(self, job_ids: list[str]) -> dict[str, str]:
        """A job of this executor lives only as long as its driver: all ended."""
        return dict.fromkeys(job_ids, ENDED)


@contextmanager
def _captured(stream: Any) -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root.handlers = [handler]
    level = root.level
    root.setLevel(logging.INFO)
    try:
        with redirect_stdout(stream), redirect_stderr(stream):
            yield
    finally:
        root.handlers = saved
        root.setLevel(level)


class ProcessesExecutor(Executor):
    """Parallel local processes through submitit's LocalExecutor (job ids are pids)."""

    name = "processes"

    def __init__(self, folder: Path):
        import submitit

        self.folder = folder / JOB_FOLDERS["processes"]
        self.executor = submitit.LocalExecutor(folder=self.folder)
        self.executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, signal_delay_s=60)
        self.jobs: dict[str, Any] = {}

    def submit(self, jobs: list[Callable[[], Any]]) -> list[str]:
        """Start one local process per job."""
        submitted = [self.executor.submit(job) for job in jobs]
        self.jobs.update({job.job_id: job for job in submitted})
        return [job.job_id for job in submitted]

    def states(self, job_ids: list[str]) -> dict[str, str]:
        """Our own jobs by their process; re-attached ones by their pid."""
        return process_states(job_ids, self.jobs)


def process_states(job_ids: list[str], own: dict[str, Any] | None = None) -> dict[str, str]:
    """Local submitit jobs: running while the process lives (checked by pid if not `own`)."""
    out = {}
    for job_id in job_ids:
        job = (own or {}).get(job_id)
        alive = not job.done() if job is not None else _pid_runs_submitit(job_id)
        out[job_id] = RUNNING if alive else ENDED
    return out


def _pid_runs_submitit(job_id: str) -> bool:
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return b"submitit" in cmdline


class SlurmExecutor(Executor):
    """SLURM jobs through submitit; a batch is one job array."""

    name = "slurm"

    def __init__(self, folder: Path, params: dict[str, Any], job_name: str):
        import submitit

        self.folder = folder / JOB_FOLDERS["slurm"]
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster="slurm",
                                              slurm_max_num_timeout=SLURM_MAX_NUM_TIMEOUT)
        try:
            self.executor.update_parameters(name=job_name, **params)
        except (NameError, ValueError, AssertionError, TypeError) as error:
            raise UserError(f"SLURM profile: {str(error).splitlines()[0]}") from None
        self.params = params

    def submit(self, jobs: list[Callable[[], Any]]) -> list[str]:
        """Submit the jobs as one array (a single job when there is one)."""
        import submitit

        try:
            if len(jobs) == 1:
                submitted = [self.executor.submit(jobs[0])]
            else:
                with self.executor.batch():
                    submitted = [self.executor.submit(job) for job in jobs]
        except (submitit.core.utils.FailedJobError, OSError) as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            raise UserError(f"sbatch refused the jobs ({lines[-1] if lines else error}); check "
                            "the SLURM profile (--profile, slurm.profile in the sweep)") from None
        return [job.job_id for job in submitted]

    def states(self, job_ids: list[str]) -> dict[str, str]:
        """From sacct."""
        return slurm_states(job_ids)


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM jobs from sacct, one call for all (through submitit's watcher); a job sacct does
    not know yet counts as pending."""
    from submitit.slurm.slurm import SlurmJob

    if not job_ids:
        return {}
    watcher = SlurmJob.watcher
    for job_id in job_ids:
        watcher.register_job(job_id)
    watcher.update()
    out = {}
    for job_id in job_ids:
        state = (watcher.get_state(job_id, mode="cache").upper().split() or ["UNKNOWN"])[0]
        out[job_id] = (ENDED if state in slurm.ENDED_STATES else
                       PENDING if state in _PENDING_STATES or state == "UNKNOWN" else RUNNING)
    return out


def job_log(kind: str, sweep_dir: Path, job_id: str, run_dir: Path) -> Path:
    """Where the output of a job of `kind` is (the first task's stderr under submitit)."""
    if kind in JOB_FOLDERS:
        return sweep_dir / JOB_FOLDERS[kind].replace("%j", job_id) / f"{job_id}_0_log.err"
    return run_dir / TRIAL_LOG


def job_states(kind: str, job_ids: list[str]) -> dict[str, str]:
    """States of jobs started by an executor of `kind` (maybe by an earlier driver)."""
    if kind == "slurm":
        return slurm_states(job_ids)
    if kind == "processes":
        return process_states(job_ids)
    return dict.fromkeys(job_ids, ENDED)  # in-process jobs died with their driver


def make_executor(
    kind: str,
    sweep_dir: Path,
    profile: str,
    profile_overrides: dict[str, Any],
    max_parallel: int | None,
    job_name: str,
) -> tuple[Executor, str]:
    """The executor of `kind` (auto resolved) and a line saying which one and why."""
    if kind not in EXECUTORS:
        raise UserError(f"--executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
    params: dict[str, Any] = {}
    if kind in ("slurm", "auto"):
        params = slurm.load_profile(profile, profile_overrides)
        if max_parallel:
            params["slurm_array_parallelism"] = max_parallel
    if kind == "auto":
        partitions, why = slurm.probe_cluster()
        partition = params.get("slurm_partition")
        if partitions is None:
            return InProcessExecutor(), f"executor auto: no SLURM cluster ({why}); running " \
                "trials in this process, one after another"
        if partition and partition not in partitions:
            return InProcessExecutor(), (
                f"executor auto: the SLURM cluster has no partition {partition!r} (profile "
                f"{profile}); running trials in this process, one after another (use "
                "--executor slurm --profile NAME for this cluster)")
        kind = "slurm"
        reason = "executor auto: a SLURM cluster answers; submitting with submitit"
    else:
        reason = f"executor {kind}"
    if kind == "local":
        return InProcessExecutor(), reason + ": trials run in this process, one after another"
    if kind == "processes":
        return ProcessesExecutor(sweep_dir), reason + ": parallel local processes"
    if reason == "executor slurm":
        partitions, why = slurm.probe_cluster()
        if partitions is None:
            raise UserError(f"--executor slurm: no SLURM cluster answers ({why}); export "
                            "SLURM_CONF or use --executor local")
    return SlurmExecutor(sweep_dir, params, job_name), \
        reason + f" (profile {profile}, partition {params.get('slurm_partition') or 'default'})"
