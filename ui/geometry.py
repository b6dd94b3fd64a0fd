"""The main window's size: the first one, and a saved one only where it can show the controls.

A size saved by an earlier run (on another screen, or shrunk by hand) can be too short for
the control column, which then hides half the controls behind a scroll bar. Such a size
is ignored, and the window opens at :func:`default_size`, the size that shows every control
on this screen.
"""

from __future__ import annotations

from PyQt6.QtCore import QByteArray, QSize
from PyQt6.QtWidgets import QMainWindow, QScrollArea

#: Room for the window frame and the desktop's panels around the screen's free area.
FRAME_ROOM = QSize(40, 60)


def controls_size(window: QMainWindow, panel: QScrollArea) -> QSize:
    """The size that shows every control without scrolling: the panel's column, the status
    bar, and a video at least 720 px tall and 1280 wide."""
    column = panel.widget().sizeHint().height() + 2 * panel.frameWidth()
    return QSize(1280, max(720, column + window.statusBar().sizeHint().height() + 4))


def default_size(window: QMainWindow, panel: QScrollArea) -> QSize:
    """The first window: :func:`controls_size` within the screen's free area less room for the
    window frame (on a 1600x1000 screen: 1280x880). A smaller screen gets the panel's scroll bar."""
    size = controls_size(window, panel)
    screen = window.screen()
    if screen is not None:
        free = screen.availableGeometry()
        size = QSize(min(size.width(), free.width() - FRAME_ROOM.width()),
                     min(size.height(), free.height() - FRAME_ROOM.height()))  # fmt: skip
    return size


def shows_the_controls(size: QSize, window: QMainWindow, panel: QScrollArea) -> bool:
    """Whether a window of ``size`` shows every control that this screen has room for: at
    least :func:`default_size`'s height, and the panel's width plus as much again for the video."""
    wanted = default_size(window, panel)
    return size.height() >= wanted.height() and size.width() >= min(wanted.width(), 2 * panel.minimumWidth())


def restore_window(window: QMainWindow, panel: QScrollArea, geometry: QByteArray | None) -> bool:
    """Restore a saved ``geometry``, unless it is missing, unreadable or cannot show the
    controls on this screen: then the window gets :func:`default_size`. True when restored."""
    if geometry is not None and window.restoreGeometry(geometry) and shows_the_controls(window.size(), window, panel):
        return True
    window.resize(default_size(window, panel))
    return False
