"""The report's tables, built with pandas from a sweep's normalised results.

Each table has raw values (`data`, written as CSV) and a formatted view (`display`, written
as Markdown and LaTeX). A value that is missing shows as a dash with a footnote naming the
trial and why; published numbers stand in their own "(paper, ...)" columns.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.launch.spec import BOOKKEEPING_KEYS
from harness.metrics import registry as metric_registry
from harness.report import references as ref
from harness.report import statistics as st
from harness.report.sources import SweepData, cell, machines_by_trial, number

DASH = "—"
PARTS = ("mouth", "eyes", "brows", "nose", "hair")  # 3D-SSGAN Table 1's columns, in its order
VIEWS = ("frontal", "random")
EDITS = ("both", "shape", "texture")
LIFTING_FUNCTIONS = ("gaussian", "inverse_abs", "inverse_square")
BOOTSTRAP_SEED = 0  # fixed: the same samples always give the same interval
BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95
# Config keys (prefixes) that do not change what a trial measures: seed replicates of one
# setting share every other key (how a trial runs, harness.launch.spec.HOW_IT_RUNS, is not
# among them: a sweep of a speed switch compares its arms).
BOOKKEEPING = (*BOOKKEEPING_KEYS, "train.seed", "train.checkpoint_every", "train.log_every",
               "train.sample_every")
SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
# Metric groups whose metrics.json may say `<group>/not_applicable: "<why>"` (with the group's
# values null, harness.metrics.views), and what the group is called in a footnote.
NOT_APPLICABLE = {"view": "view consistency"}
FID_REF = f"FID ({ref.SSGAN3D_LABEL})"
# KID is shown x100, the scale of the published KIDs (IDE-3D's, from FENeRF)
_KID_COLUMN = metric_registry.get("kid").columns["kid"]
KID_SCALE, KID = _KID_COLUMN.scale, _KID_COLUMN.label
# Metrics compared between arms, their display (name, format, scale) and goal (lower or
# higher is better). KID decides significance: it is unbiased at any sample count, while FID
# at a few thousand samples is biased upward by an amount that depends on the model (Chong &
# Forsyth 2020, "Effectively Unbiased FID").
DECIDING = "kid"
COMPARED = {key: (column.label, column.fmt, column.scale, goal) for key, (column, goal) in
            sorted(metric_registry.columns().items(), key=lambda item: item[0] != DECIDING)}
STATISTICS_TEXT = (f"cells: mean [{st.CI_LEVEL:.0%} interval] over the n seeds of a row "
                   f"({st.METHOD}); n=1: one run, no interval")


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


@dataclass
class Stat:
    """A metric over the trials (seeds) of a row: its interval and footnote markers."""

    interval: st.Interval
    markers: str

    @property
    def mean(self) -> float | None:
        return self.interval.mean

    @property
    def n(self) -> int:
        return self.interval.n

    def columns(self, name: str) -> dict[str, float | None]:
        """Raw values for the CSV: mean, interval bounds and std over seeds."""
        iv = self.interval
        return {name: iv.mean, f"{name}_ci_low": iv.low, f"{name}_ci_high": iv.high,
                f"{name}_std": iv.std}

    def text(self, spec: str) -> str:
        return self.interval.text(spec) + self.markers


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


def metric_stat(group: pd.DataFrame, key: str, notes: Footnotes, scale: float = 1.0) -> Stat:
    """Mean and interval over a row's trials of `metrics.<key>` (times `scale`); a footnote per
    gap (a metric that does not apply to a trial gets its own footnote saying why)."""
    values, lacking, moot = [], [], []
    for _, row in group.iterrows():
        value = number(cell(row, f"metrics.{key}"))
        if value is not None:
            values.append(value * scale)
        elif (reason := not_applicable(row, key)) is not None:
            moot.append((row, reason))
        else:
            lacking.append(row)
    markers = inapplicable(moot, key, notes) + gaps(lacking, key, notes)
    return Stat(st.mean_interval(values), markers)


def seed_values(group: pd.DataFrame, key: str, scale: float = 1.0) -> dict[int, float]:
    """`metrics.<key>` (times `scale`) of a row's trials, keyed by training seed (the mean
    where a row pools several trials of one seed)."""
    found: dict[int, list[float]] = {}
    for _, row in group.iterrows():
        seed, value = number(cell(row, "config.train.seed")), number(cell(row, f"metrics.{key}"))
        if seed is not None and value is not None:
            found.setdefault(int(seed), []).append(value * scale)
    return {seed: float(np.mean(values)) for seed, values in found.items()}


def reference_row(data: SweepData, rows: list[tuple[Any, pd.DataFrame]]) -> int:
    """Index of the row holding the sweep's reference variant (the first row if none does)."""
    for index, (_, group) in enumerate(rows):
        if data.reference is not None and (group["variant"] == data.reference).any():
            return index
    return 0


