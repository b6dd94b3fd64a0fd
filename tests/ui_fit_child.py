"""Child process of tests/test_ui_fit.py: the live window on an offscreen screen of a given
size (QT_QPA_PLATFORM=offscreen:configfile=...), measured and wheeled; prints one JSON line.

``--saved WxH``: the settings hold a window size saved by an earlier run (a plain window
of that size), as a user's would."""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from live_helpers import tiny_explainer  # noqa: E402
from PyQt6.QtCore import QPoint, QPointF, QSettings, Qt  # noqa: E402
from PyQt6.QtGui import QWheelEvent  # noqa: E402
from PyQt6.QtWidgets import QApplication, QGroupBox, QMainWindow  # noqa: E402

from camvideo.jobs import LiveOptions  # noqa: E402
from ui.app import application  # noqa: E402
from ui.window import AppOptions, MainWindow  # noqa: E402


def wait(condition, seconds: float = 60.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return False


def wheel(widget, down: bool = True) -> None:
    """One notch of the mouse wheel over the middle of ``widget``."""
    local = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(local, QPointF(widget.mapToGlobal(local.toPoint())), QPoint(0, 0), QPoint(0, -120 if down else 120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
    QApplication.sendEvent(widget, event)
    QApplication.processEvents()


def main() -> None:
    app = application()  # the QApplication, before any widget (kept: a collected one takes Qt down)
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        if "--saved" in sys.argv:
            width, height = (int(v) for v in sys.argv[sys.argv.index("--saved") + 1].split("x"))
            earlier = QMainWindow()
            earlier.resize(width, height)
            settings.setValue("window/geometry", earlier.saveGeometry())
            earlier.deleteLater()
        window = MainWindow(AppOptions(source="sample", spec="sample", options=LiveOptions(every=2),
                                       explainer=tiny_explainer(), settings=settings, output_folder=Path(tmp)))  # fmt: skip
        window.show()
        assert wait(lambda: window.meter.count >= 1), "no frame shown"
        panel = window.controls
        viewport = panel.viewport().rect()
        hidden = [box.title() for box in panel.widget().findChildren(QGroupBox)
                  if not viewport.contains(box.geometry().translated(0, -panel.verticalScrollBar().value()))]  # fmt: skip
        screen = window.screen().availableGeometry()
        report = {"window": [window.frameGeometry().width(), window.frameGeometry().height()],
                  "screen": [screen.width(), screen.height()], "scroll_max": panel.verticalScrollBar().maximum(),
                  "hidden": hidden}  # fmt: skip
        # A short window: the panel must scroll now; where does the wheel go?
        window.resize(window.width(), 420)
        wait(lambda: panel.verticalScrollBar().maximum() > 0, 5)
        bar, combo = panel.verticalScrollBar(), panel.colormap_combo
        before, index = bar.value(), combo.currentIndex()
        wheel(combo)
        report["over_combo"] = {"panel_moved": bar.value() - before, "combo_changed": combo.currentIndex() != index}
        slider, alpha = panel.alpha_slider, panel.alpha_slider.value()
        before = bar.value()
        wheel(slider)
        report["over_slider"] = {"panel_moved": bar.value() - before, "slider_changed": slider.value() != alpha}
        panel.class_picker.set_classes([f"class {i}" for i in range(1000)])  # a list long enough to scroll
        app.processEvents()
        listing = panel.class_picker.list
        wait(lambda: listing.verticalScrollBar().maximum() > 0, 5)  # its items are laid out on a timer
        list_bar, before, list_before = listing.verticalScrollBar(), bar.value(), listing.verticalScrollBar().value()
        wheel(listing.viewport())
        report["over_list"] = {"panel_moved": bar.value() - before, "list_moved": list_bar.value() - list_before}
        window.close()
        wait(lambda: not [t for t in threading.enumerate() if t.name.startswith("camvideo-")], 20)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
