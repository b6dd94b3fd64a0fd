"""Screenshot of the real window for the README: ``xvfb-run -s "-screen 0 1360x900x24" python docs/make_screenshot.py``.

Opens the app as ``camvideo live`` does (bundled sample, default model, model on every
3rd frame), waits until the heatmap has been showing for a few seconds, grabs the
window from the X screen and writes ``docs/screenshot.png``.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PyQt6.QtCore import QSettings, QTimer  # noqa: E402

from camvideo import Explainer  # noqa: E402
from camvideo.jobs import LiveOptions  # noqa: E402
from camvideo.sources import open_live_source  # noqa: E402
from ui.app import application  # noqa: E402
from ui.window import AppOptions, MainWindow  # noqa: E402


def main(out: Path = ROOT / "docs" / "screenshot.png", seconds: float = 6.0) -> int:
    app = application()
    options = LiveOptions(every=3)
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(AppOptions(source=open_live_source("sample"), spec="sample", options=options,
                                       explainer=Explainer(device="cpu"), settings=settings,
                                       explicit=frozenset(f.name for f in dataclasses.fields(LiveOptions))))  # fmt: skip
        window.resize(1340, 850)
        window.move(10, 10)
        window.show()
        shots: list[bool] = []

        def shoot() -> None:
            if window.meter.count < 30:  # not warmed up yet: try again shortly
                QTimer.singleShot(500, shoot)
                return
            pixmap = app.primaryScreen().grabWindow(0, window.x(), window.y(), window.frameGeometry().width(),
                                                     window.frameGeometry().height())  # fmt: skip
            shots.append(pixmap.save(str(out), "PNG"))
            window.close()

        QTimer.singleShot(round(seconds * 1000), shoot)
        app.exec()
    print(f"{out}: {'saved' if shots and shots[0] else 'NOT saved'}")
    return 0 if shots and shots[0] else 1


if __name__ == "__main__":
    sys.exit(main())
