"""The report's figures (matplotlib, PNG and PDF), with fixed seeds and fixed cameras.

Figures are `matplotlib.figure.Figure` objects saved through the Agg canvas, without pyplot
(no global state, no display needed).

Rendered figures (editing, multiview, progressive, interpolation) load the EMA generator of one
representative trial per setting (the done trial with the lowest seed) from its run
directory; `curves` and `bars` need only the normalised results.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from harness.data.classes import CLASS_IDS
from harness.io import atomic_write
from harness.report.sources import SweepData, cell
from harness.report.tables import BOOKKEEPING, ablation, lifting
from harness.training.samples import SIDE_YAW
from harness.visualize import colourise_mask, image_grid, to_uint8_image
from models.camera import PITCH_MEAN, YAW_MEAN, YAW_STD, intrinsics, look_at_origin

FIGURE_SEED = 0  # latents of every rendered figure; the same seed for every model
EDIT_PART = "mouth"  # the part edited in the editing figure (paper Fig. 4)
MULTIVIEW_IDENTITIES = 2
MULTIVIEW_YAWS = tuple(YAW_MEAN + k * YAW_STD for k in (-2, -1, 0, 1, 2))  # +-2 prior stds
# Progressive generation (Fig. 8): parts switched on one at a time, back to front.
PROGRESSIVE_ORDER = ("background", "face", "neck", "cloth", "hair", "ears", "eyes", "brows",
                     "nose", "mouth")
INTERPOLATION_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)
TILE_INCHES = 0.9  # figure inches per image tile
PAD = 2  # pixels between tiles
DPI = 150


@dataclass
class Representative:
    """The trial that stands for one setting in rendered figures, and its generator."""

    label: str
    trial_id: str
    run_dir: Path
    generator: torch.nn.Module


@dataclass
class FigureResult:
    """Files written for one figure, or why it was skipped."""

    name: str
    paths: list[Path]
    trials: list[str]
    skipped: str | None = None  # why nothing was drawn
    missing: list[str] = field(default_factory=list)  # settings left out, and why


def _setting(row: pd.Series) -> tuple[tuple[str, str], ...]:
    """The trial's config without seed and bookkeeping: equal for seed replicates."""
    return tuple((k, repr(row[k])) for k in row.index if k.startswith("config.")
                 and not k.removeprefix("config.").startswith(BOOKKEEPING))


def representatives(data: SweepData) -> tuple[list[Representative], list[str]]:
    """One loaded generator per distinct setting (its done trial with the lowest seed first),
    and a note for each setting none of whose trials has a loadable snapshot."""
    from harness.errors import UserError
    from harness.training.checkpoint import latest_snapshot, load_generator

    by_setting: dict[tuple[tuple[str, str], ...], list[pd.Series]] = {}
    trials = data.trials.assign(_done=data.trials["status"] != "done",
                                _seed=data.trials.get("config.train.seed"))
    for _, row in trials.sort_values(["_done", "_seed", "trial_id"]).iterrows():
        by_setting.setdefault(_setting(row), []).append(row)
    reps, problems = [], []
    for rows in sorted(by_setting.values(), key=lambda rows: min(r["trial_id"] for r in rows)):
        reasons = []
        for row in rows:
            run_dir = cell(row, "run_dir")
            if run_dir is None:
                reasons.append("no local run directory")
                continue
            if latest_snapshot(Path(run_dir)) is None:
                reasons.append("no network snapshot")
                continue
            try:
                loaded = load_generator(run_dir, device="cpu")
            except (UserError, KeyError, RuntimeError) as error:
                reasons.append(f"cannot load the generator ({error})")
                continue
            reps.append(Representative(cell(row, "variant") or row["trial_id"],
                                       row["trial_id"], Path(run_dir), loaded.generator))
            break
        else:
            problems.append(f"{', '.join(sorted(r['trial_id'] for r in rows))}: "
                            f"{'; '.join(sorted(set(reasons)))}")
    return reps, problems


