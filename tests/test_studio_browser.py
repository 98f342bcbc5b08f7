"""`python -m harness.studio`: the page in a real browser (Debian's Chromium driven by Playwright)
over a smoke-preset run, and the CLI's one-line errors.

The browser tests skip only when Playwright or /usr/bin/chromium is missing, and not in CI
(.ci/run installs both and sets HARNESS_REQUIRE_BROWSER=1, which turns the skip into a failure).
Screenshots of each step go to the test's temporary folder and, when STUDIO_SCREENSHOTS
names a folder, there too.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from snapshots import save_untrained_snapshot

from harness.cli import run_main
from harness.config import load_config
from harness.studio.__main__ import build_parser, main
from harness.training.loop import training_loop

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 30_000  # the longest wait for one change on the page (a loaded 2-core CPU)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, data_cache: Path) -> Path:
    """A trained smoke-preset 3D-SSGAN run (4 iterations, one thread)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("studio")
    config = load_config(None, "smoke", [f"data.cache_dir={data_cache}", "train.threads=1",
                                         "train.iterations=4", "train.checkpoint_every=4",
                                         "train.sample_every=4"])
    training_loop(config, root / "run", progress=False)
    return root / "run"


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


class Browser:
    """The studio served in-process and one Chromium page on it, with what the page did."""

    def __init__(self, page, url: str, shots: list[Path]):
        self.page, self.url, self.shots = page, url, shots
        self.requests: list[str] = []  # every URL the page asked for
        self.failed: list[str] = []  # failed requests, but the event stream the page closes
        self.errors: list[str] = []  # console errors and uncaught exceptions
        self.checked = 0  # how many of them an earlier test has seen
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.failed.append(request.url)
                if not ("/gradio_api/queue/data" in request.url
                        and request.failure == "net::ERR_ABORTED") else None)
        page.on("console", lambda message: message.type == "error"
                and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def new_errors(self) -> list[str]:
        """The console errors and uncaught exceptions since the last call (the first call: since
        the page was opened), so one page error fails the test whose steps caused it."""
        errors, self.checked = self.errors[self.checked:], len(self.errors)
        return errors

    def screenshot(self, name: str) -> None:
        for folder in self.shots:
            self.page.screenshot(path=str(folder / f"{name}.png"), full_page=True)

    def src(self, selector: str) -> str:
        """The src of the picture in `selector` (waiting for it to have one)."""
        picture = self.page.locator(f"{selector} img").first
        picture.wait_for(timeout=TIMEOUT_MS)
        return picture.get_attribute("src") or ""

    def wait_new_src(self, selector: str, old: str) -> str:
        self.page.wait_for_function(
            "([selector, old]) => { const img = document.querySelector(selector + ' img');"
            " return img && img.src && img.getAttribute('src') !== old; }",
            arg=[selector, old], timeout=TIMEOUT_MS)
        return self.src(selector)

    def wait_text(self, selector: str, pattern: str) -> str:
        """The text of `selector` once it matches the regular expression `pattern`."""
        self.page.wait_for_function(
            "([selector, pattern]) => { const node = document.querySelector(selector);"
            " return node && new RegExp(pattern).test(node.innerText); }",
            arg=[selector, pattern], timeout=TIMEOUT_MS)
        return self.page.locator(selector).inner_text()

    def bytes_of(self, src: str) -> bytes:
        return self.page.request.get(src).body()

    def set_number(self, selector: str, value: float) -> None:
        field = self.page.locator(f"{selector} input[type=number]").first
        field.fill(str(value))
        field.press("Enter")

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name).click()

    def foreign(self) -> list[str]:
        """Requests to any host but the studio's."""
        return [url for url in self.requests
                if not url.startswith(self.url) and not url.startswith(("data:", "blob:"))]


@pytest.fixture(scope="module")
def browser(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """The studio over `run_dir` on a free port, and Chromium on its page."""
    # CI sets HARNESS_REQUIRE_BROWSER=1: there a missing browser fails the test, never skips it
    missing = pytest.fail if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1" else pytest.skip
    if not CHROMIUM.is_file():
        missing(f"{CHROMIUM} not installed (apt-get install -y chromium; CI installs it)")
    try:
        from playwright import sync_api
    except ImportError:
        missing("playwright not installed (pip install -e '.[test]')")
    from harness.studio.app import build_app, launch
    from harness.studio.engine import load_studio

    torch.set_num_threads(1)
    shots = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("STUDIO_SCREENSHOTS"):
        shots.append(Path(os.environ["STUDIO_SCREENSHOTS"]))
        shots[-1].mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = _listing(run_dir)
    demo = build_app(load_studio(run_dir, device="cpu"))
    url = launch(demo, port=port, quiet=True, block=False)
    try:
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                  args=["--no-sandbox"])
            page = chromium.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            session = Browser(page, url, shots)
            page.goto(url, wait_until="load")  # never "networkidle": the queue's stream stays
            yield session
            chromium.close()
    finally:
        demo.close()
    assert _listing(run_dir) == before, "the studio changed files in the run directory"
    print("screenshots:", ", ".join(map(str, shots)))


