"""`camvideo serve` in a real browser: headless Chromium (Debian's package) driven by Playwright.

The page loads, its canvas fills with heat colours and follows the page's colormap control;
with `serve browser`, Chromium's fake camera (a y4m clip) goes up the socket and comes back
annotated. Skips, saying why, where chromium or Playwright is missing.
"""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from live_helpers import CATS
from serve_helpers import WAIT, blue_over_red, closest_source_distance, served, source_frames

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]  # fmt: skip

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is missing: pip install playwright")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium); Playwright drives it"
)


def write_y4m(path: Path, frames: np.ndarray, fps: int = 30) -> Path:
    """RGB frames as a YUV4MPEG2 file (4:2:0), the format Chromium's fake camera reads."""
    height, width = frames.shape[1:3]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y, then U, then V planes
    return path


def canvas_pixels(page) -> np.ndarray:  # noqa: ANN001
    """The canvas as RGB, read back as a PNG (lossless)."""
    url = page.evaluate("document.getElementById('view').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def wait_for_frames(page, more: int = 3) -> None:  # noqa: ANN001
    """``more`` frames drawn from now on."""
    start = page.evaluate("window.camvideo.frames")
    page.wait_for_function(f"window.camvideo.frames >= {start + more}", timeout=WAIT * 1000)


def launch(p, *extra: str):  # noqa: ANN001, ANN202
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS + list(extra))


def test_the_page_shows_heat_and_follows_its_colormap_control() -> None:
    frames = source_frames(CATS)
    with served() as (server, base), playwright_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 700})
            page.goto(base)
            wait_for_frames(page)
            image = canvas_pixels(page)
            assert image.shape == (360, 640, 3)
            assert closest_source_distance(image, frames) > 15  # heat over the clip (jet, alpha 0.5)
            page.wait_for_function("document.getElementById('status').textContent.includes('fps')", timeout=WAIT * 1000)
            assert "model" in page.inner_text("#status")
            page.evaluate(
                "(() => { const a = document.getElementById('alpha'); a.value = 1; a.dispatchEvent(new Event('input')); })()"
            )
            page.select_option("#colormap", "hot")
            page.wait_for_function("window.camvideo.options.colormap === 'hot' && window.camvideo.options.alpha === 1")
            wait_for_frames(page, 5)
            assert blue_over_red(canvas_pixels(page)) < 0.01  # 'hot': never more blue than red
            page.select_option("#colormap", "viridis")
            page.wait_for_function("window.camvideo.options.colormap === 'viridis'")
            wait_for_frames(page, 5)
            assert blue_over_red(canvas_pixels(page)) > 0.5  # 'viridis': purple, blue, teal
            assert server.session.options.colormap == "viridis"
        finally:
            browser.close()


def test_the_browsers_camera_goes_up_and_comes_back_annotated(tmp_path: Path) -> None:
    frames = source_frames(CATS)
    clip = write_y4m(tmp_path / "clip.y4m", frames[:60])
    with served(browser=True) as (server, base), playwright_api.sync_playwright() as p:
        browser = launch(p, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                         f"--use-file-for-fake-video-capture={clip}")  # fmt: skip
        try:
            page = browser.new_page()
            page.goto(base)
            page.wait_for_function("window.camvideo.uploads >= 3", timeout=WAIT * 1000)
            wait_for_frames(page, 3)
            assert server.browser is not None and server.browser.pushed >= 3
            assert page.evaluate("window.camvideo.lastStamp") > 0  # a frame of ours, with its own stamp
            now = time.time() * 1000
            assert 0 <= now - page.evaluate("window.camvideo.lastStamp") < WAIT * 1000
            image = canvas_pixels(page)
            assert image.shape == (360, 640, 3)  # the fake camera's size
            assert closest_source_distance(image, frames) > 15  # annotated: heat over the clip
        finally:
            browser.close()


def test_with_a_token_the_page_loads_its_assets_and_draws_frames() -> None:
    """The token in the URL sets a cookie; the page's relative /static/ URLs and its socket use it."""
    frames = source_frames(CATS)
    failed: list[str] = []
    with served(token="s3cret") as (server, base), playwright_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(base + "?token=s3cret")
            wait_for_frames(page)
            assert closest_source_distance(canvas_pixels(page), frames) > 15  # heat over the clip
            assert page.evaluate("getComputedStyle(document.body).margin") != "8px"  # style.css applied
            assert failed == []
        finally:
            browser.close()


def test_the_pages_fps_figure_ages_out_while_paused() -> None:
    with served() as (server, base), playwright_api.sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.goto(base)
            wait_for_frames(page, 5)
            page.wait_for_function("/^[1-9][0-9.]* fps/.test(document.getElementById('status').textContent)",
                                   timeout=WAIT * 1000)  # fmt: skip
            page.click("#pause")
            # no frames while paused: the 2 s window empties and the figure falls to 0
            page.wait_for_function("document.getElementById('status').textContent.startsWith('0.0 fps')",
                                   timeout=WAIT * 1000)  # fmt: skip
            assert server.session.paused
        finally:
            browser.close()