@torch.no_grad()
def _render(generator: torch.nn.Module, w: torch.Tensor, angles: list[tuple[float, float]],
            active_parts: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Render latents w (B, S, w_dim), sample b at camera angles[b] = (yaw, pitch) radians."""
    cam2world = look_at_origin(torch.tensor(angles))  # (B, 4, 4)
    return generator(w, cam2world, intrinsics().expand(len(angles), 3, 3),
                     active_parts=active_parts)


def _latents(generator: torch.nn.Module, n: int, stream: int) -> torch.Tensor:
    """Fixed latents: stream 0 the identities, stream 1 the edit/interpolation targets."""
    return generator.sample_latents(n, generator=torch.Generator().manual_seed(
        FIGURE_SEED + 1000 * stream))


def _grid(rows: list[tuple[str, list[np.ndarray]]], columns: list[str], title: str
          ) -> tuple[Figure, Axes]:
    """Equal-sized (H, W, 3) uint8 tiles as one mosaic, row labels left, column titles on top."""
    tiles = [tile for _, row in rows for tile in row]
    height, width = tiles[0].shape[:2]
    mosaic = image_grid(tiles, columns=len(columns), pad=PAD)
    figure = Figure(layout="constrained", figsize=(TILE_INCHES * len(columns) + 1.3,
                                                  TILE_INCHES * len(rows) + 0.5))
    axis = figure.subplots()
    axis.imshow(mosaic, interpolation="nearest")
    axis.set_xticks([PAD + c * (width + PAD) + width / 2 for c in range(len(columns))],
                    columns, fontsize=6)
    axis.set_yticks([PAD + r * (height + PAD) + height / 2 for r in range(len(rows))],
                    [label for label, _ in rows], fontsize=6)
    axis.xaxis.tick_top()
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    figure.suptitle(title, fontsize=8)
    return figure, axis


def _write_bytes(path: Path, data: bytes) -> Path:
    atomic_write(path, lambda file: file.write(data))
    return path


def save_figure(figure: Figure, folder: Path, name: str) -> list[Path]:
    """Write `name`.png and `name`.pdf atomically (no timestamps: same figure, same bytes)."""
    paths = []
    for extension, metadata in (("png", {"Software": None}),
                                ("pdf", {"CreationDate": None, "Producer": None})):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=extension, dpi=DPI, metadata=metadata)
        paths.append(_write_bytes(folder / f"{name}.{extension}", buffer.getvalue()))
    return paths


# ---- rendered figures ------------------------------------------------------------------------

def _maps_from_eval(run_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray,
                                                   np.ndarray]] | None:
    """(view, original, edited, difference, region) of the first sample from the run's
    eval/difference_maps.npz (harness.evaluate's layout), or None if absent or different."""
    path = run_dir / "eval" / "difference_maps.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as maps:
            parts = [str(p) for p in maps["parts"]]
            if EDIT_PART not in parts:
                return None
            k = parts.index(EDIT_PART)
            # original (V, S, 3, H, W), edited (V, P, S, 3, H, W), difference/region (V, P, S, H, W)
            return [(str(view), maps["original"][v, 0].transpose(1, 2, 0),
                     maps["edited"][v, k, 0].transpose(1, 2, 0), maps["difference"][v, k, 0],
                     maps["region"][v, k, 0]) for v, view in enumerate(maps["views"])]
    except (KeyError, IndexError, ValueError, OSError):
        return None


def _maps_rendered(generator: torch.nn.Module) -> list[tuple[str, np.ndarray, np.ndarray,
                                                             np.ndarray, np.ndarray]]:
    """The same, rendered: one fixed latent with its mouth codes swapped, frontal and side."""
    from harness.metrics.disentangle import difference_map, edited_region

    part = CLASS_IDS[EDIT_PART]
    w = _latents(generator, 1, 0)
    w_edit = generator.edit_part(w, part, _latents(generator, 1, 1), what="both")
    views = {"frontal": (YAW_MEAN, PITCH_MEAN), "side": (YAW_MEAN - SIDE_YAW, PITCH_MEAN)}
    # one batch: (original, edited) at each view
    out = _render(generator, torch.cat([w, w_edit] * len(views)),
                  [angle for angle in views.values() for _ in range(2)])
    labels, images = out["mask"].argmax(1), out["image"]
    maps = []
    for v, view in enumerate(views):
        before, after = 2 * v, 2 * v + 1
        region = edited_region(labels[before], labels[after], part)
        maps.append((view, to_uint8_image(images[before]), to_uint8_image(images[after]),
                     difference_map(images[before : before + 1],
                                    images[after : after + 1])[0].numpy(), region.numpy()))
    return maps


def _fit(tile: np.ndarray, size: int) -> np.ndarray:
    """A square (H, W, 3) uint8 tile at `size` pixels (nearest), so that models of different
    resolutions share one grid."""
    if tile.shape[0] == size:
        return tile
    return np.asarray(Image.fromarray(tile).resize((size, size), Image.NEAREST))


def editing(reps: list[Representative]) -> Figure:
    """Part editing with difference maps (paper Figs. 4, 5): original, edited, difference and
    masked difference (edited region blanked), D_mean / masked D_mean (Eq. 14) in the corner.
    Uses the run's eval/difference_maps.npz when present, else renders a fixed latent."""
    entries = []
    for rep in reps:
        for view, before, after, difference, region in (_maps_from_eval(rep.run_dir)
                                                        or _maps_rendered(rep.generator)):
            outside = ~region
            masked = float(difference[outside].mean()) if outside.any() else float("nan")
            entries.append((f"{rep.label}\n{view}", before, after, difference,
                            difference * outside, float(difference.mean()), masked))
    top = max(max(float(entry[3].max()) for entry in entries), 1e-6)
    colours = matplotlib.colormaps["inferno"]
    size = max(entry[1].shape[0] for entry in entries)
    rows = [(label, [_fit(tile, size) for tile in (
        before, after, *(np.asarray(colours(m / top)[..., :3] * 255, np.uint8)
                         for m in (diff, masked_diff)))])
        for label, before, after, diff, masked_diff, _, _ in entries]
    figure, axis = _grid(rows, ["original", f"{EDIT_PART} edited", "difference",
                                "masked difference"],
                         f"Editing the {EDIT_PART}: D_mean and masked D_mean (Eq. 14) in the "
                         "corner")
    for r, entry in enumerate(entries):
        for c, value in ((2, entry[5]), (3, entry[6])):
            axis.text(PAD + c * (size + PAD) + size - 1, PAD + r * (size + PAD) + 1,
                      f"{value:.4f}", ha="right", va="top", fontsize=5, color="white",
                      bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.5, "lw": 0})
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, top), colours)
    bar = figure.colorbar(mappable, ax=axis, shrink=0.7, aspect=25)
    bar.set_label("mean |RGB change| (pixels in [0, 1])", fontsize=6)
    bar.ax.tick_params(labelsize=6)
    return figure


