"""The desktop app under Qt's offscreen platform: frames, controls, recording, closing.

Most tests use a tiny random model (fast on a shared 2-core CPU); the command-line test
at the end runs the real default model.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("PyQt6")
from live_helpers import CATS, NAMES, tiny_explainer  # noqa: E402
from PyQt6.QtCore import QSettings, Qt  # noqa: E402
from PyQt6.QtWidgets import QFormLayout  # noqa: E402

from camvideo.jobs import LiveOptions  # noqa: E402
from camvideo.sources import FileSource  # noqa: E402
from ui.window import AppOptions, MainWindow  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread for these tests (a shared machine), put back after each."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def open_window(qtbot, settings: QSettings, tmp_path: Path, **options) -> MainWindow:
    live = options.pop("live", {})
    app = AppOptions(source=options.pop("source", "sample"), spec=options.pop("spec", "sample"),
                     options=LiveOptions(**live), explainer=options.pop("explainer", None) or tiny_explainer(),
                     settings=settings, output_folder=tmp_path, **options)  # fmt: skip
    window = MainWindow(app)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def wait_frames(qtbot, window: MainWindow, count: int = 3, timeout: int = 60_000) -> None:
    start = window.meter.count
    qtbot.waitUntil(lambda: window.meter.count >= start + count, timeout=timeout)


def wait_result(qtbot, window: MainWindow, check, timeout: int = 20_000):
    qtbot.waitUntil(lambda: window.last_result is not None and check(window.last_result), timeout=timeout)
    return window.last_result


def camvideo_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("camvideo-"))


def test_window_shows_the_sample_with_its_heatmap(qtbot, settings, tmp_path: Path) -> None:
    window = open_window(qtbot, settings, tmp_path, live={"every": 2, "labels": False, "boxes": False})
    wait_frames(qtbot, window, 5)
    shown, original = window.view.frame, window.last_result.frame.image
    assert shown.shape == original.shape == (360, 640, 3)  # the bundled default sample (the narrated cat clip)
    # the heat shows: at alpha 0.5 the jet colours move every pixel a long way
    assert np.abs(shown.astype(int) - original).mean() > 20
    # and the widget shows that frame, scaled to fit with its aspect ratio
    rect = window.view.image_rect()
    assert abs(rect.width() / rect.height() - 16 / 9) < 0.02
    assert rect.width() == window.view.width() or rect.height() == window.view.height()
    grabbed = window.view.grab().toImage().convertToFormat(window.view.grab().toImage().Format.Format_RGB888)
    ptr = grabbed.constBits()
    ptr.setsize(grabbed.sizeInBytes())
    pixels = np.frombuffer(ptr, np.uint8).reshape(grabbed.height(), grabbed.bytesPerLine())[:, : 3 * grabbed.width()]
    pixels = pixels.reshape(grabbed.height(), grabbed.width(), 3)
    scale = grabbed.width() / window.view.width()  # device pixel ratio
    x0, y0 = round(rect.x() * scale), round(rect.y() * scale)
    inside = pixels[y0 : y0 + round(rect.height() * scale), x0 : x0 + round(rect.width() * scale)]
    expected = cv2.resize(window.view.frame, (inside.shape[1], inside.shape[0]), interpolation=cv2.INTER_AREA)
    assert np.abs(inside.astype(int) - expected).mean() < 25  # newer frames may have arrived meanwhile
    if y0 > 2:  # bars outside the picture are black
        assert pixels[: y0 - 1].max() == 0
    text = window.status_text()
    assert "fps" in text and "latency" in text and "dropped" in text and "cpu" in text


def test_controls_alpha_zero_and_a_fixed_class(qtbot, settings, tmp_path: Path) -> None:
    window = open_window(qtbot, settings, tmp_path, live={"every": 1, "labels": False, "boxes": False})
    wait_frames(qtbot, window, 2)
    window.controls.alpha_slider.setValue(0)
    result = wait_result(qtbot, window, lambda r: np.array_equal(r.image, r.frame.image))
    assert np.array_equal(window.view.frame, result.frame.image)  # the plain frame
    window.controls.alpha_slider.setValue(60)
    qtbot.keyClick(window, Qt.Key.Key_Space)  # pause: the same frame is redrawn for each change
    assert window.session.paused and window.controls.pause_button.text() == "Resume"
    top1 = wait_result(
        qtbot, window, lambda r: r.frame.extra.get("replay") or not np.array_equal(r.image, r.frame.image)
    )
    qtbot.wait(300)
    top1 = window.last_result
    other = next(i for i in range(len(NAMES)) if i != top1.class_index)
    window.controls.class_picker.set_target(str(other))
    fixed = wait_result(qtbot, window, lambda r: r.classes == [other])
    assert fixed.frame.index == top1.frame.index  # same frame, paused
    assert not np.array_equal(fixed.image, top1.image)  # another class, another map
    assert window.options.target == str(other)
    qtbot.keyClick(window, Qt.Key.Key_Period)  # one step forward
    wait_result(qtbot, window, lambda r: r.frame.index > fixed.frame.index and r.classes == [other])
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert not window.session.paused


def test_record_snapshot_and_close_cleanly(qtbot, settings, tmp_path: Path) -> None:
    baseline = {t.ident for t in threading.enumerate()}
    window = open_window(qtbot, settings, tmp_path, live={"every": 3})
    wait_frames(qtbot, window, 3)
    assert camvideo_threads()  # the session's threads run
    qtbot.keyClick(window, Qt.Key.Key_R)
    assert window.session.recording is not None and window.controls.record_button.isChecked()
    wait_frames(qtbot, window, 30)
    qtbot.keyClick(window, Qt.Key.Key_R)
    assert window.session.recording is None and not window.controls.record_button.isChecked()
    qtbot.keyClick(window, Qt.Key.Key_S)
    videos, pictures = list(tmp_path.glob("camvideo-*.mp4")), list(tmp_path.glob("camvideo-*.png"))
    assert len(videos) == 1 and len(pictures) == 1
    snap = cv2.imread(str(pictures[0]))
    assert snap.shape == (360, 640, 3)  # the default sample, full resolution
    with FileSource(videos[0]) as source:
        frames = list(source)
        assert source.info.has_audio  # the sample's soundtrack came along
    assert len(frames) >= 15 and frames[0].image.shape == (360, 640, 3)
    with av.open(str(videos[0])) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
    session = window.session
    start = time.monotonic()
    qtbot.keyClick(window, Qt.Key.Key_Q)
    assert not window.isVisible()
    # Q returns at once: the window gives the session's stop() 1 s, so only a quit that blocks
    # on a thread (a hang) would take long; 10 s leaves a loaded machine its slack
    assert time.monotonic() - start < 10.0
    # and every thread the session started ends (waited on, not timed: a busy machine may
    # need more than the window's 1 s to let the last frame through)
    qtbot.waitUntil(lambda: session.threads_alive() == [], timeout=30_000)
    qtbot.waitUntil(lambda: {t.ident for t in threading.enumerate()} <= baseline, timeout=30_000)
    assert camvideo_threads() == []


def test_settings_persist_and_the_command_line_wins(qtbot, settings, tmp_path: Path) -> None:
    window = open_window(qtbot, settings, tmp_path)
    window.controls.alpha_slider.setValue(30)
    window.controls.colormap_combo.setCurrentText("turbo")
    window.controls.smooth_spin.setValue(0.5)
    window.close()
    again = open_window(qtbot, settings, tmp_path)
    assert again.controls.alpha_slider.value() == 30 and again.controls.colormap_combo.currentText() == "turbo"
    assert again.options.alpha == 0.3 and again.options.smooth == 0.5
    again.close()
    given = open_window(qtbot, settings, tmp_path, live={"alpha": 0.8}, explicit=frozenset({"alpha"}))
    assert given.controls.alpha_slider.value() == 80 and given.controls.colormap_combo.currentText() == "turbo"
    given.close()


def test_a_source_that_fails_is_shown_not_fatal(qtbot, settings, tmp_path: Path) -> None:
    window = open_window(qtbot, settings, tmp_path, source=str(tmp_path / "gone.mp4"), spec=str(tmp_path / "gone.mp4"))
    qtbot.waitUntil(lambda: window.session.state == "failed", timeout=10_000)
    qtbot.waitUntil(lambda: "not a camera index" in window.view.message, timeout=2_000)
    window.open_source(str(CATS), spec=str(CATS))  # the user picks another: it plays
    wait_frames(qtbot, window, 3)
    assert window.last_result.frame.image.shape == (360, 640, 3)
    window.close()


def contrast_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """WCAG 2 contrast ratio of two sRGB colours (0..255): (L1 + 0.05) / (L2 + 0.05)."""

    def luminance(rgb: np.ndarray) -> float:
        c = rgb.astype(np.float64) / 255.0
        linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return float(linear @ np.array([0.2126, 0.7152, 0.0722]))

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def grab_rgb(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(widget.grab().toImage().Format.Format_RGB888)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    pixels = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())[:, : 3 * image.width()]
    return pixels.reshape(image.height(), image.width(), 3).copy()


def test_key_hints_are_readable_and_auto_says_what_it_picked(qtbot, settings, tmp_path: Path) -> None:
    """Issue 19: the key hints were pale grey on grey, and "Model every: auto" said nothing.
    The hints' text against their background has at least WCAG's 4.5:1 for body text
    (measured on the drawn pixels), and the interval control says what N is and shows
    auto's current choice."""
    window = open_window(qtbot, settings, tmp_path, live={"every": 0})
    pixels = grab_rgb(window.controls.key_hints).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    text = pixels[np.abs(pixels.astype(int) - background).sum(axis=1).argmax()]  # the farthest: the glyphs' core
    assert contrast_ratio(text, background) >= 4.5, (text, background)
    spin = window.controls.every_spin
    label = next(f.labelForField(spin) for f in window.controls.findChildren(QFormLayout) if f.labelForField(spin))
    assert label.text() == "Model on every Nth frame" and "auto" in spin.toolTip() and spin.text() == "auto"

    def shows_the_choice() -> bool:
        stats = window.session.stats()
        return stats.model_runs >= 2 and spin.text() == f"auto ({stats.every})"

    qtbot.waitUntil(shows_the_choice, timeout=60_000)  # the status timer (250 ms) updates it
    assert spin.value() == 0 and window.options.every == 0  # still auto: only its display changed
    window.close()


