"""The report's figures (matplotlib, PNG and PDF), with fixed seeds and fixed cameras.

Figures are `matplotlib.figure.Figure` objects saved through the Agg canvas, without pyplot
(no global state, no display needed).

Rendered figures (editing, multiview, progressive, interpolation) load the EMA generator of one
representative trial per setting (the done trial with the lowest seed) from its run
directory; `curves` and `bars` need only the normalised results. A model a figure is undefined
for (progressive generation of a holistic model) is left out with a note under the figure and
in the index; a 2D model (not 3D-aware: it ignores the camera) gets one row where the figure
shows several views, labelled as view-independent.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from PIL import Image

from harness.data.classes import CLASS_COLOURS, CLASS_IDS, CLASS_NAMES, PROGRESSIVE_ORDER
from harness.io import atomic_write
from harness.report.sources import SweepData, cell
from harness.report.tables import ablation, lifting, model_design, setting_of
from harness.runtime.samples import SIDE_YAW
from harness.visualize import colourise_mask, image_grid, to_uint8_image
from models.camera import PITCH_MEAN, YAW_MEAN, YAW_STD, intrinsics, look_at_origin

FIGURE_SEED = 0  # latents of every rendered figure; the same seed for every model
EDIT_PART = "mouth"  # the part edited in the editing figure (paper Fig. 4)
MULTIVIEW_IDENTITIES = 2
MULTIVIEW_YAWS = tuple(YAW_MEAN + k * YAW_STD for k in (-2, -1, 0, 1, 2))  # +-2 prior stds
INTERPOLATION_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)
TILE_INCHES = 0.9  # figure inches per image tile
NOTE_CHARS_PER_INCH = 18  # wrap width of the notes under a figure (6 pt text)
BAR_INCHES = 0.85  # width of one bar (with its gap) in the ablation bar charts
SUPTITLE_CHARS_PER_INCH = 11  # wrap width of a 9 pt title
BAR_LABEL_CHARS = 14  # wrap width of a bar's label (settings such as "w/o NeRF-based weights")
LEGEND_ENTRY_INCHES = 0.85  # width of one entry of the mask-class legend
EXCLUDED_GREY = 0.5  # colour (grey level in [0, 1]) of the edited region in masked differences
VIEW_FREE = "any view (2D)"  # row label of a 2D model where a figure shows several views
PAD = 2  # pixels between tiles
DPI = 150


@dataclass
class Representative:
    """The trial that stands for one setting in rendered figures, and its generator."""

    label: str
    trial_id: str
    run_dir: Path
    generator: torch.nn.Module
    model: str = ""  # the zoo's model name (config model.name)

    @property
    def holistic(self) -> bool:
        """One code for the whole face, no per-part generators (registry: weak
        disentanglement, e.g. ide3d)."""
        return model_design(self.model)[0] == "weak"

    @property
    def two_d(self) -> bool:
        """A 2D model (registry: not 3D-aware, e.g. ssgan2d): it ignores the camera."""
        return model_design(self.model)[1] is False


@dataclass
class FigureResult:
    """Files written for one figure, or why it was skipped."""

    name: str
    paths: list[Path]
    trials: list[str]
    skipped: str | None = None  # why nothing was drawn
    missing: list[str] = field(default_factory=list)  # settings left out, and why


def representatives(data: SweepData) -> tuple[list[Representative], list[str]]:
    """One loaded generator per distinct setting (its done trial with the lowest seed first),
    and a note for each setting none of whose trials has a loadable snapshot."""
    from harness.errors import UserError
    from harness.runtime.checkpoint import latest_snapshot, load_generator

    by_setting: dict[tuple[tuple[str, str], ...], list[pd.Series]] = {}
    trials = data.trials.assign(_done=data.trials["status"] != "done",
                                _seed=data.trials.get("config.train.seed"))
    for _, row in trials.sort_values(["_done", "_seed", "trial_id"]).iterrows():
        by_setting.setdefault(setting_of(row), []).append(row)
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
                                       row["trial_id"], Path(run_dir), loaded.generator,
                                       str(loaded.config.model.name)))
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


def _grid(rows: list[tuple[str, list[np.ndarray]]], columns: list[str], title: str,
          notes: Sequence[str] = (), mask_legend: bool = False) -> tuple[Figure, Axes]:
    """Equal-sized (H, W, 3) uint8 tiles as one mosaic, row labels left, column titles on top;
    under it the class colours of the masks (`mask_legend`) and `notes` (e.g. models left out,
    and why)."""
    tiles = [tile for _, row in rows for tile in row]
    height, width = tiles[0].shape[:2]
    mosaic = image_grid(tiles, columns=len(columns), pad=PAD)
    inches = TILE_INCHES * len(columns) + 1.3
    text = "\n".join(textwrap.fill(note, int(inches * NOTE_CHARS_PER_INCH)) for note in notes)
    legend_columns = max(1, int(inches / LEGEND_ENTRY_INCHES))
    legend_rows = math.ceil(len(CLASS_NAMES) / legend_columns) if mask_legend else 0
    legend_inches = 0.13 * legend_rows + 0.2 if legend_rows else 0.0
    note_inches = 0.1 * (text.count("\n") + 1) + 0.08 if text else 0.0
    main_inches = TILE_INCHES * len(rows) + 0.5
    figure = Figure(layout="constrained",
                    figsize=(inches, main_inches + legend_inches + note_inches))
    # the mosaic on top; a footer (class colours, notes) under it when there is one
    main, footer = (figure.subfigures(2, 1, height_ratios=[main_inches,
                                                           legend_inches + note_inches])
                    if legend_inches or note_inches else (figure, None))
    axis = main.subplots()
    axis.imshow(mosaic, interpolation="nearest")
    axis.set_xticks([PAD + c * (width + PAD) + width / 2 for c in range(len(columns))],
                    columns, fontsize=6)
    axis.set_yticks([PAD + r * (height + PAD) + height / 2 for r in range(len(rows))],
                    [label for label, _ in rows], fontsize=6)
    axis.xaxis.tick_top()
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    main.suptitle(title, fontsize=8)
    if footer is not None and mask_legend:
        handles = [Patch(facecolor=np.array(colour) / 255, edgecolor="0.6", linewidth=0.4,
                         label=name) for name, colour in zip(CLASS_NAMES, CLASS_COLOURS,
                                                             strict=True)]
        footer.legend(handles=handles, loc="upper center", ncol=legend_columns, fontsize=6,
                      frameon=False, title="mask classes", title_fontsize=6, handlelength=1.2,
                      columnspacing=1.0, borderaxespad=0.0)
    if footer is not None and text:
        footer.text(0.01, 0.04 / (legend_inches + note_inches), text, fontsize=6, ha="left",
                    va="bottom", multialignment="left")
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
    w_edit = generator.edit_part(w, part, _latents(generator, 1, 1))
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


def editing(reps: list[Representative], notes: Sequence[str] = ()) -> Figure:
    """Part editing with difference maps (paper Figs. 4, 5): original, edited, difference and
    masked difference (edited region grey), D_mean / masked D_mean (Eq. 14) in the corner.
    Uses the run's eval/difference_maps.npz when present, else renders a fixed latent; a 2D
    model's views are one image, shown once."""
    entries = []
    for rep in reps:
        maps = _maps_from_eval(rep.run_dir) or _maps_rendered(rep.generator)
        if rep.two_d:
            maps = [(VIEW_FREE, *maps[0][1:])]
        for view, before, after, difference, region in maps:
            outside = ~region
            masked = float(difference[outside].mean()) if outside.any() else float("nan")
            entries.append((f"{rep.label}\n{view}", before, after, difference, region,
                            float(difference.mean()), masked))
    top = max(max(float(entry[3].max()) for entry in entries), 1e-6)
    colours = matplotlib.colormaps["inferno"]
    size = max(entry[1].shape[0] for entry in entries)
    rows = []
    for label, before, after, diff, region, _, _ in entries:
        coloured = colours(diff / top)[..., :3]  # (H, W, 3) in [0, 1]
        # the edited region is excluded from masked D_mean: grey, not a colour of the scale
        masked = np.where(region[..., None], EXCLUDED_GREY, coloured)
        rows.append((label, [_fit(tile, size) for tile in (
            before, after, *(np.asarray(m * 255, np.uint8) for m in (coloured, masked)))]))
    figure, axis = _grid(rows, ["original", f"{EDIT_PART} edited", "difference",
                                "masked difference\n(edited region grey)"],
                         f"Editing the {EDIT_PART}: D_mean and masked D_mean (Eq. 14) in the "
                         "corner", notes)
    for r, entry in enumerate(entries):
        for c, value in ((2, entry[5]), (3, entry[6])):
            axis.text(PAD + c * (size + PAD) + size - 1, PAD + r * (size + PAD) + 1,
                      f"{value:.4f}", ha="right", va="top", fontsize=5, color="white",
                      bbox={"facecolor": "black", "alpha": 0.6, "pad": 0.5, "lw": 0})
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, top), colours)
    bar = axis.figure.colorbar(mappable, ax=axis, shrink=0.7, aspect=25)
    bar.set_label("mean |RGB change| (pixels in [0, 1])", fontsize=6)
    bar.ax.tick_params(labelsize=6)
    return figure


