"""The report's tables, built with pandas from a sweep's normalised results.

Each table has raw values (`data`, written as CSV) and a formatted view (`display`, written
as Markdown and LaTeX). A value that is missing shows as a dash with a footnote naming the
trial and why; published numbers stand in their own "(paper, ...)" columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.launch.spec import ID_IGNORED
from harness.report import references as ref
from harness.report.sources import SweepData, cell, number

DASH = "—"
PARTS = ("mouth", "eyes", "brows", "nose", "hair")  # 3D-SSGAN Table 1's columns, in its order
VIEWS = ("frontal", "random")
EDITS = ("both", "shape", "texture")
LIFTING_FUNCTIONS = ("gaussian", "inverse_abs", "inverse_square")
BOOTSTRAP_SEED = 0  # fixed: the same samples always give the same interval
BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95
# Config keys (prefixes) that do not change what a trial measures: seed replicates of one
# setting share every other key.
BOOKKEEPING = (*ID_IGNORED, "train.seed", "train.checkpoint_every", "train.log_every",
               "train.sample_every")
SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
# Metric groups whose metrics.json may say `<group>/not_applicable: "<why>"` (with the group's
# values null, harness.metrics.views), and what the group is called in a footnote.
NOT_APPLICABLE = {"view": "view consistency"}
FID_REF = f"FID ({ref.SSGAN3D_LABEL})"


@dataclass
class Table:
    """One report table: raw values, their formatted view, footnotes and notes."""

    name: str
    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    footnotes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trials: list[str] = field(default_factory=list)  # trial ids behind the rows


class Footnotes:
    """Numbered footnotes; the same text always gets the same number."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        """The superscript marker of `text` (numbered on first use)."""
        if text not in self.texts:
            self.texts.append(text)
        return str(self.texts.index(text) + 1).translate(SUPERSCRIPTS)


def why_missing(row: pd.Series) -> str:
    """Why a trial has no value: its failure stage, unfinished, or simply not measured."""
    if row["status"] == "failed":
        return f"failed in {row['stage']}" if cell(row, "stage") else "failed"
    return "not finished" if row["status"] == "incomplete" else "not measured"


def _has_results(row: pd.Series) -> bool:
    return any(k.startswith("metrics.") and cell(row, k) is not None for k in row.index)


def gaps(rows: list[pd.Series], what: str, notes: Footnotes) -> str:
    """One footnote marker for the trials of a cell that lack `what`, naming each trial and
    why ("no results" for trials that have no metrics at all); "" when none lack it."""
    def listing(group: list[pd.Series]) -> str:
        return ", ".join(f"trial {row['trial_id']} ({why_missing(row)})" for row in group)

    empty = [row for row in rows if not _has_results(row)]
    partial = [row for row in rows if _has_results(row)]
    clauses = ([f"no results from {listing(empty)}"] if empty else []) + (
        [f"no {what} from {listing(partial)}"] if partial else [])
    return notes.mark("; ".join(clauses)) if clauses else ""


def fmt(value: float | None, spec: str) -> str:
    """A number in `spec`, or the dash."""
    return DASH if value is None or math.isnan(value) else format(value, spec)


def fmt_mean_std(mean: float | None, std: float | None, spec: str) -> str:
    """`mean ± std` (std over seeds when there are several), or the mean alone, or the dash."""
    if std is None or math.isnan(std):
        return fmt(mean, spec)
    return f"{format(mean, spec)} ± {format(std, spec)}"


@dataclass
class Stat:
    """A metric over the trials of a row: mean, std over trials, count, footnote markers."""

    mean: float | None
    std: float | None
    n: int
    markers: str

    def text(self, spec: str) -> str:
        return fmt_mean_std(self.mean, self.std, spec) + self.markers


def not_applicable(row: pd.Series, key: str) -> str | None:
    """Why metric `key` does not apply to the trial (its metrics.json's
    `<group>/not_applicable`), or None."""
    group, slash, _ = key.partition("/")
    if not slash or group not in NOT_APPLICABLE:
        return None
    reason = cell(row, f"metrics.{group}/not_applicable")
    return str(reason) if reason else None


def inapplicable(rows: list[tuple[pd.Series, str]], key: str, notes: Footnotes) -> str:
    """One footnote marker per reason for trials to which metric `key` does not apply,
    naming each trial, its model and the reason; "" when there are none."""
    what = NOT_APPLICABLE[key.partition("/")[0]] if rows else ""
    by_reason: dict[str, list[str]] = {}
    for row, reason in rows:
        model = cell(row, "config.model.name")
        by_reason.setdefault(reason, []).append(
            f"{row['trial_id']} ({model})" if model else str(row["trial_id"]))
    return "".join(notes.mark(f"{what} not applicable to trial{'s' if len(trials) > 1 else ''} "
                              f"{', '.join(trials)}: {reason}")
                   for reason, trials in by_reason.items())


def metric_stat(group: pd.DataFrame, key: str, notes: Footnotes) -> Stat:
    """Mean and std (ddof 1) of `metrics.<key>` over a row's trials; a footnote per gap
    (a metric that does not apply to a trial gets its own footnote saying why)."""
    values, lacking, moot = [], [], []
    for _, row in group.iterrows():
        value = number(cell(row, f"metrics.{key}"))
        if value is not None:
            values.append(value)
        elif (reason := not_applicable(row, key)) is not None:
            moot.append((row, reason))
        else:
            lacking.append(row)
    markers = inapplicable(moot, key, notes) + gaps(lacking, key, notes)
    mean = float(np.mean(values)) if values else None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return Stat(mean, std, len(values), markers)


def strings(group: pd.DataFrame, key: str) -> str | None:
    """The distinct values of a text metric over a row's trials, comma-joined (or None)."""
    found = sorted({str(v) for v in group.get(f"metrics.{key}", pd.Series()).dropna()})
    return ", ".join(found) or None


