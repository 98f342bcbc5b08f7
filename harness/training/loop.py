"""The GAN training loop shared by every model of the zoo (SemanticStyleGAN's recipe).

Per iteration: one discriminator step on real (image, one-hot mask) pairs against generated
ones, lazy R1 on both discriminator branches every `d_reg_every` steps, one generator step
(non-saturating loss + mask consistency + the model's own regularisers), and an EMA update of
the generator. Every random draw of an iteration is seeded from (seed, iteration, rank), so a
run resumed from a checkpoint retraces exactly the steps of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from harness.config import (
    ExperimentConfig,
    config_to_dict,
    read_yaml,
    resolve_config,
    with_added_keys,
)
from harness.data.classes import NUM_CLASSES
from harness.data.loading import open_dataset
from harness.errors import UserError
from harness.io import append_text, atomic_write_json, atomic_write_text, atomic_write_yaml
from harness.reproducibility import apply_reproducibility, machine
from harness.runtime import checkpoint as ckpt
from harness.runtime.cameras import camera_sampler
from harness.runtime.device import resolve_device
from harness.runtime.samples import save_sample_grid
from harness.tracking import Tracker
from harness.training.distributed import (
    DistInfo,
    all_ranks_finite,
    broadcast_module,
    init_distributed,
)
from harness.training.lock import hold_run_dir
from harness.training.preemption import deferred_preemption
from harness.training.step import build_gan, gan_step

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
FAILURE_FILE = "failure.json"
# Config keys a resumed run may change: training longer, logging elsewhere, evaluation, how
# the networks run (compiled or not, memory layout: the checkpoints are the same).
RESUMABLE_CHANGES = ("train.iterations", "train.checkpoint_every", "train.keep_snapshots",
                     "train.log_every", "train.sample_every", "train.device", "train.threads",
                     "train.compile", "train.channels_last", "tracking.", "evaluate.")


@dataclass
class TrainResult:
    """The networks of a finished (or already complete) run, as this rank holds them."""

    iteration: int
    generator: nn.Module
    discriminator: nn.Module
    generator_ema: nn.Module


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the reason is in RUN_DIR/failure.json."""


def iteration_generator(seed: int, iteration: int, rank: int, stream: int) -> torch.Generator:
    """A CPU generator for one random stream of one iteration on one rank."""
    key = ((seed * 1_000_003 + iteration) * 1_009 + rank) * 17 + stream
    return torch.Generator().manual_seed(key % (2**63))


def _check_run_dir_config(run_dir: Path, config: ExperimentConfig) -> None:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return
    old = config_to_dict(resolve_config(with_added_keys(read_yaml(path)), str(path)))
    new = config_to_dict(config)
    from harness.config import flatten

    old_flat, new_flat = flatten(old), flatten(new)
    changed = sorted(
        key for key in set(old_flat) | set(new_flat)
        if old_flat.get(key) != new_flat.get(key)
        and not any(key == allowed or key.startswith(allowed) for allowed in RESUMABLE_CHANGES)
    )
    if changed:
        key = changed[0]
        raise UserError(
            f"{path}: this run directory was trained with {key} = {old_flat.get(key)!r}, now "
            f"{new_flat.get(key)!r} ({len(changed)} setting(s) differ); use a new --run-dir, or "
            "the same settings to resume"
        )


