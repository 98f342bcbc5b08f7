"""The studio's web page: a Gradio app over a run's EMA generator (docs/studio.md).

A thin page over harness.studio.engine (renders, part edits with Eq. 14's D_mean, progressive
generation, interpolation, turntables) and harness.studio.inversion (real portraits into the
latent space): every picture and number comes from there; this module converts between them
and the page. The portrait the tabs work on (its latents, and the generator that renders them:
the run's, or an inversion's tuned copy) lives in the page's session state; exports are written
into a temporary folder, never into the run directory. Nothing is fetched from the network:
Gradio's analytics are off and the theme uses the system's fonts.
"""

from __future__ import annotations

import atexit
import copy
import functools
import html
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from harness.data.classes import CLASS_COLOURS, CLASS_NAMES, PROGRESSIVE_ORDER
from harness.errors import UserError
from harness.studio.engine import Edit, Studio, gif_bytes
from harness.studio.inversion import (
    IdentityFeature,
    InversionSettings,
    Portrait,
    identity_feature,
    invert,
    read_portrait,
)
from harness.studio.pictures import PictureFiles

logger = logging.getLogger(__name__)
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry (gradio reads it at each call)

DISPLAY = 256  # pixels: pictures are upscaled (nearest neighbour) to about this side for display
WHOLE_FACE = "whole face"  # the interpolation's choice of every part at once
WHAT = ("shape", "texture", "both")  # the codes a part edit or interpolation changes
DEFAULT_STEPS = 100  # inversion steps the page starts with (the CLI's default is 200)
# System fonts only: a theme font that is not installed would be fetched from the web.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "Consolas", "monospace"])
CSS = ".studio-picture img { image-rendering: pixelated; }"


@dataclass
class Current:
    """The portrait every tab works on: its latents and the generator that renders them."""

    w: torch.Tensor  # (1, S, w_dim) on the studio's device
    label: str  # what it is: "seed 3", "inversion of face.png"
    generator: torch.nn.Module | None = None  # an inversion's tuned generator; None: the run's


# ---- conversions between the engine and the page ------------------------------------------


def view_of(studio: Studio, current: Current) -> Studio:
    """The studio rendering with `current`'s generator (a shallow copy when it is a tuned one)."""
    if current.generator is None or current.generator is studio.generator:
        return studio
    view = copy.copy(studio)
    view.generator = current.generator
    return view


@functools.cache
def picture_files() -> PictureFiles:
    """The process's folder of shown pictures (one for every page it serves)."""
    return PictureFiles()