def groups(trials: pd.DataFrame, key: Callable[[pd.Series], Hashable | None],
           order: Callable[[Any], Any] = lambda k: k) -> list[tuple[Any, pd.DataFrame]]:
    """Trials grouped by `key(row)` (None: not in this table), groups sorted by `order`."""
    keyed: dict[Any, list[int]] = {}
    for index, row in trials.iterrows():
        value = key(row)
        if value is not None:
            keyed.setdefault(value, []).append(index)
    return [(value, trials.loc[keyed[value]]) for value in sorted(keyed, key=order)]


def pooled_marker(group: pd.DataFrame, notes: Footnotes) -> str:
    """A footnote when a row pools trials whose settings differ beyond seed and bookkeeping."""
    config = [c for c in group.columns if c.startswith("config.")
              and not c.removeprefix("config.").startswith(BOOKKEEPING)]
    present = group[config].dropna(axis=1, how="any")
    varying = [c.removeprefix("config.") for c in present.columns
               if len({repr(v) for v in present[c]}) > 1]
    if not varying:
        return ""
    return notes.mark(f"row pools trials {', '.join(group['trial_id'])}, whose settings "
                      f"differ in {', '.join(varying)}")


def _finish(name: str, title: str, rows: list[dict[str, Any]], shown: list[dict[str, str]],
            columns: list[str], headers: list[str], notes: Footnotes, extra: list[str],
            trials: pd.DataFrame) -> Table:
    data = pd.DataFrame(rows, columns=columns)
    display = pd.DataFrame(shown, columns=headers)
    return Table(name, title, data, display, notes.texts, extra, list(trials["trial_id"]))


# ---- disentanglement (3D-SSGAN Table 1) ------------------------------------------------------

def _model(row: pd.Series) -> str | None:
    return cell(row, "config.model.name")


def bootstrap_ci(values: np.ndarray) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (fixed seed, `BOOTSTRAP_RESAMPLES` draws)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))]
    tail = (1 - CI_LEVEL) / 2
    low, high = np.quantile(means.mean(axis=1), [tail, 1 - tail])
    return float(low), float(high)


def _interval(low: float | None, high: float | None, marker: str) -> str:
    return DASH + marker if low is None else f"[{low:.4f}, {high:.4f}]"


def _rank(value: str, known: tuple[str, ...]) -> tuple[int, str]:
    return (known.index(value) if value in known else len(known), value)