def multiview(reps: list[Representative], notes: Sequence[str] = ()) -> Figure:
    """Identities across yaw, images and masks (paper Fig. 6); a 2D model's rows are labelled
    as ignoring the camera (its strip repeats one image)."""
    rows = []
    for rep in reps:
        w = _latents(rep.generator, MULTIVIEW_IDENTITIES, 0)
        # one batch: identity-major, yaw-minor
        out = _render(rep.generator, w.repeat_interleave(len(MULTIVIEW_YAWS), 0),
                      [(yaw, PITCH_MEAN) for _ in range(len(w)) for yaw in MULTIVIEW_YAWS])
        for i in range(MULTIVIEW_IDENTITIES):
            span = range(i * len(MULTIVIEW_YAWS), (i + 1) * len(MULTIVIEW_YAWS))
            label = f"{rep.label} #{i}" + ("\n(2D: no yaw)" if rep.two_d else "")
            rows.append((label, [to_uint8_image(out["image"][j]) for j in span]))
            rows.append(("mask", [colourise_mask(out["mask"][j]) for j in span]))
    columns = [f"yaw {yaw - YAW_MEAN:+.2f}" for yaw in MULTIVIEW_YAWS]
    return _grid(rows, columns, "Multi-view synthesis: yaw relative to frontal (radians)",
                 notes, mask_legend=True)[0]