def multiview(reps: list[Representative]) -> Figure:
    """Identities across yaw, images and masks (paper Fig. 6)."""
    rows = []
    for rep in reps:
        w = _latents(rep.generator, MULTIVIEW_IDENTITIES, 0)
        # one batch: identity-major, yaw-minor
        out = _render(rep.generator, w.repeat_interleave(len(MULTIVIEW_YAWS), 0),
                      [(yaw, PITCH_MEAN) for _ in range(len(w)) for yaw in MULTIVIEW_YAWS])
        for i in range(MULTIVIEW_IDENTITIES):
            span = range(i * len(MULTIVIEW_YAWS), (i + 1) * len(MULTIVIEW_YAWS))
            rows.append((f"{rep.label} #{i}", [to_uint8_image(out["image"][j]) for j in span]))
            rows.append(("mask", [colourise_mask(out["mask"][j]) for j in span]))
    columns = [f"yaw {yaw - YAW_MEAN:+.2f}" for yaw in MULTIVIEW_YAWS]
    return _grid(rows, columns, "Multi-view synthesis: yaw relative to frontal (radians)")[0]


def progressive(reps: list[Representative]) -> Figure:
    """Adding parts one at a time, at three views (paper Fig. 8)."""
    steps = [[CLASS_IDS[name] for name in PROGRESSIVE_ORDER[: k + 1]]
             for k in range(len(PROGRESSIVE_ORDER))] + [None]
    views = {"left": (YAW_MEAN + SIDE_YAW, PITCH_MEAN), "frontal": (YAW_MEAN, PITCH_MEAN),
             "right": (YAW_MEAN - SIDE_YAW, PITCH_MEAN)}
    rows = []
    for rep in reps:
        w = _latents(rep.generator, 1, 0).expand(len(views), -1, -1)
        outs = [_render(rep.generator, w, list(views.values()), active_parts=parts)
                for parts in steps]  # one batch of the three views per step
        for v, view in enumerate(views):
            rows.append((f"{rep.label}\n{view}", [to_uint8_image(o["image"][v]) for o in outs]))
            rows.append(("mask", [colourise_mask(o["mask"][v]) for o in outs]))
    columns = [f"+{name}" for name in PROGRESSIVE_ORDER] + ["all parts"]
    return _grid(rows, columns, "Progressive generation: parts added one at a time")[0]


def interpolation(reps: list[Representative]) -> Figure:
    """Part-level style interpolation: whole face, hair, mouth; shape versus texture (Fig. 10)."""
    kinds = [("whole face", None, "both"), ("hair shape", "hair", "shape"),
             ("hair texture", "hair", "texture"), ("mouth shape", "mouth", "shape"),
             ("mouth texture", "mouth", "texture")]
    rows = []
    for rep in reps:
        g = rep.generator
        w_a, w_b = _latents(g, 1, 0), _latents(g, 1, 1)
        w = torch.cat([g.interpolate_parts(w_a, w_b, t, None if part is None
                                           else [CLASS_IDS[part]], what)
                       for _, part, what in kinds for t in INTERPOLATION_STEPS])
        images = _render(g, w, [(YAW_MEAN, PITCH_MEAN)] * len(w))["image"]  # one batch
        steps = len(INTERPOLATION_STEPS)
        rows += [(f"{rep.label}\n{label}",
                  [to_uint8_image(images[k * steps + i]) for i in range(steps)])
                 for k, (label, _, _) in enumerate(kinds)]
    return _grid(rows, [f"t = {t:g}" for t in INTERPOLATION_STEPS],
                 "Part-level interpolation from latent A (t = 0) to latent B (t = 1), frontal")[0]