def _cells_from_samples(samples: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(view, edit, part) -> pooled per-sample means, CIs and n."""
    out = {}
    for (view, what, part), rows in samples.groupby(["view", "what", "part"], sort=False):
        entry: dict[str, Any] = {}
        for column in ("d_mean", "d_mean_masked"):
            values = rows[column].dropna().to_numpy(dtype=float)
            entry[column] = float(values.mean()) if len(values) else None
            entry[f"{column}_ci"] = bootstrap_ci(values) if len(values) else (None, None)
        entry["n"] = int(rows["d_mean"].notna().sum())
        out[(str(view), str(what), str(part))] = entry
    return out


def _cells_from_means(group: pd.DataFrame) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(view, edit, part) -> means over trials of metrics.json's d_mean keys (no CI); the edit
    is metrics.json's `disentangle_what` (default "both", the paper's protocol)."""
    found: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for _, row in group.iterrows():
        what = str(cell(row, "metrics.disentangle_what") or "both")
        for column in ("d_mean", "d_mean_masked"):
            prefix = f"metrics.{column}/"
            for key in row.index:
                value = number(cell(row, key)) if key.startswith(prefix) else None
                if value is not None:
                    part, _, view = key.removeprefix(prefix).partition("@")
                    found.setdefault((view, what, part), {}).setdefault(column, []).append(value)
    out = {}
    for key, columns in found.items():
        out[key] = {column: float(np.mean(columns[column])) if column in columns else None
                    for column in ("d_mean", "d_mean_masked")}
        out[key].update(d_mean_ci=(None, None), d_mean_masked_ci=(None, None), n=None)
    return out


def _disentangle_cells(group: pd.DataFrame, samples: pd.DataFrame, notes: Footnotes
                       ) -> tuple[dict[tuple[str, str, str], dict[str, Any]], str, str]:
    """A model's cells, the marker for its n column and the marker for missing trials."""
    has_means = [any(k.startswith("metrics.d_mean/") and cell(row, k) is not None
                     for k in row.index) for _, row in group.iterrows()]
    with_samples = set(samples["trial_id"])
    lacking, evaluated = [], []
    for (_, row), means in zip(group.iterrows(), has_means, strict=True):
        if row["trial_id"] in with_samples or means:
            evaluated.append(row["trial_id"])
        else:
            lacking.append(row)
    missing = gaps(lacking, "disentanglement values", notes)
    if not evaluated:  # one row of dashes for the model
        return {(None, None, None): {}}, "", missing  # type: ignore[dict-item]
    if all(trial in with_samples for trial in evaluated):
        return _cells_from_samples(samples), "", missing
    without = [trial for trial in evaluated if trial not in with_samples]
    marker = notes.mark(f"no per-sample values (eval/disentangle.csv) from trial(s) "
                        f"{', '.join(without)}: means over trials of metrics.json, no CI")
    return _cells_from_means(group[group["trial_id"].isin(evaluated)]), marker, missing


def disentanglement(data: SweepData) -> Table:
    """3D-SSGAN Table 1: D_mean and masked D_mean per part and model, with 95% bootstrap CIs."""
    notes, rows, shown = Footnotes(), [], []
    trials = data.trials
    for model, group in groups(trials, _model):
        samples = data.samples[data.samples["trial_id"].isin(group["trial_id"])]
        cells, no_ci, missing = _disentangle_cells(group, samples, notes)
        label = str(model) + pooled_marker(group, notes)
        paper = ref.DISENTANGLEMENT.get(str(model), {})
        for view, what, part in sorted(cells, key=lambda k: (_rank(k[0], VIEWS),
                                                             _rank(k[1], EDITS),
                                                             _rank(k[2], PARTS))):
            entry = cells[(view, what, part)]
            published = {column: paper.get(column, {}).get(part) if what == "both" else None
                         for column in ("d_mean", "d_mean_masked")}
            low, high = entry.get("d_mean_ci", (None, None))
            mlow, mhigh = entry.get("d_mean_masked_ci", (None, None))
            rows.append({
                "model": model, "view": view, "what": what, "part": part,
                "d_mean": entry.get("d_mean"), "d_mean_ci_low": low, "d_mean_ci_high": high,
                "d_mean_masked": entry.get("d_mean_masked"), "d_mean_masked_ci_low": mlow,
                "d_mean_masked_ci_high": mhigh, "n": entry.get("n"),
                "paper_d_mean": published["d_mean"],
                "paper_d_mean_masked": published["d_mean_masked"]})
            shown.append({
                "Model": label, "View": view or DASH, "Edit": what or DASH, "Part": part or DASH,
                "D_mean ↓": fmt(entry.get("d_mean"), ".4f") + missing,
                "95% CI": _interval(low, high, no_ci),
                "masked D_mean ↓": fmt(entry.get("d_mean_masked"), ".4f") + missing,
                "95% CI (masked)": _interval(mlow, mhigh, no_ci),
                "n": DASH + no_ci if entry.get("n") is None else str(entry["n"]),
                f"D_mean ({ref.DISENTANGLEMENT_LABEL})": fmt(published["d_mean"], ".4f"),
                f"masked D_mean ({ref.DISENTANGLEMENT_LABEL})":
                    fmt(published["d_mean_masked"], ".4f")})
    return _finish(
        "disentanglement",
        "Semantic disentanglement (3D-SSGAN Table 1): mean difference D_mean and masked "
        "D_mean (edited part excluded) after replacing one part's latent codes (Eq. 14); mean "
        f"over samples (n) with a {CI_LEVEL:.0%} percentile bootstrap interval "
        f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})",
        rows, shown,
        ["model", "view", "what", "part", "d_mean", "d_mean_ci_low", "d_mean_ci_high",
         "d_mean_masked", "d_mean_masked_ci_low", "d_mean_masked_ci_high", "n",
         "paper_d_mean", "paper_d_mean_masked"],
        ["Model", "View", "Edit", "Part", "D_mean ↓", "95% CI", "masked D_mean ↓",
         "95% CI (masked)", "n", f"D_mean ({ref.DISENTANGLEMENT_LABEL})",
         f"masked D_mean ({ref.DISENTANGLEMENT_LABEL})"],
        notes,
        ["(paper, ...) columns: published numbers of 3D-SSGAN Table 1 (1,000 random "
         "portraits; the view is not stated), repeated on each view; not measured here"],
        trials)


