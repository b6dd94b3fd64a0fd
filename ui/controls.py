"""The control panel of the live window: source, model, target class, overlay, playback."""

from __future__ import annotations

import dataclasses

from PyQt6.QtCore import QEvent, QObject, Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)  # fmt: skip

from camvideo.jobs import LiveOptions
from camvideo.options import COLORMAP_NAMES, METHOD_CHOICES

from .widgets import ClassPicker

AUTO_EVERY = "auto"  # the model interval's control at 0


class ControlPanel(QScrollArea):
    """Every control of the window, in a scrollable column.

    Changes to the options controls emit :attr:`changed` (read them with
    :meth:`read_options`); the source and playback controls are wired by the window.
    """

    changed = pyqtSignal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        column_widget = QWidget()
        column = QVBoxLayout(column_widget)
        column.addWidget(self._source_box())
        column.addWidget(self._model_box())
        column.addWidget(self._target_box())
        column.addWidget(self._overlay_box())
        column.addWidget(self._actions_box())
        column.addStretch(1)
        self.setWidget(column_widget)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setMinimumWidth(300)
        # The wheel scrolls the panel wherever the pointer is, except over the class list:
        # combo boxes, sliders and spin boxes would otherwise take it and change a setting.
        listing = self.class_picker.list  # with its viewport and scroll bars (it forwards the wheel to them)
        self._wheel_own = {listing, *listing.findChildren(QWidget)}
        for child in column_widget.findChildren(QWidget):
            if child not in self._wheel_own:
                child.installEventFilter(self)
        for combo in (self.model_combo, self.method_combo, self.colormap_combo):
            combo.currentIndexChanged.connect(self.changed)
        for check in (self.boxes_check, self.labels_check, self.side_check):
            check.toggled.connect(self.changed)
        self.alpha_slider.valueChanged.connect(self.changed)
        self.smooth_spin.valueChanged.connect(self.changed)
        self.every_spin.valueChanged.connect(self.changed)
        self.class_picker.targetChanged.connect(self.changed)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """Wheel events over the panel's controls scroll the panel (see __init__)."""
        if event.type() == QEvent.Type.Wheel and watched not in self._wheel_own:
            self.verticalScrollBar().event(event)  # the scroll bar reads only the wheel's angle
            return True
        return super().eventFilter(watched, event)

    def _source_box(self) -> QGroupBox:
        box = QGroupBox("Source")
        form = QVBoxLayout(box)
        self.source_combo = QComboBox()
        self.source_combo.setToolTip("Cameras, the bundled sample and recent files and URLs")
        self.open_file_button = QPushButton("Open file…")
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("rtsp://… http://… udp://…")
        self.open_url_button = QPushButton("Open URL")
        row = QHBoxLayout()
        row.addWidget(self.url_edit, 1)
        row.addWidget(self.open_url_button)
        form.addWidget(self.source_combo)
        form.addWidget(self.open_file_button)
        form.addLayout(row)
        return box

    def _model_box(self) -> QGroupBox:
        from camvideo.engine import available_models

        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        for name, offline, note in available_models():
            self.model_combo.addItem(name, name)
            item = self.model_combo.model().item(self.model_combo.count() - 1)
            item.setToolTip(note)
            item.setEnabled(offline)
        self.method_combo = QComboBox()
        self.method_combo.addItems(METHOD_CHOICES)
        self.every_spin = QSpinBox()
        self.every_spin.setRange(0, 60)
        self.every_spin.setSpecialValueText(AUTO_EVERY)  # 0: picked from the measured times
        self.every_spin.setToolTip(
            "N, how often the model runs. 1: on every frame (each frame gets its own map; the video runs at "
            "the model's speed). N: on every Nth frame; the frames between are shown at once with the last "
            "map, so the video keeps the camera's rate. auto: 1 when the model keeps up with the camera, "
            "else the smallest N that keeps the camera's rate; the number in brackets is its choice now."
        )
        form.addRow("Model", self.model_combo)
        form.addRow("Method", self.method_combo)
        form.addRow("Model on every Nth frame", self.every_spin)
        return box

    def _target_box(self) -> QGroupBox:
        box = QGroupBox("Target class")
        layout = QVBoxLayout(box)
        self.class_picker = ClassPicker()
        layout.addWidget(self.class_picker)
        return box

    def _overlay_box(self) -> QGroupBox:
        box = QGroupBox("Overlay")
        form = QFormLayout(box)
        self.alpha_slider = QSlider(Qt.Orientation.Horizontal)
        self.alpha_slider.setRange(0, 100)
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(COLORMAP_NAMES)
        self.boxes_check = QCheckBox("Box")
        self.labels_check = QCheckBox("Label")
        self.side_check = QCheckBox("Original | overlay")
        self.smooth_spin = QDoubleSpinBox()
        self.smooth_spin.setRange(0.0, 5.0)
        self.smooth_spin.setSingleStep(0.05)
        self.smooth_spin.setSuffix(" s")
        self.smooth_spin.setToolTip("Temporal smoothing time constant; 0 turns it off")
        checks = QHBoxLayout()
        for check in (self.boxes_check, self.labels_check):
            checks.addWidget(check)
        form.addRow("Opacity", self.alpha_slider)
        form.addRow("Colormap", self.colormap_combo)
        form.addRow(checks)
        form.addRow(self.side_check)
        form.addRow("Smoothing", self.smooth_spin)
        return box

    def _actions_box(self) -> QGroupBox:
        box = QGroupBox("Playback")
        column = QVBoxLayout(box)
        grid = QGridLayout()
        column.addLayout(grid)
        keys = QLabel("Keys: Space pause · . step · R record · S snapshot · F full screen · Q quit")
        keys.setWordWrap(True)  # the window's text colour: greyed (disabled) text was pale grey on grey
        self.key_hints = keys
        column.addWidget(keys)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Space")
        self.step_button = QPushButton("Step")
        self.step_button.setToolTip(". or →: one frame, while paused")
        self.record_button = QPushButton("Record")
        self.record_button.setCheckable(True)
        self.record_button.setToolTip("R: record the overlay to MP4")
        self.snapshot_button = QPushButton("Snapshot")
        self.snapshot_button.setToolTip("S: save the frame shown as PNG")
        for i, button in enumerate((self.pause_button, self.step_button, self.record_button, self.snapshot_button)):
            grid.addWidget(button, i // 2, i % 2)
        return box

    def show_every_choice(self, every: int | None) -> None:
        """Show what ``auto`` picked (``every``), or plain ``auto`` before it has picked (None)."""
        text = AUTO_EVERY if every is None else f"{AUTO_EVERY} ({every})"
        if self.every_spin.specialValueText() != text:
            self.every_spin.setSpecialValueText(text)

    def show_options(self, o: LiveOptions) -> None:
        """Show ``o`` without emitting :attr:`changed`."""
        widgets = (self.model_combo, self.method_combo, self.colormap_combo, self.alpha_slider, self.boxes_check,
                   self.labels_check, self.side_check, self.smooth_spin, self.every_spin, self.class_picker)  # fmt: skip
        for widget in widgets:
            widget.blockSignals(True)
        try:
            index = self.model_combo.findData(o.model)
            if index < 0:
                self.model_combo.addItem(o.model, o.model)
                index = self.model_combo.count() - 1
            self.model_combo.setCurrentIndex(index)
            self.method_combo.setCurrentText(o.method)
            self.colormap_combo.setCurrentText(o.colormap)
            self.alpha_slider.setValue(round(o.alpha * 100))
            self.boxes_check.setChecked(o.boxes)
            self.labels_check.setChecked(o.labels)
            self.side_check.setChecked(o.side_by_side)
            self.smooth_spin.setValue(o.smooth)
            self.every_spin.setValue(o.every)
            self.class_picker.set_target(o.target, emit=False)
        finally:
            for widget in widgets:
                widget.blockSignals(False)

    def read_options(self, base: LiveOptions) -> LiveOptions:
        """``base`` with what the controls show."""
        return dataclasses.replace(
            base,
            model=self.model_combo.currentData() or base.model,
            method=self.method_combo.currentText(),
            colormap=self.colormap_combo.currentText(),
            alpha=self.alpha_slider.value() / 100,
            boxes=self.boxes_check.isChecked(),
            labels=self.labels_check.isChecked(),
            side_by_side=self.side_check.isChecked(),
            smooth=round(self.smooth_spin.value(), 3),
            every=self.every_spin.value(),
            target=self.class_picker.target(),
        )