def test_page_loads_offline_without_errors(browser: Browser) -> None:
    status = browser.wait_text("#status", r"seed 0")
    assert "yaw 90.0°" in status
    browser.src("#sample-image")
    browser.screenshot("1-sample")
    assert browser.new_errors() == []
    assert browser.foreign() == [] and browser.failed == []


def test_yaw_slider_turns_the_portrait(browser: Browser) -> None:
    browser.tab("Sample")
    old = browser.src("#sample-image")
    browser.set_number("#yaw", 70)
    new = browser.wait_new_src("#sample-image", old)
    assert browser.bytes_of(new) != browser.bytes_of(old)
    assert "yaw 70.0°" in browser.wait_text("#status", r"yaw 70\.0")
    browser.screenshot("2-yaw-70")
    assert browser.new_errors() == []


def test_part_edit_changes_the_portrait_and_shows_d_mean(browser: Browser) -> None:
    browser.tab("Edit a part")
    numbers = browser.wait_text("#edit-numbers", r"D_mean \d")
    old = browser.src("#edited")
    browser.set_number("#edit-seed", 7)
    new = browser.wait_new_src("#edited", old)
    assert browser.bytes_of(new) != browser.bytes_of(old)
    numbers = browser.wait_text("#edit-numbers", r"edit seed 7")
    time.sleep(2)  # the tab's first render, triggered before the seed, must not land after it
    numbers = browser.page.locator("#edit-numbers").inner_text()
    assert "edit seed 7" in numbers
    d_mean = float(re.search(r"D_mean (\d+\.\d+)", numbers).group(1))
    assert d_mean >= 0 and "masked D_mean" in numbers
    browser.screenshot("3-edit")
    browser.page.locator("#keep-edit").click()  # the edit becomes the current portrait
    status = browser.wait_text("#status", r"from seed 7")
    assert "seed 0, hair both from seed 7" in status
    assert "D_mean 0.0000" in browser.wait_text("#edit-numbers", r"D_mean 0\.0000")  # kept
    assert browser.new_errors() == []


def test_bad_uploads_are_one_line_on_the_page(browser: Browser, tmp_path: Path) -> None:
    browser.tab("Real image")
    fake = tmp_path / "not-a-portrait.png"
    fake.write_text("this is text, not a PNG")
    browser.page.locator("#upload input[type=file]").set_input_files(str(fake))
    line = browser.wait_text("#upload-line", r"not an image")
    assert line.startswith("⚠️ not-a-portrait.png: not an image") and "\n" not in line.strip()
    browser.screenshot("4-not-an-image")
    browser.page.locator("#upload").get_by_role("button", name="Clear").click()
    browser.wait_text("#upload-line", r"^Upload a portrait")
    portrait, mask = tmp_path / "grey.png", tmp_path / "mask.png"
    Image.new("RGB", (40, 30), (128, 128, 128)).save(portrait)
    Image.new("L", (40, 30), 200).save(mask)
    browser.page.locator("#upload input[type=file]").set_input_files(str(portrait))
    line = browser.wait_text("#upload-line", r"grey.png")
    assert "centre-cropped from 40x30" in line and "resized from 30x30" in line
    browser.page.locator("#upload-mask input[type=file]").set_input_files(str(mask))
    assert "mask.png: class id 200 in the mask" in browser.wait_text("#upload-line", r"class id")
    browser.screenshot("5-bad-mask")
    for field in ("#upload", "#upload-mask"):
        browser.page.locator(field).get_by_role("button", name="Clear").click()
    browser.wait_text("#upload-line", r"^Upload a portrait")
    assert browser.new_errors() == []


def test_inversion_of_an_upload_shows_psnr_and_becomes_current(browser: Browser, run_dir: Path,
                                                               tmp_path: Path) -> None:
    from harness.studio.engine import load_studio

    studio = load_studio(run_dir, device="cpu")
    portrait = tmp_path / "seed-5.png"
    Image.fromarray(studio.render(studio.latent(5), *studio.poses.frontal).image).save(portrait)
    browser.tab("Real image")
    browser.page.locator("#upload input[type=file]").set_input_files(str(portrait))
    assert "used as it is" in browser.wait_text("#upload-line", r"seed-5.png")
    browser.set_number("#steps", 10)
    sample = browser.page.locator("#sample-image img").get_attribute("src")
    browser.page.locator("#invert").click()
    result = browser.wait_text("#result", r"PSNR \d")
    assert float(re.search(r"PSNR (-?\d+\.\d+) dB", result).group(1)) > 0
    assert "identity similarity" in result and "10 steps" in result
    assert "inversion of seed-5.png" in browser.wait_text("#status", "inversion")
    browser.screenshot("6-inversion")
    browser.tab("Sample")
    browser.wait_new_src("#sample-image", sample)  # the inversion, now at the sliders' pose
    browser.screenshot("7-inversion-sample")
    assert browser.new_errors() == []
    assert browser.foreign() == [] and browser.failed == []