# ---- comparison (3D-SSGAN Table 2) -----------------------------------------------------------

def model_design(name: str) -> tuple[str | None, bool | None]:
    """(disentanglement "strong"/"weak", 3D-aware) from the zoo's registry; None if unknown."""
    from models.registry import get_model

    try:
        spec = get_model(name)
    except KeyError:
        return None, None
    return spec.disentanglement, spec.three_d_aware


def comparison(data: SweepData) -> Table:
    """3D-SSGAN Table 2: design properties of each model and its FID and KID."""
    notes, rows, shown = Footnotes(), [], []
    trials = data.trials
    for model, group in groups(trials, _model):
        strength, aware = model_design(str(model))
        unknown = "" if strength is not None else notes.mark(
            f"model {model} is not registered in the zoo (models/): its design is unknown")
        fid, kid = metric_stat(group, "fid", notes), metric_stat(group, "kid", notes)
        l1 = metric_stat(group, "view/photometric_l1", notes)
        miou = metric_stat(group, "view/mask_miou", notes)
        paper = ref.COMPARISON_FID.get(str(model))
        rows.append({"method": model, "semantic_disentanglement": strength,
                     "three_d_aware": aware, "fid": fid.mean, "fid_std": fid.std,
                     "kid": kid.mean, "kid_std": kid.std, "photometric_l1": l1.mean,
                     "photometric_l1_std": l1.std, "mask_miou": miou.mean,
                     "mask_miou_std": miou.std,
                     "fid_extractor": strings(group, "fid_extractor"), "n": fid.n,
                     "paper_fid": paper})
        shown.append({
            "Method": str(model) + pooled_marker(group, notes),
            "Semantic disentanglement": DASH + unknown if strength is None
            else strength.capitalize(),
            "3D-aware": DASH + unknown if aware is None else ("✓" if aware else "✗"),
            "FID ↓": fid.text(".2f"), "KID ↓": kid.text(".4f"),
            "View L1 ↓": l1.text(".4f"), "Mask mIoU ↑": miou.text(".3f"),
            "Feature extractor": strings(group, "fid_extractor") or DASH,
            "n": str(fid.n),
            FID_REF: fmt(paper, "g")})
    return _finish(
        "comparison",
        "Comparison (3D-SSGAN Table 2): semantic disentanglement and 3D awareness (from each "
        "model's design in the zoo), image quality (FID, KID) and measured view consistency "
        "(photometric reprojection error and mask mIoU between views); mean ± std over n trials",
        rows, shown,
        ["method", "semantic_disentanglement", "three_d_aware", "fid", "fid_std", "kid",
         "kid_std", "photometric_l1", "photometric_l1_std", "mask_miou", "mask_miou_std",
         "fid_extractor", "n", "paper_fid"],
        ["Method", "Semantic disentanglement", "3D-aware", "FID ↓", "KID ↓", "View L1 ↓",
         "Mask mIoU ↑", "Feature extractor", "n", FID_REF],
        notes,
        ["(paper) column: published FIDs of 3D-SSGAN Table 2 (30K real vs 50K generated "
         "images); comparable only with measured numbers of the same dataset and extractor"],
        trials)