def _real_batch(
    dataset: Dataset, indices: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images (B, 3, R, R) and masks (B, K, R, R) as SSGAN's D sees them: one-hot in
    {-1, 1} (the generator's masks live in the same range: 2 softmax - 1 plus a residual)."""
    items = [dataset[int(i)] for i in indices]
    image = torch.stack([item["image"] for item in items]).to(device)  # (B, 3, R, R)
    labels = torch.stack([item["mask"] for item in items])  # (B, R, R)
    one_hot = F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()  # (B, K, R, R)
    return image, (2 * one_hot - 1).to(device)


def _write_status(run_dir: Path, **fields: Any) -> None:
    atomic_write_json(run_dir / STATUS_FILE, {**fields, "updated": time.time()})


def trained_on(run_dir: str | Path) -> list[str]:
    """The machines (`harness.reproducibility.machine`) that trained the run in `run_dir`, in
    the order they first did (a resumed run can change machines); [] when none is recorded."""
    try:
        status = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return []
    machines = status.get("machines") if isinstance(status, dict) else None
    return [str(m) for m in machines] if isinstance(machines, list) else []


def _rewrite_metrics_until(run_dir: Path, iteration: int) -> list[dict[str, Any]]:
    """Drop metrics lines past `iteration` (left by a run that died after its checkpoint);
    the rows kept."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    rows = [(line, json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    kept = [(line, row) for line, row in rows if row.get("iteration", 0) <= iteration]
    atomic_write_text(path, "".join(line + "\n" for line, _ in kept))
    return [row for _, row in kept]


def _tracked(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl row as W&B logs it (without its wall-clock time)."""
    return {key: value for key, value in row.items() if key not in ("time", "iteration")}


def training_loop(
    config: ExperimentConfig,
    run_dir: str | Path,
    progress: bool = True,  # show a progress bar on rank 0
) -> TrainResult:
    """Train `config` in `run_dir`, resuming from its latest checkpoint.

    Raises `TrainingDiverged` after writing RUN_DIR/failure.json if a loss becomes non-finite
    (the last good checkpoint is kept), a UserError, writing nothing, if the data cannot be
    opened or another process trains in `run_dir`, and a UserError naming the file if the disk
    fills (the last good checkpoint is kept; the same call resumes once there is room).
    """
    run_dir = Path(run_dir)
    train = config.train
    device = resolve_device(train.device)
    apply_reproducibility(train.threads, train.deterministic)
    info = init_distributed(device)
    if device.type == "cuda" and train.device == "auto":
        device = torch.device("cuda", info.local_rank)
    if train.batch_size % info.world_size:
        raise UserError(
            f"train.batch_size = {train.batch_size} is not divisible by the {info.world_size} "
            "processes of this job; change one of them"
        )
    dataset = open_dataset(config.data, config.model.resolution) if info.is_main else None
    _barrier(info)
    if dataset is None:
        dataset = open_dataset(config.data, config.model.resolution)
    with hold_run_dir(run_dir) if info.is_main else nullcontext():
        return _train(config, run_dir, dataset, device, info, progress)


def _train(config: ExperimentConfig, run_dir: Path, dataset: Dataset, device: torch.device,
           info: DistInfo, progress: bool) -> TrainResult:
    """`training_loop` once the data is open and rank 0 holds the run directory."""
    train = config.train
    local_batch = train.batch_size // info.world_size
    if info.is_main:
        _check_run_dir_config(run_dir, config)
        atomic_write_yaml(run_dir / CONFIG_FILE, config_to_dict(config))
        ckpt.remove_interrupted_writes(run_dir)
    _barrier(info)

    fake_cameras = camera_sampler(train.fake_cameras, config)
    gan = build_gan(config, device)
    generator, discriminator, generator_ema = gan.generator, gan.discriminator, gan.generator_ema

    start = 0
    state_path = ckpt.latest_training_state(run_dir)
    if state_path is not None:
        # Onto the CPU: RNG states must stay CPU tensors; load_state_dict copies the rest over.
        state = ckpt.load_checkpoint(state_path, map_location="cpu")
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        generator_ema.load_state_dict(state["generator_ema"])
        gan.g_opt.load_state_dict(state["g_opt"])
        gan.d_opt.load_state_dict(state["d_opt"])
        if "path_length_mean" in state:  # (absent from states saved before it existed)
            gan.path_length_mean = state["path_length_mean"].to(device)
        ckpt.set_rng_state(state["rng"])
        start = int(state["iteration"])
        if info.is_main:
            log.info("resuming %s from iteration %d (%s)", run_dir, start, state_path.name)
    broadcast_module(generator, info)
    broadcast_module(discriminator, info)
    broadcast_module(generator_ema, info)

    tracker = Tracker(config, run_dir) if info.is_main else None
    if info.is_main:
        kept_rows = _rewrite_metrics_until(run_dir, start)
        if tracker:  # rows an earlier attempt's killed wandb service never wrote
            tracker.log_missing([{"iteration": row["iteration"], **_tracked(row)}
                                 for row in kept_rows])
        (run_dir / FAILURE_FILE).unlink(missing_ok=True)
    bar = tqdm(total=train.iterations, initial=start, disable=not (progress and info.is_main),
               dynamic_ncols=True, desc=run_dir.name)
    started, started_iteration = time.time(), start
    machines, here = trained_on(run_dir), machine(device)
    if here not in machines:  # a resumed run's earlier machines stay listed
        machines.append(here)

    def status(**fields: Any) -> None:
        _write_status(run_dir, **fields, machines=machines)

    stats: dict[str, float] = {}
    counts: dict[str, int] = {}
    # W&B gets the rows and sample grids of metrics.jsonl once a checkpoint covers them, so a
    # requeued job (which resumes from that checkpoint) never logs an iteration twice.
    unsent_rows: list[dict[str, Any]] = []
    unsent_samples: dict[int, Path] = {}

    def send_to_tracker() -> None:
        assert tracker is not None
        for row in unsent_rows:
            sample = unsent_samples.pop(row["iteration"], None)
            tracker.log(_tracked(row), row["iteration"],
                        images={"samples": sample} if sample else None)
        for iteration, path in sorted(unsent_samples.items()):
            tracker.log({}, iteration, images={"samples": path})
        unsent_rows.clear()
        unsent_samples.clear()

    def save(iteration: int) -> None:
        if not info.is_main:
            return
        resolved = config_to_dict(config)
        ckpt.save_checkpoint(
            run_dir, iteration,
            state={"iteration": iteration, "generator": generator.state_dict(),
                   "discriminator": discriminator.state_dict(),
                   "generator_ema": generator_ema.state_dict(), "g_opt": gan.g_opt.state_dict(),
                   "d_opt": gan.d_opt.state_dict(), "rng": ckpt.rng_state(), "config": resolved,
                   "path_length_mean": gan.path_length_mean.cpu()},
            snapshot={"iteration": iteration, "generator_ema": generator_ema.state_dict(),
                      "config": resolved},
            keep_snapshots=train.keep_snapshots,
        )
        if tracker:
            send_to_tracker()

    def fail(iteration: int, losses: dict[str, torch.Tensor]) -> None:
        bad = sorted(name for name, value in losses.items() if not torch.isfinite(value).all())
        reason = f"non-finite loss at iteration {iteration}: {', '.join(bad) or 'on another rank'}"
        if info.is_main:
            last = ckpt.latest_training_state(run_dir)
            atomic_write_json(run_dir / FAILURE_FILE, {
                "reason": reason, "iteration": iteration,
                "last_good_checkpoint": last.name if last else None})
            status(state="failed", iteration=iteration, total=train.iterations,
                   reason=reason)
            if tracker:
                tracker.finish(exit_code=1)
        bar.close()
        raise TrainingDiverged(reason)

    if info.is_main:
        status(state="running", iteration=start, total=train.iterations)
    with deferred_preemption() as preemption:  # USR2: checkpoint at the step's end, requeue
        for iteration in range(start, train.iterations):
            torch.manual_seed(
                iteration_generator(train.seed, iteration, info.rank, 0).initial_seed())
            rng_data = iteration_generator(train.seed, iteration, info.rank, 1)
            rng_fake = iteration_generator(train.seed, iteration, info.rank, 2)
            real_image, real_mask = _real_batch(
                dataset, torch.randint(len(dataset), (local_batch,), generator=rng_data), device)
            losses = gan_step(gan, real_image, real_mask, fake_cameras, rng_fake, iteration,
                              regularize=iteration % train.d_reg_every == 0, info=info,
                              path_length=train.path_length_weight > 0
                              and iteration % train.path_length_every == 0)
            if not all_ranks_finite(torch.stack([v.float() for v in losses.values()]), info):
                fail(iteration + 1, losses)

            done = iteration + 1
            for name, value in losses.items():  # (lazy terms are averaged over their own steps)
                stats[name] = stats.get(name, 0.0) + float(value)
                counts[name] = counts.get(name, 0) + 1
            bar.update(1)
            if not info.is_main:
                continue
            rate = (done - started_iteration) / max(time.time() - started, 1e-9)
            if done % train.log_every == 0 or done == train.iterations:
                record = {"iteration": done,
                          **{f"train/{k}": v / counts[k] for k, v in stats.items()},
                          "train/it_per_s": rate, "time": time.time()}
                stats.clear()
                counts.clear()
                append_text(run_dir / METRICS_FILE, json.dumps(record) + "\n")
                bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in record.items()
                                 if k.startswith("train/") and k != "train/it_per_s"},
                                refresh=False)
                unsent_rows.append(record)
                status(state="running", iteration=done, total=train.iterations, it_per_s=rate,
                       eta_s=(train.iterations - done) / max(rate, 1e-9))
            if done % train.sample_every == 0 or done == train.iterations:
                path = save_sample_grid(generator_ema,
                                        run_dir / "samples" / f"iter-{done:08d}.png")
                unsent_samples[done] = path
            preempted = preemption is not None and preemption.step_ended()
            if preempted or done % train.checkpoint_every == 0 or done == train.iterations:
                save(done)
            if preempted:
                log.info("%s: saved iteration %d for the preemption", run_dir, done)
                preemption.forward()  # submitit: checkpoint() (closes W&B), requeue, exit
    bar.close()
    final = max(start, train.iterations)
    if info.is_main:
        if ckpt.latest_training_state(run_dir) is None:
            save(final)
        status(state="done", iteration=final, total=train.iterations)
        if tracker:
            tracker.summary({"iteration": final})
            tracker.finish()
    _barrier(info)
    return TrainResult(final, generator, discriminator, generator_ema)


def _barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        torch.distributed.barrier()


def iterations_done(run_dir: Path) -> int:
    """The iteration of the latest checkpoint of a run directory (0 if none)."""
    path = ckpt.latest_snapshot(run_dir)
    return int(path.name.split("-")[-1].split(".")[0]) if path else 0