def holistic_edits(rep: Representative) -> str | None:
    """What a reader must know to read a holistic model's part edits (None: not holistic)."""
    if rep.holistic:
        name = rep.label if rep.label == rep.model else f"{rep.label} ({rep.model})"
        return (f"{name} is a holistic model: a part's shape code is the whole face's, so "
                "editing or interpolating a part's shape changes the whole geometry (weak "
                "disentanglement); a part's texture acts on its 3D region only.")
    return None


def no_progressive(rep: Representative) -> str | None:
    """Why progressive generation is undefined for the model (None: it is defined)."""
    from models.registry import get_model

    return get_model(rep.model).cannot("progressive") if rep.holistic else None


def progressive(reps: list[Representative], notes: Sequence[str] = ()) -> Figure:
    """Adding parts one at a time, at three views (paper Fig. 8); a 2D model at one view.
    Models for which it is undefined (`no_progressive`) must be left out by the caller."""
    steps = [[CLASS_IDS[name] for name in PROGRESSIVE_ORDER[: k + 1]]
             for k in range(len(PROGRESSIVE_ORDER))] + [None]
    views = {"left": (YAW_MEAN + SIDE_YAW, PITCH_MEAN), "frontal": (YAW_MEAN, PITCH_MEAN),
             "right": (YAW_MEAN - SIDE_YAW, PITCH_MEAN)}
    rows = []
    for rep in reps:
        shown = {VIEW_FREE: views["frontal"]} if rep.two_d else views
        w = _latents(rep.generator, 1, 0).expand(len(shown), -1, -1)
        outs = [_render(rep.generator, w, list(shown.values()), active_parts=parts)
                for parts in steps]  # one batch of the views per step
        for v, view in enumerate(shown):
            rows.append((f"{rep.label}\n{view}", [to_uint8_image(o["image"][v]) for o in outs]))
            rows.append(("mask", [colourise_mask(o["mask"][v]) for o in outs]))
    columns = [f"+{name}" for name in PROGRESSIVE_ORDER] + ["all parts"]
    return _grid(rows, columns, "Progressive generation: parts added one at a time", notes,
                 mask_legend=True)[0]


