"""Widgets of the live window: the video view and the class picker."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PyQt6.QtCore import QRect, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QImage, QPainter, QPaintEvent
from PyQt6.QtWidgets import QButtonGroup, QLineEdit, QListWidget, QListWidgetItem, QRadioButton, QVBoxLayout, QWidget


def fit_rect(image: QSize, area: QRect) -> QRect:
    """The largest rectangle of ``image``'s aspect ratio centred in ``area``."""
    if image.width() <= 0 or image.height() <= 0 or area.width() <= 0 or area.height() <= 0:
        return QRect()
    scale = min(area.width() / image.width(), area.height() / image.height())
    width, height = max(1, round(image.width() * scale)), max(1, round(image.height() * scale))
    return QRect(area.x() + (area.width() - width) // 2, area.y() + (area.height() - height) // 2, width, height)


def to_qimage(image: np.ndarray) -> QImage:
    """A QImage that *shares* ``image``'s memory (uint8 RGB, C-contiguous).

    No copy: the caller keeps ``image`` alive as long as the QImage is used.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or not image.flags.c_contiguous:
        raise ValueError(f"expected a C-contiguous uint8 RGB image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    return QImage(image.data, width, height, 3 * width, QImage.Format.Format_RGB888)


class VideoView(QWidget):
    """Shows the newest frame scaled to fit, aspect ratio kept, on black.

    The QImage is built here, in the GUI thread, over the frame's own array, and that
    array is kept referenced for as long as the QImage is (``_array``). ``on_painted``
    is called after each paint that showed a new frame, with that frame's capture time
    (the end of its capture-to-display latency).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)  # we paint every pixel
        self.setMinimumSize(160, 120)
        self.on_painted: Callable[[float], None] | None = None
        self.message = ""
        self._array: np.ndarray | None = None
        self._image: QImage | None = None
        self._captured: float | None = None  # of a frame set but not painted yet

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(800, 450)

    @property
    def frame(self) -> np.ndarray | None:
        """The frame shown (uint8 RGB, not to be modified)."""
        return self._array

    def set_frame(self, image: np.ndarray, captured: float | None = None) -> None:
        array = np.ascontiguousarray(image)
        self._image = to_qimage(array)
        self._array = array  # owns the memory the QImage reads
        self._captured = captured
        self.update()

    def set_message(self, text: str) -> None:
        self.message = text
        self.update()

    def image_rect(self) -> QRect:
        """Where the frame is drawn, in widget pixels."""
        return fit_rect(self._image.size(), self.rect()) if self._image is not None else QRect()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(0, 0, 0))
        if self._image is not None:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            painter.drawImage(self.image_rect(), self._image)
        if self.message:
            painter.setPen(QColor(235, 235, 235))
            painter.drawText(self.rect().adjusted(12, 12, -12, -12), Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignLeft
                             | Qt.TextFlag.TextWordWrap, self.message)  # fmt: skip
        painter.end()
        captured, self._captured = self._captured, None
        if captured is not None and self.on_painted is not None:
            self.on_painted(captured)


class ClassPicker(QWidget):
    """Target class: top-1, or one class picked from a searchable list.

    Emits :attr:`targetChanged` with ``"top1"`` or the class index as a string.
    """

    targetChanged = pyqtSignal(str)  # noqa: N815 - Qt naming

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.top1 = QRadioButton("Top-1 class of each frame")
        self.fixed = QRadioButton("This class:")
        group = QButtonGroup(self)
        group.addButton(self.top1)
        group.addButton(self.fixed)
        self.top1.setChecked(True)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search classes…")
        self.search.setClearButtonEnabled(True)
        self.list = QListWidget()
        self.list.setMinimumHeight(90)
        self.list.setMaximumHeight(150)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.top1, self.fixed, self.search, self.list):
            layout.addWidget(widget)
        self.top1.toggled.connect(self._emit)
        self.search.textChanged.connect(self._filter)
        self.list.currentItemChanged.connect(self._picked)
        self._names: list[str] = []

    def set_classes(self, names: Sequence[str]) -> None:
        """Fill the list (keeps the current choice when that index still exists)."""
        if list(names) == self._names:
            return
        current = self.target()
        self._names = list(names)
        self.list.blockSignals(True)
        self.list.clear()
        for index, name in enumerate(self._names):
            item = QListWidgetItem(f"{name}  ({index})")
            item.setData(Qt.ItemDataRole.UserRole, index)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self._filter(self.search.text())
        self.set_target(current, emit=False)

    def target(self) -> str:
        item = self.list.currentItem()
        if self.fixed.isChecked() and item is not None:
            return str(item.data(Qt.ItemDataRole.UserRole))
        return "top1"

    def set_target(self, target: str, emit: bool = True) -> None:
        """Select ``"top1"`` or a class index (as text); unknown values mean top-1."""
        self.blockSignals(not emit)
        try:
            text = str(target).strip()
            if text.isdigit() and int(text) < self.list.count():
                self.list.setCurrentRow(int(text))
                self.fixed.setChecked(True)
                self.list.scrollToItem(self.list.currentItem())
            else:
                self.top1.setChecked(True)
        finally:
            self.blockSignals(False)

    def _filter(self, text: str) -> None:
        words = text.lower().split()
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setHidden(not all(word in item.text().lower() for word in words))

    def _picked(self, item: QListWidgetItem | None, _previous: QListWidgetItem | None = None) -> None:
        if item is not None and not self.fixed.isChecked():
            self.fixed.setChecked(True)  # emits through toggled
        else:
            self._emit()

    def _emit(self, *_: object) -> None:
        self.targetChanged.emit(self.target())