# ---- figures from the results ----------------------------------------------------------------

def curves(data: SweepData) -> Figure | None:
    """Training curves of every trial (metrics.jsonl / the W&B training history)."""
    history = data.history
    metrics = sorted(c for c in history.columns
                     if c not in ("iteration", "trial_id", "train/it_per_s"))
    if history.empty or not metrics:
        return None
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure = Figure(layout="constrained", figsize=(3.2 * columns, 2.4 * rows + 0.9))
    axes = figure.subplots(rows, columns, squeeze=False)
    labels = dict(zip(data.trials["trial_id"], data.trials["variant"], strict=True))
    for index, metric in enumerate(metrics):
        axis = axes[index // columns][index % columns]
        for trial, rows_of_trial in history.groupby("trial_id", sort=True):
            points = rows_of_trial[["iteration", metric]].dropna().sort_values("iteration")
            if not points.empty:
                label = f"{trial} ({labels[trial]})" if labels.get(trial) else str(trial)
                axis.plot(points["iteration"], points[metric], label=label, lw=1, marker=".",
                          markersize=3)
        axis.set_title(metric, fontsize=8)
        axis.set_xlabel("iteration", fontsize=7)
        axis.tick_params(labelsize=6)
    for index in range(len(metrics), rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles, names = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncol=min(4, len(names)),
                  fontsize=6)
    figure.suptitle("Training curves per trial", fontsize=9)
    return figure


def bars(data: SweepData) -> Figure | None:
    """Ablation bar charts: mean with std error bars over trials, n above each bar."""
    panels: list[tuple[pd.DataFrame, str, str, str]] = []
    table = ablation(data).data
    if not table.empty:
        panels += [(table, "setting", column, title) for column, title in
                   (("fid", "FID ↓"), ("photometric_l1", "view L1 ↓"),
                    ("mask_miou", "mask mIoU ↑"))]
    lift = lifting(data).data
    if len(lift) > 1:
        lift = lift.assign(setting=[f"{f}\nα={a:g}" for f, a in zip(lift["function"],
                                                                     lift["alpha"], strict=True)])
        panels.append((lift, "setting", "fid", "lifting: FID ↓"))
    if not panels:
        return None
    figure = Figure(layout="constrained", figsize=(3.0 * len(panels), 3.0))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for axis, (frame, label, column, title) in zip(axes[0], panels, strict=True):
        means = frame[column].astype(float).fillna(0.0)
        errors = frame[f"{column}_std"].astype(float).fillna(0.0)
        x = np.arange(len(frame))
        axis.bar(x, means, yerr=errors, capsize=3, color="#4477aa")
        for position, (top, value) in enumerate(zip(means + errors, frame[column], strict=True)):
            axis.text(position, top, "no data" if pd.isna(value)
                      else f"n={frame['n'].iloc[position]}", ha="center", va="bottom", fontsize=6)
        axis.margins(y=0.12)
        axis.set_xticks(x, frame[label], fontsize=6, rotation=20, ha="right")
        axis.set_title(title, fontsize=8)
        axis.tick_params(axis="y", labelsize=6)
    figure.suptitle("Ablations: mean ± std over trials", fontsize=9)
    return figure


RENDERED: dict[str, Callable[[list[Representative]], Figure]] = {
    "editing": editing, "multiview": multiview, "progressive": progressive,
    "interpolation": interpolation}
FROM_RESULTS: dict[str, Callable[[SweepData], Figure | None]] = {
    "curves": curves, "bars": bars}
FIGURES = (*RENDERED, *FROM_RESULTS)


def build_figures(names: list[str], data: SweepData, folder: Path) -> list[FigureResult]:
    """Draw and save the figures `names` of one sweep into `folder`."""
    results = []
    reps: list[Representative] | None = None
    problems: list[str] = []
    for name in names:
        if name in FROM_RESULTS:
            figure = FROM_RESULTS[name](data)
            if figure is None:
                results.append(FigureResult(name, [], [], "no data for it in this sweep"))
            else:
                results.append(FigureResult(name, save_figure(figure, folder, name),
                                            list(data.trials["trial_id"])))
            continue
        if reps is None:
            reps, problems = representatives(data)
        if not reps:
            reason = "; ".join(problems) or "no trials"
            results.append(FigureResult(name, [], [], f"no generator to render: {reason}"))
            continue
        figure = RENDERED[name](reps)
        results.append(FigureResult(name, save_figure(figure, folder, name),
                                    [rep.trial_id for rep in reps], missing=problems))
    return results