def interpolation(reps: list[Representative], notes: Sequence[str] = ()) -> Figure:
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
                 "Part-level interpolation from latent A (t = 0) to latent B (t = 1), frontal",
                 notes)[0]


# ---- figures from the results ----------------------------------------------------------------

def curves(data: SweepData) -> Figure | None:
    """Training curves of every trial (metrics.jsonl / the W&B training history); a trial has
    one colour in every panel, also where other trials lack the metric."""
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
    trials = sorted(history["trial_id"].unique())
    palette = matplotlib.colormaps["tab10" if len(trials) <= 10 else "tab20"]
    colour = {trial: palette(k % palette.N) for k, trial in enumerate(trials)}
    for index, metric in enumerate(metrics):
        axis = axes[index // columns][index % columns]
        for trial, rows_of_trial in history.groupby("trial_id", sort=True):
            points = rows_of_trial[["iteration", metric]].dropna().sort_values("iteration")
            if not points.empty:
                axis.plot(points["iteration"], points[metric], lw=1, marker=".", markersize=3,
                          color=colour[trial])
        axis.set_title(metric, fontsize=8)
        axis.set_xlabel("iteration", fontsize=7)
        axis.tick_params(labelsize=6)
        axis.yaxis.get_offset_text().set_fontsize(6)
    for index in range(len(metrics), rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles = [Line2D([], [], color=colour[trial], lw=1, marker=".", markersize=3,
                      label=f"{trial} ({labels[trial]})" if labels.get(trial) else str(trial))
               for trial in trials]
    figure.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)),
                  fontsize=6)
    figure.suptitle("Training curves per trial", fontsize=9)
    return figure


