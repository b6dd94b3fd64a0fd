"""The application: QApplication set-up, the window, the event loop, the exit code.

Started by ``camvideo live`` (:func:`camvideo.cli.live.run_live`), which checks every option
before Qt is imported; this package never imports the command line.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication

from .window import AppOptions, MainWindow

ORGANIZATION = "camvideo"
APPLICATION = "camvideo-live"


def application(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication (made once), named so QSettings finds camvideo's settings."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv) if argv is not None else [sys.argv[0]])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("camvideo live")
    return app  # type: ignore[return-value]


def run(options: AppOptions) -> int:
    """Show the window until it is closed (or ``options.duration`` has passed); the exit code."""
    app = application()
    window = MainWindow(options)
    window.show()
    # Ctrl-C in the terminal closes the window properly (recording finished, camera
    # released). Python only runs signal handlers between bytecodes, so a timer lets
    # the interpreter in a few times a second while Qt's loop runs.
    previous = signal.signal(signal.SIGINT, lambda *_: window.close())
    ticker = QTimer()
    ticker.timeout.connect(lambda: None)
    ticker.start(200)
    try:
        app.exec()
    finally:
        ticker.stop()
        signal.signal(signal.SIGINT, previous)
        window.close()  # an exception in the loop: still stop the threads
    return window.exit_code