def shown(picture: np.ndarray | None) -> str | None:
    """An (H, W, 3) uint8 picture upscaled by a whole factor (nearest neighbour) to about
    DISPLAY pixels, as the path of its PNG file (pictures.py says why not the array)."""
    if picture is None:
        return None
    scale = max(1, DISPLAY // picture.shape[0])
    return picture_files().path_of(picture.repeat(scale, axis=0).repeat(scale, axis=1))


def radians(yaw: float, pitch: float) -> tuple[float, float]:
    """Slider degrees -> the engine's radians."""
    return math.radians(float(yaw)), math.radians(float(pitch))


def whole(value: float | None, name: str, least: int) -> int:
    """A number field as an integer of at least `least`; a UserError when it is not one."""
    if value is None or not math.isfinite(value) or value < least or value != int(value):
        raise UserError(f"{name}: give a whole number of at least {least}")
    return int(value)


def status_line(studio: Studio, current: Current, yaw: float, pitch: float) -> str:
    """The line above the tabs: what the current portrait is and where the camera is (a 2D
    model has none)."""
    generator = "its tuned generator" if current.generator is not None else "the run's generator"
    camera = ("no camera (2D model)" if studio.unsupported("pose") else
              f"at yaw {float(yaw):.1f}°, pitch {float(pitch):.1f}°")
    return f"**Current portrait:** {current.label}, rendered by {generator}, {camera}"


def problem(error: Exception) -> str:
    """A user error as the page's status line (and a toast)."""
    gr.Warning(str(error), duration=5)
    return f"⚠️ {error}"


def legend() -> str:
    """The mask colours as HTML swatches."""
    swatches = "".join(
        f'<span style="display:inline-block;margin-right:.8em">'
        f'<span style="display:inline-block;width:.9em;height:.9em;vertical-align:middle;'
        f'background:rgb{tuple(colour)};border:1px solid #888"></span> {html.escape(name)}</span>'
        for name, colour in zip(CLASS_NAMES, CLASS_COLOURS, strict=True))
    return f'<div style="font-size:.85em">{swatches}</div>'


def picture(label: str, **kwargs: Any) -> gr.Image:
    """An output picture (PNG, pixelated when the browser scales it)."""
    return gr.Image(label=label, type="filepath", interactive=False,
                    elem_classes="studio-picture", **kwargs)


# ---- what each tab shows ------------------------------------------------------------------


def sample_view(studio: Studio, current: Current, yaw: float, pitch: float) -> tuple:
    """Image, mask, depth of the current portrait at the sliders' pose, and the status line."""
    portrait = view_of(studio, current).render(current.w, *radians(yaw, pitch))
    return (shown(portrait.image), shown(portrait.mask), shown(portrait.depth),
            status_line(studio, current, yaw, pitch))


def pick_seed(studio: Studio, seed: float | None, yaw: float, pitch: float) -> tuple:
    """The latent of `seed` becomes the current portrait."""
    try:
        number = whole(seed, "seed", 0)
    except UserError as error:
        return (gr.skip(),) * 4 + (problem(error),)
    current = Current(studio.latent(number), f"seed {number}")
    return (current, *sample_view(studio, current, yaw, pitch))


def _edit(studio: Studio, current: Current, part: str, what: str, seed: float | None,
          yaw: float, pitch: float) -> tuple[Edit, int]:
    """The part edit the Edit tab's controls describe, and its edit seed (a UserError for a
    seed that is not a whole number)."""
    number = whole(seed, "edit seed", 0)
    return view_of(studio, current).edit(current.w, part, what, number,
                                         *radians(yaw, pitch)), number


def edit_view(studio: Studio, current: Current, part: str, what: str, seed: float | None,
              yaw: float, pitch: float) -> tuple:
    """Original, edited and difference pictures of a part edit, and Eq. 14's numbers."""
    try:
        edit, number = _edit(studio, current, part, what, seed, yaw, pitch)
    except UserError as error:
        return (gr.skip(),) * 3 + (problem(error),)
    codes = "shape and texture codes" if what == "both" else f"{what} code"
    numbers = (f"**D_mean {edit.d_mean:.4f}** (whole image) · **masked D_mean "
               f"{edit.d_mean_masked:.4f}** (outside the edited {part} region, as the "
               f"evaluation measures it; Eq. 14, lower: the edit stays in its part). The {part}'s "
               f"{codes} taken from the latent of edit seed {number}.")
    return shown(edit.original.image), shown(edit.edited.image), shown(edit.difference), numbers


def keep_edit(studio: Studio, current: Current, part: str, what: str, seed: float | None,
              yaw: float, pitch: float) -> tuple:
    """The edited portrait becomes the current one (edits can be chained)."""
    try:
        edit, number = _edit(studio, current, part, what, seed, yaw, pitch)
    except UserError as error:
        return (gr.skip(),) * 4 + (problem(error),)
    kept = Current(edit.latent, f"{current.label}, {part} {what} from seed {number}",
                   current.generator)
    return (kept, *sample_view(studio, kept, yaw, pitch))


def progressive_view(studio: Studio, current: Current, count: int, yaw: float,
                     pitch: float) -> tuple:
    """The portrait with only the first `count` parts of PROGRESSIVE_ORDER switched on."""
    count = int(count)
    portrait = view_of(studio, current).progressive(current.w, count, *radians(yaw, pitch))
    parts = ("all parts" if count >= len(PROGRESSIVE_ORDER)
             else "parts on: " + ", ".join(PROGRESSIVE_ORDER[:count]))
    return shown(portrait.image), shown(portrait.mask), parts


def interpolate_view(studio: Studio, current: Current, seed: float | None, part: str,
                     what: str, t: float, yaw: float, pitch: float) -> tuple:
    """The current portrait, the blend a fraction t toward seed B's latent, and seed B."""
    try:
        number = whole(seed, "seed B", 0)
    except UserError as error:
        return (gr.skip(),) * 3 + (problem(error),)
    view = view_of(studio, current)
    w_b = view.latent(number).to(current.w.device)
    blend = view.interpolate(current.w, w_b, float(t), None if part == WHOLE_FACE else part, what)
    yaw_r, pitch_r = radians(yaw, pitch)
    pictures = [view.render(w, yaw_r, pitch_r).image for w in (current.w, blend, w_b)]
    where = "every part" if part == WHOLE_FACE else f"the {part} only"
    return (*map(shown, pictures),
            f"t = {float(t):.2f} of the way from the current portrait to seed {number}, on "
            f"{where} ({what}).")


def read_upload(studio: Studio, portrait: str | None, mask: str | None) -> Portrait:
    """read_portrait on uploaded files; its UserError naming the files, not Gradio's copies."""
    if portrait is None:
        raise UserError("upload a portrait first (PNG or JPEG)")
    try:
        return read_portrait(portrait, studio.config.model.resolution, mask)
    except UserError as error:
        message = str(error)
        for path in (portrait, mask):
            if path is not None:
                message = message.replace(str(path), Path(path).name)
        raise UserError(message) from None


def preview_upload(studio: Studio, portrait: str | None, mask: str | None) -> tuple:
    """The uploaded portrait as the generator will see it, with what was done to it."""
    if portrait is None:
        return None, "Upload a portrait (PNG or JPEG), and optionally its mask."
    try:
        target = read_upload(studio, portrait, mask)
    except UserError as error:
        return None, problem(error)
    notes = "; ".join(target.notes) or "used as it is"
    return shown(_uint8(target.image)), f"{Path(portrait).name}: {notes}."


def _uint8(image: torch.Tensor) -> np.ndarray:
    from harness.visualize import to_uint8_image

    return to_uint8_image(image)


class Inverter:
    """Inversions from the page: the identity network and the embedder, built once."""

    def __init__(self, studio: Studio, arcface_onnx: str | Path | None):
        from harness.metrics.identity import choose_embedder

        self.studio = studio
        self.phi: IdentityFeature | None = identity_feature(studio, arcface_onnx)
        try:
            self.embedder = choose_embedder(studio.config, arcface_onnx, studio.device)
        except UserError:
            self.embedder = None  # real data without ArcFace: PSNR only

    def describe(self) -> str:
        """What the loss and the shown similarity use."""
        loss = ("pixels + identity (" + self.phi.name + ")" if self.phi is not None
                else "pixels only (no identity network: give --arcface-onnx on real data)")
        shown_id = (self.embedder.name if self.embedder is not None
                    else "none (give --arcface-onnx on real data)")
        return (f"The portrait is fitted as seen from the frontal camera. Loss: {loss}, plus the "
                f"mask's class ids when a mask is given. Identity similarity: {shown_id}.")

    def __call__(self, current: Current, portrait: str | None, mask: str | None,
                 steps: float | None, tune_steps: float | None, yaw: float, pitch: float,
                 progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
        """Invert the upload; its latents (and tuned generator) become the current portrait."""
        studio = self.studio
        try:
            settings = InversionSettings(steps=whole(steps, "steps", 1),
                                         tune_steps=whole(tune_steps, "tune steps", 0))
            target = read_upload(studio, portrait, mask)
        except UserError as error:
            return (gr.skip(),) * 2 + (problem(error), gr.skip(), gr.skip())

        def report(done: int, total: int, loss: float) -> None:
            progress((done, total), desc=f"loss {loss:.4f}")

        result = invert(studio, target, settings, self.phi, report, self.embedder)
        tuned = result.generator if result.generator is not studio.generator else None
        current = Current(result.w.detach(), f"inversion of {Path(portrait).name}", tuned)
        identity = ("" if result.identity is None
                    else f" · **identity similarity {result.identity:.3f}** ({result.embedder})")
        notes = f" Input: {'; '.join(target.notes)}." if target.notes else ""
        lines = (f"**PSNR {result.psnr:.2f} dB**{identity} · {len(result.losses)} steps in "
                 f"{result.seconds:.1f} s.{notes} The inversion is now the current portrait: "
                 "the other tabs work on it.")
        return (shown(_uint8(target.image)), shown(result.reconstruction), lines, current,
                status_line(studio, current, yaw, pitch))


class Exporter:
    """PNG and turntable GIF of the current portrait, each export in its own temporary folder."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.root = Path(tempfile.mkdtemp(prefix="harness-studio-"))
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def __call__(self, current: Current, yaw: float, pitch: float) -> tuple:
        view = view_of(self.studio, current)
        yaw_r, pitch_r = radians(yaw, pitch)
        folder = Path(tempfile.mkdtemp(dir=self.root))
        stem = re.sub(r"[^A-Za-z0-9_]+", "-", current.label).strip("-")  # a file name
        png = folder / f"{stem}-yaw{yaw:.0f}-pitch{pitch:.0f}.png"
        Image.fromarray(view.render(current.w, yaw_r, pitch_r).image).save(png)
        if self.studio.unsupported("turntable") is not None:
            return str(png), None, None
        gif = folder / f"{stem}-turntable.gif"
        frames = view.turntable(current.w, pitch=pitch_r)
        gif.write_bytes(gif_bytes(frames, scale=max(1, DISPLAY // frames[0].shape[0])))
        return str(png), str(gif), str(gif)


# ---- the page -----------------------------------------------------------------------------


def _note(reason: str | None) -> gr.Markdown:
    return gr.Markdown(f"⚠️ {reason}" if reason else "", visible=reason is not None)


def build_app(studio: Studio, arcface_onnx: str | Path | None = None) -> gr.Blocks:
    """The studio's page over `studio`; launch it with `launch`. A UserError for an unusable
    ArcFace file (before anything is served)."""
    inverter, exporter = Inverter(studio, arcface_onnx), Exporter(studio)
    lo_yaw, hi_yaw = (round(math.degrees(a), 1) for a in studio.poses.yaw)
    lo_pitch, hi_pitch = (round(math.degrees(a), 1) for a in studio.poses.pitch)
    yaw0, pitch0 = (round(math.degrees(a), 1) for a in studio.poses.frontal)
    start = Current(studio.latent(0), "seed 0")
    image0, mask0, depth0, status0 = sample_view(studio, start, yaw0, pitch0)
    no_pose, no_depth = studio.unsupported("pose"), studio.unsupported("depth")
    holistic = studio.unsupported("shape-edit")
    localised = getattr(studio.generator, "part_edit", "both")  # the evaluation's default edit
    loaded = studio.loaded
    with gr.Blocks(title=f"Studio: {studio.model}", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as demo:  # Gradio's cached pictures: kept 1 h
        gr.Markdown(f"## Studio: {studio.model}\nSnapshot `{loaded.path}` (iteration "
                    f"{loaded.iteration}), {studio.config.model.resolution} px, on "
                    f"{studio.device}")
        current = gr.State(start)
        status = gr.Markdown(status0, elem_id="status")

        with gr.Tab("Sample") as sample_tab:
            with gr.Row():
                seed = gr.Number(0, label="seed", precision=0, minimum=0, elem_id="seed")
                shuffle = gr.Button("Random", scale=0)
            pose_source = f"range: {studio.poses.source}" if no_pose is None else no_pose
            yaw = gr.Slider(lo_yaw, hi_yaw, yaw0, step=0.1, label="yaw (degrees)",
                            info=pose_source, interactive=no_pose is None, elem_id="yaw")
            pitch = gr.Slider(lo_pitch, hi_pitch, pitch0, step=0.1, label="pitch (degrees)",
                              info=pose_source, interactive=no_pose is None, elem_id="pitch")
            with gr.Row():
                image = picture("portrait", value=image0, elem_id="sample-image")
                mask = picture("mask", value=mask0)
                depth = picture("depth (near: bright)", value=depth0, visible=no_depth is None)
            _note(no_depth)
            gr.HTML(legend())

        with gr.Tab("Edit a part") as edit_tab:
            with gr.Row():
                part = gr.Dropdown(list(CLASS_NAMES), value="hair", label="part")
                what = gr.Radio(list(WHAT), value=localised, label="replace its")
                edit_seed = gr.Number(1, label="edit seed (the new codes' latent)", precision=0,
                                      minimum=0, elem_id="edit-seed")
            _note(holistic)
            with gr.Row():
                original = picture("original")
                edited = picture("edited", elem_id="edited")
                difference = picture("difference (x4)")
            edit_numbers = gr.Markdown(elem_id="edit-numbers")
            keep = gr.Button("Keep this edit (it becomes the current portrait)",
                             elem_id="keep-edit")

        with gr.Tab("Progressive") as progressive_tab:
            cannot = studio.unsupported("progressive")
            _note(cannot)
            count = gr.Slider(1, len(PROGRESSIVE_ORDER), len(PROGRESSIVE_ORDER), step=1,
                              label="parts switched on, back to front (the last: all parts)",
                              visible=cannot is None, elem_id="count")
            parts_on = gr.Markdown(visible=cannot is None, elem_id="parts-on")
            with gr.Row(visible=cannot is None):
                progressive_image = picture("portrait", elem_id="progressive-image")
                progressive_mask = picture("mask")

        with gr.Tab("Interpolate") as interpolate_tab:
            with gr.Row():
                seed_b = gr.Number(1, label="seed B", precision=0, minimum=0)
                blend_part = gr.Dropdown([WHOLE_FACE, *CLASS_NAMES], value=WHOLE_FACE,
                                         label="part")
                blend_what = gr.Radio(list(WHAT), value=localised, label="interpolate its")
            _note(holistic)
            t = gr.Slider(0, 1, 0.5, step=0.05, label="t (0: the current portrait, 1: seed B)")
            with gr.Row():
                blend_a = picture("current portrait")
                blend = picture("blend", elem_id="blend")
                blend_b = picture("seed B")
            blend_line = gr.Markdown()

        with gr.Tab("Real image"):
            gr.Markdown(inverter.describe())
            with gr.Row():
                upload = gr.File(label="portrait (PNG, JPEG)", type="filepath", height=140,
                                 elem_id="upload")
                upload_mask = gr.File(label="mask (optional: PNG of class ids 0..12)", height=140,
                                      type="filepath", elem_id="upload-mask")
            with gr.Row():
                steps = gr.Number(DEFAULT_STEPS, label="steps", precision=0, minimum=1,
                                  elem_id="steps")
                tune_steps = gr.Number(0, label="tune steps (pivotal tuning; 0: none)",
                                       precision=0, minimum=0)
                run_inversion = gr.Button("Invert", variant="primary", elem_id="invert")
            upload_line = gr.Markdown("Upload a portrait (PNG or JPEG), and optionally its mask.",
                                      elem_id="upload-line")
            with gr.Row():
                target, reconstruction = picture("input"), picture("reconstruction")
            result_line = gr.Markdown(elem_id="result")

        with gr.Tab("Export"):
            turntable = studio.unsupported("turntable")
            gr.Markdown("The current portrait at the Sample tab's pose as a PNG (the generator's "
                        "resolution) and a turntable GIF across the yaw range.")
            _note(turntable)
            export = gr.Button("Export", elem_id="export")
            with gr.Row():
                png_file = gr.File(label="PNG", interactive=False, elem_id="png-file")
                gif_file = gr.File(label="turntable GIF", interactive=False,
                                   visible=turntable is None, elem_id="gif-file")
                gif_preview = gr.Image(label="turntable", type="filepath", interactive=False,
                                       visible=turntable is None, elem_classes="studio-picture",
                                       elem_id="gif-preview")

        # ---- events: each tab renders when shown and when its controls change ----------------
        # Every event that writes a picture or the current portrait is queued in one group,
        # one at a time in the order it was triggered: two of them at once would race, and a
        # slow one (a tab's first render) could overwrite the answer to a later change.
        one_at_a_time = {"concurrency_id": "generator", "concurrency_limit": 1}
        sample_outputs = [image, mask, depth, status]
        pose = [yaw, pitch]
        seed.change(lambda *a: pick_seed(studio, *a), [seed, *pose], [current, *sample_outputs],
                    **one_at_a_time)
        shuffle.click(lambda: random.randrange(2**31), None, seed)
        for trigger in (yaw.change, pitch.change, sample_tab.select):
            trigger(lambda *a: sample_view(studio, *a), [current, *pose], sample_outputs,
                    **one_at_a_time)

        edit_in = [current, part, what, edit_seed, *pose]
        edit_out = [original, edited, difference, edit_numbers]
        for trigger in (part.change, what.change, edit_seed.change, edit_tab.select):
            trigger(lambda *a: edit_view(studio, *a), edit_in, edit_out, **one_at_a_time)
        keep.click(lambda *a: keep_edit(studio, *a), edit_in, [current, *sample_outputs],
                   **one_at_a_time
                   ).then(lambda *a: edit_view(studio, *a), edit_in, edit_out, **one_at_a_time)

        if cannot is None:
            progressive_in = [current, count, *pose]
            progressive_out = [progressive_image, progressive_mask, parts_on]
            for trigger in (count.change, progressive_tab.select):
                trigger(lambda *a: progressive_view(studio, *a), progressive_in, progressive_out,
                        **one_at_a_time)

        blend_in = [current, seed_b, blend_part, blend_what, t, *pose]
        blend_out = [blend_a, blend, blend_b, blend_line]
        for trigger in (seed_b.change, blend_part.change, blend_what.change, t.change,
                        interpolate_tab.select):
            trigger(lambda *a: interpolate_view(studio, *a), blend_in, blend_out,
                    **one_at_a_time)

        for trigger in (upload.change, upload_mask.change):
            trigger(lambda *a: preview_upload(studio, *a), [upload, upload_mask],
                    [target, upload_line], **one_at_a_time)

        run_inversion.click(inverter, [current, upload, upload_mask, steps, tune_steps, *pose],
                            [target, reconstruction, result_line, current, status],
                            **one_at_a_time
                            ).then(lambda *a: sample_view(studio, *a), [current, *pose],
                                   sample_outputs, **one_at_a_time)
        export.click(exporter, [current, *pose], [png_file, gif_file, gif_preview],
                     **one_at_a_time)
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, quiet: bool = False,
           block: bool = True) -> str:
    """Serve the page at host:port (blocking until Ctrl-C unless `block` is False); its URL.
    A UserError when the port is taken."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own startup requests
    url = f"http://{host}:{port}/"
    try:
        demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                    show_error=True, theme=THEME, css=CSS)
    except OSError as error:
        if "port" not in str(error):
            raise
        raise UserError(f"--port {port}: cannot serve on {host}:{port} (in use?); give another "
                        "--port") from None
    if not quiet:
        logger.info("studio: serving %s (Ctrl-C to stop)", url)
    if block:
        try:
            while demo.is_running:  # until Ctrl-C (run_main: "interrupted", exit code 130)
                time.sleep(0.2)
        finally:
            demo.close()
    return url