def test_progressive_interpolation_and_export_render(browser: Browser) -> None:
    browser.tab("Progressive")
    old = browser.src("#progressive-image")
    browser.set_number("#count", 3)
    browser.wait_new_src("#progressive-image", old)
    assert browser.wait_text("#parts-on", "parts on") == "parts on: background, face, neck"
    browser.screenshot("8-progressive")
    browser.tab("Interpolate")
    browser.src("#blend")
    browser.screenshot("9-interpolate")
    browser.tab("Export")
    browser.page.locator("#export").click()
    png = "".join(browser.wait_text("#png-file", r"\.png").split())  # name and suffix: 2 lines
    assert re.search(r"yaw\d+-pitch\d+\.png", png)
    assert "turntable.gif" in "".join(browser.wait_text("#gif-file", r"\.gif").split())
    assert browser.src("#gif-preview").endswith(".gif")
    browser.screenshot("10-export")
    assert browser.new_errors() == []


@pytest.mark.parametrize("name", ["ssgan2d", "ide3d"])
def test_what_a_model_cannot_do_is_said_on_the_page(name: str, tmp_path: Path,
                                                   data_cache: Path) -> None:
    """A 2D model (no camera, no depth, no turntable) and a holistic one (no progressive
    generation, shape edits change the whole face): the page says why, the rest works."""
    import gradio as gr

    from harness.studio import app
    from harness.studio.engine import load_studio

    torch.set_num_threads(1)
    config = load_config(None, "smoke", [f"model.name={name}", f"data.cache_dir={data_cache}"])
    save_untrained_snapshot(tmp_path / "checkpoints" / "network-snapshot-00000000.pt", config)
    studio = load_studio(tmp_path, device="cpu")
    demo = app.build_app(studio)
    said = [str(getattr(block, attribute, "")) for block in demo.blocks.values()
            for attribute in ("value", "info")]
    reasons = {op: studio.unsupported(op)
               for op in ("pose", "depth", "progressive", "turntable", "shape-edit")}
    assert any(reasons.values())
    for op, reason in reasons.items():
        assert reason is None or any(reason in text for text in said), op
    yaw = next(block for block in demo.blocks.values() if block.elem_id == "yaw")
    assert isinstance(yaw, gr.Slider) and yaw.interactive == (reasons["pose"] is None)
    current = app.Current(studio.latent(0), "seed 0")
    image, _, depth, status = app.sample_view(studio, current, 90, 90)
    assert Image.open(image).size == (app.DISPLAY, app.DISPLAY)
    assert (depth is None) == bool(reasons["depth"])
    assert ("no camera (2D model)" in status) == bool(reasons["pose"])
    assert ("yaw 90.0°" in status) == (reasons["pose"] is None)
    assert "D_mean" in app.edit_view(studio, current, "mouth", "shape", 3, 90, 90)[-1]
    png, gif, _ = app.Exporter(studio)(current, 90, 90)
    assert Path(png).is_file() and not Path(png).is_relative_to(tmp_path)
    assert (gif is None) == bool(reasons["turntable"])


def test_events_that_render_run_one_at_a_time_in_order(tmp_path: Path, data_cache: Path) -> None:
    """Two renders at once would race: a tab's first render, triggered before a seed change,
    could land after it and show the old seed's edit under the new seed (seen on a cpu-preset
    ssgan2d run). Every event that writes a picture or the current portrait shares one queue
    slot, so events answer in the order they were triggered."""
    import gradio as gr

    from harness.studio import app
    from harness.studio.engine import load_studio

    config = load_config(None, "smoke", [f"data.cache_dir={data_cache}"])
    save_untrained_snapshot(tmp_path / "checkpoints" / "network-snapshot-00000000.pt", config)
    demo = app.build_app(load_studio(tmp_path, device="cpu"))
    rendering = [fn for fn in demo.fns.values()
                 if any(isinstance(block, gr.Image | gr.State) for block in fn.outputs)]
    assert len(rendering) >= 10
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in rendering} == {("generator", 1)}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(main, build_parser(), argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_run_dir_is_one_line_and_exit_code_2(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli([str(tmp_path / "nonexistent")], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "run directory not found" in err and "Traceback" not in err


def test_bad_snapshot_is_one_line_and_exit_code_2(run_dir: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a snapshot")
    code, out, err = _cli([str(run_dir), "--snapshot", str(bad)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert str(bad) in err
