"""The desktop app on a real X server (Xvfb, Qt's xcb platform), checked on the screen's pixels.

Runs ``docs/xcb_screenshot.py``, which starts Xvfb, runs the real ``camvideo live sample``
without ``QT_QPA_PLATFORM`` and reads the X screen with ImageMagick. Skipped where Xvfb,
ImageMagick, xdotool or Qt's xcb libraries are missing (the script exits 77 then).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs" / "xcb_screenshot.py"
_spec = importlib.util.spec_from_file_location("xcb_screenshot", SCRIPT)
xcb_screenshot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(xcb_screenshot)


def test_pixel_check_rejects_what_is_not_the_app() -> None:
    check = xcb_screenshot.check
    assert "black" in check(np.zeros((400, 600, 3), np.uint8))
    assert "blank" in check(np.full((400, 600, 3), 239, np.uint8))
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 255, (400, 600, 1), dtype=np.uint8), 3, axis=2)  # busy but colourless
    assert "no heatmap colours" in check(grey)
    # the JET table blended half and half over grey: warm and cool heat present
    ramp = cv2.applyColorMap(np.tile(np.arange(256, dtype=np.uint8), (400, 3))[:, :600], cv2.COLORMAP_JET)[..., ::-1]
    blended = (0.5 * ramp + 0.5 * grey).round().astype(np.uint8)
    assert check(blended) is None


@pytest.mark.slow
def test_real_xcb_window_shows_the_heatmap(tmp_path) -> None:
    shot = tmp_path / "window.png"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(shot), "--duration", "6"], capture_output=True,
                          text=True, timeout=400, check=False)  # fmt: skip
    if done.returncode == xcb_screenshot.SKIP:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: xcb window" in done.stdout
    image = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB)
    assert image.shape[0] > 300 and image.shape[1] > 600 and xcb_screenshot.check(image) is None