def delta_text(group: pd.DataFrame, reference: pd.DataFrame, key: str, spec: str,
               scale: float, is_reference: bool) -> tuple[st.Difference | None, str]:
    """The paired difference of `key` between a row and the reference row, and its cell."""
    if is_reference:
        return None, "(reference)"
    difference = st.paired_difference(seed_values(group, key, scale),
                                      seed_values(reference, key, scale))
    return difference, difference.text(spec)


def comparison_notes(differences: list[st.Difference | None], reference_label: str) -> list[str]:
    """How to read the Δ column: the paired test, significance, n=1 and power."""
    tested = [d for d in differences if d is not None]
    lines = [f"Δ{KID}: paired difference to the reference row ({reference_label}) over the "
             f"seeds both have, with its {st.CI_LEVEL:.0%} interval ({st.METHOD}); * marks an "
             f"interval that excludes zero. KID decides significance (unbiased; FID at a few "
             f"thousand samples is biased, Chong & Forsyth 2020); every metric's differences "
             f"are in the differences table."]
    if tested and all(d.n < 2 for d in tested):
        lines.append("n=1 per row: one seed per setting, so nothing was tested; a comparison "
                     "needs several seeds per arm (e.g. seeds: [0, 1, 2] in the sweep file).")
    detectable = [d.detectable for d in tested if d.detectable is not None]
    if detectable:
        lines.append(f"Power: with these seeds and the observed spread of the paired "
                     f"differences, the smallest KID×100 difference detected with "
                     f"{st.POWER:.0%} probability is {min(detectable):.3f} to "
                     f"{max(detectable):.3f}; a smaller true difference may read as "
                     "'not significant'.")
    return lines


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
         "portraits; the view is not stated), repeated on each view; not measured here",
         masked_definition(trials)],
        trials)


MASKED_AVERAGE_TEXT = {
    "image": "the difference map with the edited region set to zero, averaged over the whole "
             "W x H image (the paper's, Fig. 4)",
    "outside": "the difference map averaged over the pixels outside the edited region only "
               "(not the paper's)"}
MASKED_REGION_TEXT = {"union": "the part's pixels in the original or the edited image",
                      "original": "the part's pixels in the original image",
                      "edited": "the part's pixels in the edited image"}


def masked_definition(trials: pd.DataFrame) -> str:
    """The footnote saying how each trial's masked D_mean was defined (metrics.json records
    it; results written before it did were averaged outside the union of both masks)."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for _, row in trials.iterrows():
        if cell(row, "metrics.disentangle_what") is None:
            continue
        average = str(cell(row, "metrics.d_mean_masked_average") or "outside")
        region = str(cell(row, "metrics.d_mean_masked_region") or "union")
        edit = str(cell(row, "metrics.disentangle_what"))
        found.setdefault((average, region, edit), []).append(str(row["trial_id"]))
    parts = [f"{MASKED_AVERAGE_TEXT.get(average, average)}; excluded region: "
             f"{MASKED_REGION_TEXT.get(region, region)}; edit: {edit} (docs/part-edits.md)"
             + (f" [trials {', '.join(ids)}]" if len(found) > 1 else "")
             for (average, region, edit), ids in sorted(found.items())]
    return "masked D_mean: " + (" | ".join(parts) if parts else "no trial measured it")


# ---- comparison (3D-SSGAN Table 2) -----------------------------------------------------------

def model_design(name: str) -> tuple[str | None, bool | None]:
    """(disentanglement "strong"/"weak", 3D-aware) from the zoo's registry; None if unknown."""
    from models.registry import get_model

    try:
        spec = get_model(name)
    except KeyError:
        return None, None
    return spec.disentanglement, spec.three_d_aware