# ---- ablation (3D-SSGAN Table 3) -------------------------------------------------------------

ABLATION_ORDER = [(True, True), (False, True), (True, False), (False, False)]


def ablation_label(relative_depth: bool, nerf_weights: bool) -> str:
    """Table 3's row names, from model.relative_depth and model.mask_nerf_weights."""
    off = [name for name, on in (("relative depth", relative_depth),
                                 ("NeRF-based weights", nerf_weights)) if not on]
    return "Full model" if not off else "w/o " + ", w/o ".join(off)


def ablation(data: SweepData) -> Table:
    """3D-SSGAN Table 3: FID, view and mask consistency without relative depth or NeRF weights."""
    notes, rows, shown = Footnotes(), [], []

    def key(row: pd.Series) -> tuple[bool, bool] | None:
        depth = cell(row, "config.model.relative_depth")
        weights = cell(row, "config.model.mask_nerf_weights")
        return None if depth is None or weights is None else (bool(depth), bool(weights))

    trials = data.trials
    for (depth, weights), group in groups(trials, key, ABLATION_ORDER.index):
        stats = {name: metric_stat(group, name, notes)
                 for name in ("fid", "view/photometric_l1", "view/mask_miou")}
        paper = ref.ABLATION_FID.get((depth, weights))
        label = ablation_label(depth, weights)
        rows.append({"setting": label, "relative_depth": depth, "mask_nerf_weights": weights,
                     "fid": stats["fid"].mean, "fid_std": stats["fid"].std,
                     "photometric_l1": stats["view/photometric_l1"].mean,
                     "photometric_l1_std": stats["view/photometric_l1"].std,
                     "mask_miou": stats["view/mask_miou"].mean,
                     "mask_miou_std": stats["view/mask_miou"].std,
                     "fid_extractor": strings(group, "fid_extractor"), "n": stats["fid"].n,
                     "paper_fid": paper})
        shown.append({"Setting": label + pooled_marker(group, notes),
                      "FID ↓": stats["fid"].text(".2f"),
                      "View L1 ↓": stats["view/photometric_l1"].text(".4f"),
                      "Mask mIoU ↑": stats["view/mask_miou"].text(".3f"),
                      "Feature extractor": strings(group, "fid_extractor") or DASH,
                      "n": str(stats["fid"].n), FID_REF: fmt(paper, "g")})
    return _finish(
        "ablation",
        "Ablation (3D-SSGAN Table 3): FID, photometric reprojection error between views and "
        "mask mIoU across views; mean ± std over n trials",
        rows, shown,
        ["setting", "relative_depth", "mask_nerf_weights", "fid", "fid_std", "photometric_l1",
         "photometric_l1_std", "mask_miou", "mask_miou_std", "fid_extractor", "n",
         "paper_fid"],
        ["Setting", "FID ↓", "View L1 ↓", "Mask mIoU ↑", "Feature extractor", "n", FID_REF],
        notes,
        ["(paper) column: published FIDs of 3D-SSGAN Table 3"],
        trials)


# ---- lifting ablation (3D-SSGAN Sec. 4.2) ----------------------------------------------------