def bars(data: SweepData) -> Figure | None:
    """Ablation bar charts: the mean over seeds with its 95% interval, n above each bar (no
    error bar where n = 1: a single run has no interval to draw).

    Only what the sweep varies gets panels: Table 3's settings (relative depth, NeRF weights)
    when the sweep has more than one of them, with a panel per metric some trial measured; the
    lifting function and alpha when the sweep has more than one pair.
    """
    panels: list[tuple[pd.DataFrame, str, str, str]] = []
    table = ablation(data).data
    if len(table) > 1:
        panels += [(table, "setting", column, title) for column, title in
                   (("fid", "FID ↓"), ("kid_x100", "KID×100 ↓"),
                    ("view_photometric_l1", "view L1 ↓"), ("view_mask_miou", "mask mIoU ↑"),
                    ("mask_class_tv", "class TV ↓")) if table[column].notna().any()]
    lift = lifting(data).data
    if len(lift) > 1:
        lift = lift.assign(setting=[f"{f}\nα={a:g}" for f, a in zip(lift["function"],
                                                                     lift["alpha"], strict=True)])
        panels += [(lift, "setting", column, f"lifting ψ, α: {title}") for column, title in
                   (("fid", "FID ↓"), ("kid_x100", "KID×100 ↓")) if lift[column].notna().any()]
    if not panels:
        return None
    widths = [max(3.0, BAR_INCHES * len(frame) + 0.6) for frame, *_ in panels]
    figure = Figure(layout="constrained", figsize=(sum(widths), 3.2))
    axes = figure.subplots(1, len(panels), squeeze=False, width_ratios=widths)
    for axis, (frame, label, column, title) in zip(axes[0], panels, strict=True):
        means = frame[column].astype(float)
        low = (means - frame[f"{column}_ci_low"].astype(float)).to_numpy()
        high = (frame[f"{column}_ci_high"].astype(float) - means).to_numpy()
        x = np.arange(len(frame))
        axis.bar(x, means.fillna(0.0), color="#4477aa")
        has_interval = ~np.isnan(low)
        if has_interval.any():
            axis.errorbar(x[has_interval], means[has_interval],
                          yerr=[low[has_interval], high[has_interval]], fmt="none",
                          ecolor="black", capsize=3, lw=1)
        tops = np.where(has_interval, means + np.nan_to_num(high), means.fillna(0.0))
        for position, (top, value) in enumerate(zip(tops, frame[column], strict=True)):
            axis.annotate("no data" if pd.isna(value) else f"n={frame['n'].iloc[position]}",
                          (position, top), xytext=(0, 2), textcoords="offset points",
                          ha="center", va="bottom", fontsize=6)  # above the interval's cap
        axis.margins(y=0.12)
        axis.set_xticks(x, ["\n".join(textwrap.fill(line, BAR_LABEL_CHARS)
                                      for line in str(name).split("\n"))
                            for name in frame[label]], fontsize=6)
        axis.set_title(title, fontsize=8)
        axis.tick_params(axis="y", labelsize=6)
    figure.suptitle(textwrap.fill("Ablations: mean over the n seeds of each setting with its "
                                  "95% Student-t interval (no bar for n=1: one run, no "
                                  "interval)", int(sum(widths) * SUPTITLE_CHARS_PER_INCH)),
                    fontsize=9)
    return figure


RENDERED: dict[str, Callable[..., Figure]] = {  # (representatives, notes) -> figure
    "editing": editing, "multiview": multiview, "progressive": progressive,
    "interpolation": interpolation}
# Rendered figure -> why a representative cannot be drawn in it (None: it can).
UNDEFINED: dict[str, Callable[[Representative], str | None]] = {"progressive": no_progressive}
# Rendered figure -> a note under the figure on how to read a representative's rows (or None).
READING: dict[str, Callable[[Representative], str | None]] = {
    "editing": holistic_edits, "interpolation": holistic_edits}
FROM_RESULTS: dict[str, Callable[[SweepData], Figure | None]] = {
    "curves": curves, "bars": bars}
NOTHING_TO_DRAW = {  # why a figure from the results is None
    "curves": "no training history in this sweep",
    "bars": "the sweep varies no ablated setting (relative depth, NeRF weights, lifting "
            "function or alpha) across more than one value with results"}
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
                results.append(FigureResult(name, [], [], NOTHING_TO_DRAW[name]))
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
        undefined = UNDEFINED.get(name, lambda rep: None)
        drawn, left_out = [], []
        for rep in reps:
            why = undefined(rep)
            if why is None:
                drawn.append(rep)
            else:
                left_out.append(f"{rep.label} (trial {rep.trial_id}): {why}")
        if not drawn:
            results.append(FigureResult(name, [], [], "; ".join(left_out)))
            continue
        reading = READING.get(name, lambda rep: None)
        notes = [note for rep in drawn if (note := reading(rep))]
        figure = RENDERED[name](drawn, notes + [f"Not shown: {note}" for note in left_out])
        results.append(FigureResult(name, save_figure(figure, folder, name),
                                    [rep.trial_id for rep in drawn],
                                    missing=problems + left_out))
    return results