def _arm_rows(data: SweepData, rows: list[tuple[Any, pd.DataFrame]], labels: list[str],
              notes: Footnotes, metrics: tuple[str, ...]
              ) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """For each row: its metrics' stats (raw and shown, with the Δ of the deciding metric to
    the reference row), and the notes on reading the Δ column."""
    ref_index = reference_row(data, rows) if rows else 0
    reference = rows[ref_index][1] if rows else None
    raw, shown, differences = [], [], []
    for index, (_, group) in enumerate(rows):
        raw_row: dict[str, Any] = {}
        shown_row: dict[str, str] = {}
        for key in metrics:
            label, spec, scale, goal = COMPARED[key]
            stat = metric_stat(group, key, notes, scale)
            raw_row |= stat.columns(key.replace("/", "_") + ("_x100" if scale == 100 else ""))
            shown_row[f"{label} {'↓' if goal == 'min' else '↑'}"] = stat.text(spec)
        label, spec, scale, _ = COMPARED[DECIDING]
        difference, text = delta_text(group, reference, DECIDING, spec, scale,
                                      index == ref_index)
        differences.append(difference)
        raw_row |= {"delta_kid_x100": difference.mean if difference else None,
                    "delta_kid_x100_ci_low": difference.low if difference else None,
                    "delta_kid_x100_ci_high": difference.high if difference else None,
                    "delta_kid_significant": difference.significant if difference else None}
        shown_row[f"Δ{KID} vs reference"] = text
        raw.append(raw_row)
        shown.append(shown_row)
    if len(rows) < 2:
        return raw, shown, []
    return raw, shown, comparison_notes(differences, labels[ref_index])