def lifting(data: SweepData) -> Table:
    """Lifting ablation: FID per lifting function psi (Eq. 7) and alpha, over seeds."""
    notes, rows, shown = Footnotes(), [], []

    def key(row: pd.Series) -> tuple[str, float] | None:
        function = cell(row, "config.model.lifting.function")
        alpha = number(cell(row, "config.model.lifting.alpha"))
        return None if function is None or alpha is None else (str(function), alpha)

    trials = data.trials
    def order(k: tuple[str, float]) -> tuple[tuple[int, str], float]:
        return _rank(k[0], LIFTING_FUNCTIONS), k[1]

    for (function, alpha), group in groups(trials, key, order):
        fid = metric_stat(group, "fid", notes)
        rows.append({"function": function, "alpha": alpha, "fid": fid.mean, "fid_std": fid.std,
                     "fid_extractor": strings(group, "fid_extractor"), "n": fid.n})
        shown.append({"ψ": function + pooled_marker(group, notes), "α": format(alpha, "g"),
                      "FID ↓": fid.text(".2f"),
                      "Feature extractor": strings(group, "fid_extractor") or DASH,
                      "n": str(fid.n)})
    return _finish(
        "lifting",
        "Lifting ablation (3D-SSGAN Sec. 4.2): FID per lifting function psi and alpha (Eq. 7); "
        "mean ± std over n trials",
        rows, shown, ["function", "alpha", "fid", "fid_std", "fid_extractor", "n"],
        ["ψ", "α", "FID ↓", "Feature extractor", "n"], notes, [ref.LIFTING_TEXT], trials)


# ---- identity (IDE-3D Table 1 style) ---------------------------------------------------------

def identity(data: SweepData) -> Table:
    """IDE-3D Table 1 style: FID, KID and multi-view identity consistency per model and data."""
    notes, rows, shown = Footnotes(), [], []

    def key(row: pd.Series) -> tuple[str, str] | None:
        model, source = cell(row, "config.model.name"), cell(row, "config.data.source")
        if model is None or source is None:
            return None
        resolution = number(cell(row, "config.model.resolution"))
        return str(model), (f"{source} {resolution:.0f}x{resolution:.0f}" if resolution
                            else str(source))

    trials = data.trials
    for (model, dataset), group in groups(trials, key):
        stats = {name: metric_stat(group, name, notes)
                 for name in ("fid", "kid", "id_consistency")}
        paper = ref.IDENTITY.get(model, {})
        rows.append({"model": model, "dataset": dataset,
                     **{k: v for name, stat in stats.items()
                        for k, v in ((name, stat.mean), (f"{name}_std", stat.std))},
                     "fid_extractor": strings(group, "fid_extractor"),
                     "id_model": strings(group, "id_model"), "n": stats["fid"].n,
                     "paper_fid": paper.get("fid"), "paper_kid": paper.get("kid"),
                     "paper_id_consistency": paper.get("id_consistency")})
        shown.append({"Model": model + pooled_marker(group, notes), "Dataset": dataset,
                      "FID ↓": stats["fid"].text(".2f"), "KID ↓": stats["kid"].text(".4f"),
                      "ID ↑": stats["id_consistency"].text(".3f"),
                      "Feature extractor": strings(group, "fid_extractor") or DASH,
                      "ID model": strings(group, "id_model") or DASH, "n": str(stats["fid"].n),
                      f"FID ({ref.IDE3D_LABEL})": fmt(paper.get("fid"), "g"),
                      f"KID ({ref.IDE3D_LABEL})": fmt(paper.get("kid"), "g"),
                      f"ID ({ref.IDE3D_LABEL})": fmt(paper.get("id_consistency"), "g")})
    return _finish(
        "identity",
        "Image quality and multi-view identity consistency (IDE-3D Table 1 style): FID, KID and "
        "ID (mean cosine similarity of identity embeddings of one latent at two random poses); "
        "mean ± std over n trials",
        rows, shown,
        ["model", "dataset", "fid", "fid_std", "kid", "kid_std", "id_consistency",
         "id_consistency_std", "fid_extractor", "id_model", "n", "paper_fid", "paper_kid",
         "paper_id_consistency"],
        ["Model", "Dataset", "FID ↓", "KID ↓", "ID ↑", "Feature extractor", "ID model", "n",
         f"FID ({ref.IDE3D_LABEL})", f"KID ({ref.IDE3D_LABEL})", f"ID ({ref.IDE3D_LABEL})"],
        notes,
        ["(paper) columns: published numbers of IDE-3D Table 1 (CelebAHQ-Mask columns), "
         "copied as printed"],
        trials)


TABLES: dict[str, Callable[[SweepData], Table]] = {
    "disentanglement": disentanglement,
    "comparison": comparison,
    "ablation": ablation,
    "lifting": lifting,
    "identity": identity,
}