def test_the_window_shows_at_once_while_the_model_loads(qtbot, settings, tmp_path: Path, monkeypatch) -> None:
    """Issue 19: ``camvideo live`` showed nothing for seconds. The window now opens with a
    loading message while the session loads the model in its own thread (held here until
    the test lets it go), and says each slow step on the terminal."""
    import threading

    import camvideo.jobs.live

    release, lines = threading.Event(), []

    class SlowLoading:
        @staticmethod
        def from_options(options):
            assert release.wait(60)
            return tiny_explainer()

    monkeypatch.setattr(camvideo.jobs.live, "Explainer", SlowLoading)
    app = AppOptions(source="sample", spec="sample", options=LiveOptions(every=2), explainer=None, settings=settings,
                     output_folder=tmp_path, say=lines.append)  # fmt: skip
    window = MainWindow(app)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    assert window.isVisible() and window.meter.count == 0 and window.session.state == "opening"
    assert window.view.message.startswith("Loading the model efficientnet_lite0")
    assert lines == ["loading the model efficientnet_lite0 (the window is open) ..."]
    release.set()
    wait_frames(qtbot, window, 2)
    assert window.view.message == "" and len(lines) == 2 and lines[1].startswith("efficientnet_lite0 loaded")
    window.close()


@pytest.mark.slow
def test_camvideo_live_with_the_default_model(tmp_path: Path) -> None:
    """The real command, default model, offscreen: shows frames, records and snapshots."""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    snap, rec = tmp_path / "last.png", tmp_path / "run.mp4"
    proc = subprocess.run([sys.executable, "-m", "camvideo.cli", "live", str(CATS), "--every", "3", "--duration", "3",
                           "--snapshot", str(snap), "--record", str(rec)],
                          capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # one line for each slow start-up step, in order, the window open before the model loads
    steps = [line for line in proc.stdout.splitlines() if line.startswith("camvideo live: ")]
    firsts = [s.split(": ", 1)[1].split(" ")[0] for s in steps]
    assert firsts == ["starting", "opening", "opening", "loading", "efficientnet_lite0"], steps
    assert "the window" in steps[2] and "loaded, first frame shown" in steps[4]
    image = cv2.cvtColor(cv2.imread(str(snap)), cv2.COLOR_BGR2RGB)
    assert image.shape == (360, 640, 3)
    with FileSource(rec) as source:
        frames = list(source)
    # the frames shown were recorded, in order; how many a busy machine shows in 3 s is a
    # matter for the benchmarks, not for this test
    assert len(frames) >= 5 and all(a.time < b.time for a, b in zip(frames, frames[1:]))
    # a heatmap was drawn: the jet colours are far from the clip's grey background
    assert np.abs(frames[-1].image.astype(int) - image.mean()).mean() > 5
    assert (image[..., 0].astype(int) - image[..., 2]).std() > 20  # red and blue regions