def _metric_columns(metrics: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """CSV columns and shown headers of `_arm_rows`' output."""
    raw, shown = [], []
    for key in metrics:
        label, _, scale, goal = COMPARED[key]
        name = key.replace("/", "_") + ("_x100" if scale == 100 else "")
        raw += [name, f"{name}_ci_low", f"{name}_ci_high", f"{name}_std"]
        shown.append(f"{label} {'↓' if goal == 'min' else '↑'}")
    raw += ["delta_kid_x100", "delta_kid_x100_ci_low", "delta_kid_x100_ci_high",
            "delta_kid_significant"]
    return raw, shown + [f"Δ{KID} vs reference"]


def comparison(data: SweepData) -> Table:
    """3D-SSGAN Table 2: design properties of each model, image quality, view consistency."""
    notes = Footnotes()
    trials = data.trials
    rows = groups(trials, _model)
    metrics = ("fid", "kid", "view/photometric_l1", "view/mask_miou")
    raw, shown, extra = _arm_rows(data, rows, [str(model) for model, _ in rows], notes, metrics)
    data_rows, shown_rows = [], []
    for (model, group), raw_row, shown_row in zip(rows, raw, shown, strict=True):
        strength, aware = model_design(str(model))
        unknown = "" if strength is not None else notes.mark(
            f"model {model} is not registered in the zoo (models/): its design is unknown")
        paper = ref.COMPARISON_FID.get(str(model))
        data_rows.append({"method": model, "semantic_disentanglement": strength,
                          "three_d_aware": aware, **raw_row,
                          "fid_extractor": strings(group, "fid_extractor"),
                          "n": metric_stat(group, "fid", Footnotes()).n, "paper_fid": paper})
        shown_rows.append({
            "Method": str(model) + pooled_marker(group, notes),
            "Semantic disentanglement": DASH + unknown if strength is None
            else strength.capitalize(),
            "3D-aware": DASH + unknown if aware is None else ("✓" if aware else "✗"),
            **shown_row, "Feature extractor": strings(group, "fid_extractor") or DASH,
            "n": str(data_rows[-1]["n"]), FID_REF: fmt(paper, "g")})
    raw_columns, shown_columns = _metric_columns(metrics)
    return _finish(
        "comparison",
        "Comparison (3D-SSGAN Table 2): semantic disentanglement and 3D awareness (from each "
        "model's design in the zoo), image quality (FID, KID) and measured view consistency "
        f"(photometric reprojection error and mask mIoU between views); {STATISTICS_TEXT}",
        data_rows, shown_rows,
        ["method", "semantic_disentanglement", "three_d_aware", *raw_columns, "fid_extractor",
         "n", "paper_fid"],
        ["Method", "Semantic disentanglement", "3D-aware", *shown_columns, "Feature extractor",
         "n", FID_REF],
        notes,
        ["(paper) column: published FIDs of 3D-SSGAN Table 2 (30K real vs 50K generated "
         "images); comparable only with measured numbers of the same dataset and extractor",
         *extra],
        trials)


# ---- ablation (3D-SSGAN Table 3) -------------------------------------------------------------

ABLATION_ORDER = [(True, True), (False, True), (True, False), (False, False)]


def ablation_label(relative_depth: bool, nerf_weights: bool) -> str:
    """Table 3's row names, from model.relative_depth and model.mask_nerf_weights."""
    off = [name for name, on in (("relative depth", relative_depth),
                                 ("NeRF-based weights", nerf_weights)) if not on]
    return "Full model" if not off else "w/o " + ", w/o ".join(off)


def ablation(data: SweepData) -> Table:
    """3D-SSGAN Table 3: image quality, view and mask consistency, class frequencies, without
    relative depth or NeRF weights, each compared with the reference arm."""
    notes = Footnotes()

    def key(row: pd.Series) -> tuple[bool, bool] | None:
        depth = cell(row, "config.model.relative_depth")
        weights = cell(row, "config.model.mask_nerf_weights")
        return None if depth is None or weights is None else (bool(depth), bool(weights))

    trials = data.trials
    rows = groups(trials, key, ABLATION_ORDER.index)
    metrics = ("fid", "kid", "view/photometric_l1", "view/mask_miou", "mask/class_tv")
    raw, shown, extra = _arm_rows(data, rows, [ablation_label(*k) for k, _ in rows], notes,
                                  metrics)
    data_rows, shown_rows = [], []
    for ((depth, weights), group), raw_row, shown_row in zip(rows, raw, shown, strict=True):
        paper = ref.ABLATION_FID.get((depth, weights))
        label = ablation_label(depth, weights)
        n = metric_stat(group, "fid", Footnotes()).n
        data_rows.append({"setting": label, "relative_depth": depth,
                          "mask_nerf_weights": weights, **raw_row,
                          "fid_extractor": strings(group, "fid_extractor"), "n": n,
                          "paper_fid": paper})
        shown_rows.append({"Setting": label + pooled_marker(group, notes), **shown_row,
                           "Feature extractor": strings(group, "fid_extractor") or DASH,
                           "n": str(n), FID_REF: fmt(paper, "g")})
    raw_columns, shown_columns = _metric_columns(metrics)
    return _finish(
        "ablation",
        "Ablation (3D-SSGAN Table 3): FID, KID, photometric reprojection error between views, "
        "mask mIoU across views and the class-frequency TV distance of generated masks to the "
        f"data's; {STATISTICS_TEXT}",
        data_rows, shown_rows,
        ["setting", "relative_depth", "mask_nerf_weights", *raw_columns, "fid_extractor", "n",
         "paper_fid"],
        ["Setting", *shown_columns, "Feature extractor", "n", FID_REF],
        notes,
        ["(paper) column: published FIDs of 3D-SSGAN Table 3 (CelebAMask-HQ, Inception, 30K "
         "real vs 50K generated images)", *extra],
        trials)


# ---- lifting ablation (3D-SSGAN Sec. 4.2) ----------------------------------------------------

def lifting(data: SweepData) -> Table:
    """Lifting ablation: FID and KID per lifting function psi (Eq. 7) and alpha, over seeds."""
    notes = Footnotes()

    def key(row: pd.Series) -> tuple[str, float] | None:
        function = cell(row, "config.model.lifting.function")
        alpha = number(cell(row, "config.model.lifting.alpha"))
        return None if function is None or alpha is None else (str(function), alpha)

    def order(k: tuple[str, float]) -> tuple[tuple[int, str], float]:
        return _rank(k[0], LIFTING_FUNCTIONS), k[1]

    trials = data.trials
    rows = groups(trials, key, order)
    metrics = ("fid", "kid")
    raw, shown, extra = _arm_rows(data, rows, [f"{f}, alpha {a:g}" for (f, a), _ in rows],
                                  notes, metrics)
    data_rows, shown_rows = [], []
    for ((function, alpha), group), raw_row, shown_row in zip(rows, raw, shown, strict=True):
        n = metric_stat(group, "fid", Footnotes()).n
        data_rows.append({"function": function, "alpha": alpha, **raw_row,
                          "fid_extractor": strings(group, "fid_extractor"), "n": n})
        shown_rows.append({"ψ": function + pooled_marker(group, notes), "α": format(alpha, "g"),
                           **shown_row,
                           "Feature extractor": strings(group, "fid_extractor") or DASH,
                           "n": str(n)})
    raw_columns, shown_columns = _metric_columns(metrics)
    return _finish(
        "lifting",
        "Lifting ablation (3D-SSGAN Sec. 4.2): FID and KID per lifting function psi and alpha "
        f"(Eq. 7); {STATISTICS_TEXT}",
        data_rows, shown_rows, ["function", "alpha", *raw_columns, "fid_extractor", "n"],
        ["ψ", "α", *shown_columns, "Feature extractor", "n"], notes, [ref.LIFTING_TEXT, *extra],
        trials)


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
        stats = {name: metric_stat(group, name, notes, KID_SCALE if name == "kid" else 1)
                 for name in ("fid", "kid", "id_consistency")}
        paper = ref.IDENTITY.get(model, {})
        rows.append({"model": model, "dataset": dataset,
                     **stats["fid"].columns("fid"), **stats["kid"].columns("kid_x100"),
                     **stats["id_consistency"].columns("id_consistency"),
                     "fid_extractor": strings(group, "fid_extractor"),
                     "id_model": strings(group, "id_model"), "n": stats["fid"].n,
                     "paper_fid": paper.get("fid"), "paper_kid_x100": paper.get("kid"),
                     "paper_id_consistency": paper.get("id_consistency")})
        shown.append({"Model": model + pooled_marker(group, notes), "Dataset": dataset,
                      "FID ↓": stats["fid"].text(".2f"), f"{KID} ↓": stats["kid"].text(".3f"),
                      "ID ↑": stats["id_consistency"].text(".3f"),
                      "Feature extractor": strings(group, "fid_extractor") or DASH,
                      "ID model": strings(group, "id_model") or DASH, "n": str(stats["fid"].n),
                      f"FID ({ref.IDE3D_LABEL})": fmt(paper.get("fid"), "g"),
                      f"{KID} ({ref.IDE3D_LABEL})": fmt(paper.get("kid"), "g"),
                      f"ID ({ref.IDE3D_LABEL})": fmt(paper.get("id_consistency"), "g")})
    stat_columns = [f"{name}{suffix}" for name in ("fid", "kid_x100", "id_consistency")
                    for suffix in ("", "_ci_low", "_ci_high", "_std")]
    return _finish(
        "identity",
        "Image quality and multi-view identity consistency (IDE-3D Table 1 style): FID, KID "
        "and ID (mean cosine similarity of identity embeddings of one latent at two random "
        f"poses); {STATISTICS_TEXT}",
        rows, shown,
        ["model", "dataset", *stat_columns, "fid_extractor", "id_model", "n", "paper_fid",
         "paper_kid_x100", "paper_id_consistency"],
        ["Model", "Dataset", "FID ↓", f"{KID} ↓", "ID ↑", "Feature extractor", "ID model", "n",
         f"FID ({ref.IDE3D_LABEL})", f"{KID} ({ref.IDE3D_LABEL})", f"ID ({ref.IDE3D_LABEL})"],
        notes,
        ["(paper) columns: published numbers of IDE-3D Table 1 (CelebAHQ-Mask columns), "
         f"copied as printed; its KIDs are x100 (FENeRF's scale), as the {KID} column here"],
        trials)


# ---- paired differences and the noise floor --------------------------------------------------

def setting_of(row: pd.Series) -> tuple[tuple[str, str], ...]:
    """The trial's config without seed and bookkeeping: equal for seed replicates."""
    return tuple((k, repr(row[k])) for k in row.index if k.startswith("config.")
                 and not k.removeprefix("config.").startswith(BOOKKEEPING))


TRIAL_ID = re.compile(r"^(?P<variant>.+)-s\d+-[0-9a-f]{8}$")  # harness.launch.spec's trial ids


def _arms(trials: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The sweep's arms: its trials grouped by setting (seeds of one config), in trial order,
    each named by the variant in its trial ids, else by the settings that set it apart."""
    settings = groups(trials, setting_of, order=lambda key: list(
        dict.fromkeys(setting_of(row) for _, row in trials.iterrows())).index(key))
    arms = []
    for key, group in settings:
        variants = {m.group("variant") if (m := TRIAL_ID.match(str(t))) else None
                    for t in group["trial_id"]}
        name = variants.pop() if len(variants) == 1 and None not in variants else None
        if name is None:
            first = dict(settings[0][0])
            apart = sorted((k for k, v in key if first.get(k) != v and v != "nan"),
                           key=lambda k: (k != "config.model.name", k))
            name = ", ".join(f"{k.removeprefix('config.')}={dict(key)[k].strip(chr(39))}"
                             for k in apart[:2])
            name = (name + (", ..." if len(apart) > 2 else "")) or "default"
        arms.append((name, group))
    return arms


def differences(data: SweepData) -> Table:
    """Every arm against the reference arm, for every measured metric: the paired difference
    over seeds, its interval and p value, and the smallest difference the sweep could detect."""
    arms = _arms(data.trials)
    ref_index = reference_row(data, arms) if arms else 0
    reference_name, reference = arms[ref_index] if arms else ("", None)
    rows, shown = [], []
    for name, group in arms:
        if name == reference_name:
            continue
        measured = [key for key in COMPARED if seed_values(group, key)]
        if not measured:
            rows.append({"arm": name, "reference": reference_name, "n_pairs": 0})
            shown.append({"Arm": name, "Metric": DASH, "n": "0",
                          f"Δ vs {reference_name}": DASH, "p": DASH,
                          "Detectable Δ (80% power)": DASH, "Verdict": "no results"})
        for key in measured:
            label, spec, scale, goal = COMPARED[key]
            ours, theirs = seed_values(group, key, scale), seed_values(reference, key, scale)
            d = st.paired_difference(ours, theirs)
            better = None if not d.significant else ((d.mean < 0) == (goal == "min"))
            rows.append({"arm": name, "reference": reference_name, "metric": key,
                         "scale": scale, "n_pairs": d.n, "difference": d.mean,
                         "ci_low": d.low, "ci_high": d.high, "p_value": d.p_value,
                         "significant": d.significant, "detectable": d.detectable,
                         "deciding": key == DECIDING})
            verdict = ("untested (n<2)" if d.significant is None else
                       ("better" if better else "worse") if d.significant else "undecided")
            shown.append({"Arm": name, "Metric": label + (" (decides)" if key == DECIDING
                                                          else ""),
                          "n": str(d.n), "Δ vs " + reference_name: d.text(spec),
                          "p": fmt(d.p_value, ".3f"),
                          "Detectable Δ (80% power)": fmt(d.detectable, spec),
                          "Verdict": verdict})
    notes = [f"Δ: arm minus reference ({reference_name}) over the seeds both have, with its "
             f"{st.CI_LEVEL:.0%} interval ({st.METHOD}; paired: arms that share a seed share "
             "data order, initialisation stream and evaluation latents and cameras); * and "
             "'better'/'worse': the interval excludes zero; 'undecided': it does not. "
             f"{KID} decides significance (unbiased); FID at a few thousand samples is biased "
             "(Chong & Forsyth 2020). Detectable Δ: the smallest true difference a paired t "
             f"test at these seeds and this spread finds with {st.POWER:.0%} probability.",
             *noise_floor_notes(data, max((len(g) for _, g in arms), default=1))]
    return Table("differences",
                 "Paired differences of every arm to the reference arm, per metric",
                 pd.DataFrame(rows, columns=["arm", "reference", "metric", "scale", "n_pairs",
                                             "difference", "ci_low", "ci_high", "p_value",
                                             "significant", "detectable", "deciding"]),
                 pd.DataFrame(shown, columns=["Arm", "Metric", "n", f"Δ vs {reference_name}",
                                              "p", "Detectable Δ (80% power)", "Verdict"]),
                 [], notes, list(data.trials["trial_id"]))


def noise_floor_notes(data: SweepData, seeds: int) -> list[str]:
    """What the noise floor of this sweep's setting says about its comparisons (or why none)."""
    if data.noise_floor is None:
        own = (" This sweep's own seed-to-seed spread, arm by arm: tables/noise_floor."
               if seeds > 1 else "")
        return [f"Noise floor: {data.noise_floor_source or 'none'}.{own}"]
    lines = [f"Noise floor ({data.noise_floor_source}): seed-to-seed spread of one config at "
             "this preset, model and budget."]
    for key, (label, spec, scale, _) in COMPARED.items():
        values = [v * scale for v in (number(x) for x in data.noise_floor.get(
            f"metrics.{key}", pd.Series(dtype=float))) if v is not None]
        floor = st.noise_floor(key, values)
        resolvable = floor.resolvable(seeds)
        if floor.std is not None:
            lines.append(f"{label}: std {floor.std:{spec}} [{floor.std_low:{spec}}, "
                         f"{floor.std_high:{spec}}] over {floor.n} seeds; differences smaller "
                         f"than {fmt(resolvable, spec)} are not resolved at n={seeds} seeds "
                         "per arm (two independent arms, 80% power).")
    return lines


def claims(data: SweepData) -> Table:
    """3D-SSGAN's claims about its ablations, each measured as the paired difference of the arm
    that changes that one setting against the reference arm: reproduced, not reproduced, or
    undecided at this budget (the interval does not separate them)."""
    arms = _arms(data.trials)
    ref_index = reference_row(data, arms) if arms else 0
    reference_name = arms[ref_index][0] if arms else "reference"
    rows, shown = [], []
    if arms:
        reference = arms[ref_index][1]
        base = reference.iloc[0]
        for name, group in arms:
            row = group.iloc[0]
            changed = {k.removeprefix("config."): cell(row, k) for k, _ in setting_of(row)
                       if cell(row, k) is not None and cell(row, k) != cell(base, k)}
            for key, value, metric, expected, text in ref.CLAIMS:
                if set(changed) != {key} or changed[key] != value:
                    continue
                label, spec, scale, goal = COMPARED[metric]
                d = st.paired_difference(seed_values(group, metric, scale),
                                         seed_values(reference, metric, scale))
                verdict = claim_verdict(d, expected, goal)
                rows.append({"claim": text, "arm": name, "reference": reference_name,
                             "metric": metric, "expected": expected, "n_pairs": d.n,
                             "difference": d.mean, "ci_low": d.low, "ci_high": d.high,
                             "detectable": d.detectable, "verdict": verdict})
                shown.append({"Claim (3D-SSGAN)": text, "Arm": name, "Metric": label,
                              f"Δ vs {reference_name}": d.text(spec),
                              "Detectable Δ": fmt(d.detectable, spec), "Verdict": verdict})
    return Table(
        "claims", "3D-SSGAN's ablation claims, measured: each arm against the reference arm",
        pd.DataFrame(rows, columns=["claim", "arm", "reference", "metric", "expected",
                                    "n_pairs", "difference", "ci_low", "ci_high", "detectable",
                                    "verdict"]),
        pd.DataFrame(shown, columns=["Claim (3D-SSGAN)", "Arm", "Metric",
                                     f"Δ vs {reference_name}",
                                     "Detectable Δ", "Verdict"]),
        [], [f"Verdicts from the paired difference over seeds and its {st.CI_LEVEL:.0%} "
             f"interval ({st.METHOD}): a claim that the change makes a metric worse is "
             "reproduced when the interval lies on the worse side of zero, not reproduced "
             "when it lies on the better side, undecided otherwise; a claim of no difference "
             "is not reproduced when the interval excludes zero and undecided otherwise (a "
             "t test cannot show equality; the detectable difference says how large a "
             f"difference would have been found with {st.POWER:.0%} probability). The paper's "
             "FIDs are Inception FIDs on CelebAMask-HQ at 512 px; the measured differences "
             "are on the embedded synthetic data at the sweep's preset."],
        list(data.trials["trial_id"]))


def claim_verdict(d: st.Difference, expected: str, goal: str) -> str:
    """'reproduced', 'not reproduced', 'undecided at this budget' or 'untested (n<2)'."""
    if d.significant is None:
        return "untested (n<2)"
    if expected == "same":
        return "not reproduced (differs)" if d.significant else "undecided at this budget"
    if not d.significant:
        return "undecided at this budget"
    worse = (d.mean > 0) == (goal == "min")
    return "reproduced" if worse else "not reproduced (better, not worse)"


CPU_PRESET_BUDGET = (
    "cpu preset: its 560 steps give head-shaped images whose masks follow the heads, not "
    "recognisable portraits; those need about 2,000 steps on a 2-core CPU "
    "(train.iterations: 2000, as sweeps/reproduce_table3.yaml) or a GPU.")


def machine_notes(trials: pd.DataFrame) -> list[str]:
    """Which machines trained the finished trials, and a warning when there are several: the
    same config and seed give different numbers on different machines, so seeds pair
    different runs across them."""
    counts = Counter(name for machines in machines_by_trial(trials) for name in machines)
    if not counts:
        return ["machines: not recorded (trials evaluated before the harness recorded them)"]
    listed = "; ".join(f"{name} ({n} trial(s))"
                       for name, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    if len(counts) == 1:
        return [f"machine: {listed}"]
    return [f"**trials trained on {len(counts)} machines**: {listed}. The same config and seed "
            "give different numbers on different machines (docs/results.md), so a seed pairs "
            "different runs across them: run a comparison on one kind of machine."]


def statistics_summary(data: SweepData) -> list[str]:
    """What the report's comparisons can and cannot say: seeds per arm, the test, the
    reference arm, the noise floor, and the cpu preset's budget where it applies."""
    arms = _arms(data.trials[data.trials["status"] == "done"])
    counts = sorted({len(group) for _, group in arms})
    seeds = "/".join(str(n) for n in counts) or "0"
    lines = [f"- arms: {len(arms)} ({'; '.join(name for name, _ in arms) or 'none'}), "
             f"{seeds} finished seed(s) per arm"]
    if len(arms) > 1:
        ref_name = arms[reference_row(data, arms)][0]
        lines.append(f"- comparisons: every arm against `{ref_name}`, paired by seed, "
                     f"{st.CI_LEVEL:.0%} interval ({st.METHOD}); {KID} decides significance "
                     "(tables/differences)")
    if counts and max(counts) < 2:
        lines.append("- **one seed per arm: nothing was tested.** These tables show which "
                     "trials ran, not which setting wins (a single cpu-preset run's FID moves "
                     "by tens with the thread count or the CPU model alone). For a comparison "
                     "run several seeds per arm, as sweeps/reproduce_table3.yaml and "
                     "sweeps/reproduce_lifting.yaml do (5 seeds at 2,000 steps).")
    lines += [f"- {line}" for line in noise_floor_notes(data, max(counts, default=1))]
    lines += [f"- {line}" for line in machine_notes(data.trials[data.trials["status"] == "done"])]
    presets = set(data.trials.get("config.preset", pd.Series(dtype=object)).dropna())
    iterations = set(data.trials.get("config.train.iterations", pd.Series(dtype=float))
                     .dropna())
    if presets == {"cpu"} and iterations and max(iterations) < 2000:
        lines.append(f"- {CPU_PRESET_BUDGET}")
    return lines


def noise_floor_table(data: SweepData) -> Table:
    """Seed-to-seed spread of every metric in each arm, and the smallest difference between
    two arms that n seeds each resolve at that spread."""
    rows, shown = [], []
    resolve_at = (3, 5, 10)
    for name, group in _arms(data.trials):
        for key, (label, spec, scale, _) in COMPARED.items():
            values = list(seed_values(group, key, scale).values())
            if not values:
                continue
            floor = st.noise_floor(key, values)
            resolvable = {n: floor.resolvable(n) for n in resolve_at}
            rows.append({"arm": name, "metric": key, "scale": scale, "n": floor.n,
                         "mean": floor.mean, "std": floor.std, "std_ci_low": floor.std_low,
                         "std_ci_high": floor.std_high,
                         **{f"resolvable_n{n}": v for n, v in resolvable.items()}})
            shown.append({"Arm": name, "Metric": label, "n": str(floor.n),
                          "Mean": fmt(floor.mean, spec),
                          "Std [95% CI]": DASH if floor.std is None else
                          f"{floor.std:{spec}} [{floor.std_low:{spec}}, {floor.std_high:{spec}}]",
                          **{f"Resolvable Δ, n={n}": fmt(v, spec)
                             for n, v in resolvable.items()}})
    return Table(
        "noise_floor",
        "Noise floor: seed-to-seed spread of every metric (std over seeds with its 95% "
        "chi-square interval) and the smallest difference two arms of n seeds each resolve",
        pd.DataFrame(rows, columns=["arm", "metric", "scale", "n", "mean", "std", "std_ci_low",
                                    "std_ci_high", *(f"resolvable_n{n}" for n in resolve_at)]),
        pd.DataFrame(shown, columns=["Arm", "Metric", "n", "Mean", "Std [95% CI]",
                                     *(f"Resolvable Δ, n={n}" for n in resolve_at)]),
        [], [f"Resolvable Δ: the smallest true difference between two arms of n seeds each "
             f"that a two-sided t test at {st.CI_LEVEL:.0%} finds with {st.POWER:.0%} "
             f"probability, if every arm has this spread. {KID} is KID x100."],
        list(data.trials["trial_id"]))


TABLES: dict[str, Callable[[SweepData], Table]] = {
    "disentanglement": disentanglement,
    "comparison": comparison,
    "ablation": ablation,
    "lifting": lifting,
    "identity": identity,
    "differences": differences,
    "claims": claims,
    "noise_floor": noise_floor_table,
}
