"""The main window: the video, its controls, a status bar, shortcuts and saved settings.

Frames come from the session's display slot (a :class:`~camvideo.pipeline.DropOldest`). Its doorbell
posts one Qt event when the slot fills; the handler takes the newest frame, so a slow
GUI never works through a queue of old frames. Closing the window finishes a
recording, saves ``--snapshot``, and stops every session thread (camera released).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PyQt6.QtCore import QCoreApplication, QEvent, QSettings, QSize, Qt, QTimer
from PyQt6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PyQt6.QtWidgets import QFileDialog, QLabel, QMainWindow, QSplitter

from camvideo.engine import Explainer
from camvideo.errors import CamvideoError
from camvideo.jobs import LatencyMeter, LiveOptions, LiveSession
from camvideo.sources import LiveSource, describe_spec, list_cameras
from camvideo.types import FrameResult

from .capture import CaptureMixin
from .controls import ControlPanel
from .geometry import default_size, restore_window
from .widgets import VideoView

FRAME_EVENT = QEvent.Type(QEvent.registerEventType())
_SAVED = ("model", "method", "target", "alpha", "colormap", "boxes", "labels", "smooth", "side_by_side", "every")
_RECENT = 8


@dataclass
class AppOptions:
    """What ``camvideo live`` hands the window (checked before Qt was imported; the model
    loads in the window's session unless ``explainer`` is given)."""

    source: LiveSource | str | None = None  # opened source, or a spec; None: first camera or sample
    spec: str | None = None  # how to open the source again (a model change restarts it)
    options: LiveOptions = LiveOptions()
    explainer: Explainer | None = None  # loaded for options.model_key(); None: the session loads it
    loop: bool = True
    duration: float | None = None  # seconds of frames shown before quitting
    snapshot: Path | None = None  # PNG of the last frame shown, saved on exit
    record: Path | None = None  # MP4 recorded from the first frame
    explicit: frozenset[str] = frozenset()  # LiveOptions fields given on the command line
    settings: QSettings | None = None  # None: the user's camvideo settings
    output_folder: Path | None = None  # snapshots and recordings (None: Pictures / Videos)
    errors: list[str] = field(default_factory=list)  # what went wrong, for the exit message
    say: Callable[[str], None] | None = None  # one line for each slow start-up step (the terminal)


class MainWindow(CaptureMixin, QMainWindow):
    def __init__(self, app: AppOptions) -> None:
        super().__init__()
        self.app_options = app
        self.settings = app.settings if app.settings is not None else QSettings()
        self.options = self._restore_options(app.options, app.explicit)
        self.meter = LatencyMeter()
        self.session: LiveSession | None = None
        self.last_result: FrameResult | None = None
        self.exit_code = 0
        self._explainer = (
            app.explainer if app.explainer is not None and app.options.model_key() == self.options.model_key() else None
        )
        self._spec: str | None = app.spec
        self._shown_any = False
        self._closing = False
        self._give_up_at: float | None = None  # unattended (--duration) and still no frame by then: quit
        self._status_note = ""
        self._loading_since: float | None = None  # a session loading its model: since when
        self.setWindowTitle("camvideo live")
        self._build()
        self._shortcuts()
        self._restore_window()
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(250)
        self._status_timer.timeout.connect(self._refresh_status)
        self._status_timer.start()
        self.open_source(app.source if app.source is not None else app.spec, spec=app.spec)

    # -- building ------------------------------------------------------------------------------
    def _build(self) -> None:
        self.view = VideoView()
        self.view.on_painted = self._painted
        self.controls = ControlPanel()
        self.panel = self.controls  # hidden in full screen
        if self._explainer is not None:
            self.controls.class_picker.set_classes(self._explainer.class_names)
        self._fill_sources()
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(self.panel)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        self.setCentralWidget(self.splitter)
        self.status_label = QLabel()
        self.statusBar().addPermanentWidget(self.status_label, 1)
        self.controls.show_options(self.options)
        self._connect()

    def _connect(self) -> None:
        self.controls.changed.connect(self._controls_changed)
        self.controls.source_combo.activated.connect(self._source_picked)
        self.controls.open_file_button.clicked.connect(self._open_file_dialog)
        self.controls.open_url_button.clicked.connect(self._open_url)
        self.controls.url_edit.returnPressed.connect(self._open_url)
        self.controls.pause_button.clicked.connect(self.toggle_pause)
        self.controls.step_button.clicked.connect(self.step)
        self.controls.record_button.clicked.connect(self._record_clicked)
        self.controls.snapshot_button.clicked.connect(lambda: self.save_snapshot())

    def _shortcuts(self) -> None:
        keys = {
            Qt.Key.Key_Space: self.toggle_pause,
            Qt.Key.Key_R: self.toggle_recording,
            Qt.Key.Key_S: self.save_snapshot,
            Qt.Key.Key_F: self.toggle_fullscreen,
            Qt.Key.Key_Q: self.close,
            Qt.Key.Key_Escape: self._escape,
            Qt.Key.Key_Period: self.step,
            Qt.Key.Key_Right: self.step,
        }
        for key, action in keys.items():
            QShortcut(QKeySequence(key), self, lambda action=action: action())

    # -- options <-> controls <-> settings ---------------------------------------------------------
    def _restore_options(self, given: LiveOptions, explicit: frozenset[str]) -> LiveOptions:
        """Saved settings, except what was given on the command line."""
        values = {}
        for name in _SAVED:
            if name in explicit or not self.settings.contains(f"options/{name}"):
                continue
            default = getattr(given, name)
            raw = self.settings.value(f"options/{name}")
            try:
                if isinstance(default, bool):
                    values[name] = raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1")
                else:
                    values[name] = type(default)(raw)
            except (TypeError, ValueError):
                continue
        return dataclasses.replace(given, **values)

    def _save_options(self) -> None:
        for name in _SAVED:
            self.settings.setValue(f"options/{name}", getattr(self.options, name))

    def _controls_changed(self, *_: object) -> None:
        self.apply_options(self.controls.read_options(self.options))

    def apply_options(self, options: LiveOptions) -> None:
        """Use ``options`` from now on: on the fly, or with a new session for a new model."""
        old, self.options = self.options, options
        self.controls.show_options(options)
        self._save_options()
        if options == old or self.session is None:
            return
        if options.model_key() != old.model_key():
            self._explainer = None
            self.open_source(self._spec, spec=self._spec)
        else:
            self.session.configure(options)

    def _restore_window(self) -> None:
        """The saved size and splitter, unless that size cannot show the controls here (see :mod:`ui.geometry`)."""
        if restore_window(self, self.controls, self.settings.value("window/geometry")):
            splitter = self.settings.value("window/splitter")
            if splitter is not None:
                self.splitter.restoreState(splitter)

    def default_size(self) -> QSize:
        """The first window's size: every control in view, within the screen (:func:`ui.geometry.default_size`)."""
        return default_size(self, self.controls)

    # -- sources ------------------------------------------------------------------------------------
    def _fill_sources(self) -> None:
        self.controls.source_combo.blockSignals(True)
        self.controls.source_combo.clear()
        for camera in list_cameras():
            self.controls.source_combo.addItem(f"Camera: {camera.name}", camera.spec)
        self.controls.source_combo.addItem("Sample video (looped)", "sample")
        for recent in self._recent():
            self.controls.source_combo.addItem(recent if "://" in recent else Path(recent).name, recent)
            self.controls.source_combo.setItemData(
                self.controls.source_combo.count() - 1, recent, Qt.ItemDataRole.ToolTipRole
            )
        self.controls.source_combo.blockSignals(False)

    def _recent(self) -> list[str]:
        value = self.settings.value("sources/recent", [])
        items = [value] if isinstance(value, str) else list(value or [])
        return [str(item) for item in items if item][:_RECENT]

    def _remember(self, spec: str) -> None:
        if describe_spec(spec) not in ("file", "stream"):
            return
        recent = [spec] + [s for s in self._recent() if s != spec]
        self.settings.setValue("sources/recent", recent[:_RECENT])

    def _select_source_item(self, spec: str | None) -> None:
        if spec is None:
            return
        index = self.controls.source_combo.findData(spec)
        if index < 0:
            self._fill_sources()
            index = self.controls.source_combo.findData(spec)
        if index >= 0:
            self.controls.source_combo.setCurrentIndex(index)

    def _source_picked(self, index: int) -> None:
        spec = self.controls.source_combo.itemData(index)
        if spec is not None and spec != self._spec:
            self.open_source(spec, spec=spec)

    def _open_file_dialog(self) -> None:
        folder = str(self.settings.value("sources/folder", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a video", folder, "Videos (*.mp4 *.mov *.mkv *.avi *.webm *.m4v *.ts);;All files (*)"
        )
        if path:
            self.settings.setValue("sources/folder", str(Path(path).parent))
            self.open_source(path, spec=path)

    def _open_url(self) -> None:
        url = self.controls.url_edit.text().strip()
        if url:
            self.open_source(url, spec=url)

    def open_source(self, source: LiveSource | str | None, *, spec: str | None) -> None:
        """Stop the current session and start one on ``source`` (opened in its thread)."""
        old = self.session
        if old is not None:
            self._finish_recording(old)
            old.stop(timeout=0.0)  # the new session waits for it in its own thread
        self._spec = spec
        if spec is not None:
            self._remember(spec)
            self._select_source_item(spec)
        self.meter = LatencyMeter()
        self._shown_any = False
        if self._explainer is None:
            self._loading_since = time.monotonic()
            self.view.set_message(f"Loading the model {self.options.model}…")
            if self.app_options.say is not None:
                self.app_options.say(f"loading the model {self.options.model} (the window is open) ...")
        else:
            self.view.set_message("Opening the source…")
        self.session = LiveSession(source, self.options, explainer=self._explainer, on_frame=self._ring,
                                   loop=self.app_options.loop, after=old)  # fmt: skip
        self.session.owns_explainer = False  # the window keeps it for the next session
        self.session.start()
        self._update_pause_button()

    # -- frames -------------------------------------------------------------------------------------
    def _ring(self) -> None:
        """The display slot's doorbell, called from the session's sink thread."""
        if self._closing:
            return
        try:
            QCoreApplication.postEvent(self, QEvent(FRAME_EVENT))
        except RuntimeError:  # the window is being deleted
            pass

    def event(self, event: QEvent) -> bool:  # noqa: D401 - Qt's name
        if event.type() == FRAME_EVENT:
            self._show_latest()
            return True
        return super().event(event)

    def _show_latest(self) -> None:
        session = self.session
        if session is None:
            return
        result = session.display.take()
        if result is None:
            return
        self.last_result = result
        replay = bool(result.frame.extra.get("replay"))
        self.view.message = ""
        self.view.set_frame(result.image, None if replay else result.frame.captured)
        if not self._shown_any:
            self._first_frame(session)

    def _first_frame(self, session: LiveSession) -> None:
        self._shown_any = True
        if self._loading_since is not None and self.app_options.say is not None:
            self.app_options.say(f"{self.options.model} loaded, first frame shown "
                                 f"({time.monotonic() - self._loading_since:.1f} s)")  # fmt: skip
        self._loading_since = None
        if session.explainer is not None:
            self._explainer = session.explainer
            self.controls.class_picker.set_classes(session.explainer.class_names)
        record, self.app_options.record = self.app_options.record, None
        if record is not None:
            self.start_recording(record)
        if self.app_options.duration is not None:
            # --duration counts frames shown, not the time spent opening and loading
            QTimer.singleShot(max(0, round(self.app_options.duration * 1000)), self.close)

    def _painted(self, captured: float) -> None:
        self.meter.record(captured)

    # -- actions --------------------------------------------------------------------------------------
    def toggle_pause(self) -> None:
        if self.session is None:
            return
        if self.session.paused:
            self.session.resume()
        else:
            self.session.pause()
        self._update_pause_button()

    def step(self) -> None:
        if self.session is not None:
            self.session.step()
            self._update_pause_button()

    def _update_pause_button(self) -> None:
        paused = self.session is not None and self.session.paused
        self.controls.pause_button.setText("Resume" if paused else "Pause")

    def toggle_fullscreen(self) -> None:
        if self.isFullScreen():
            self.panel.show()
            self.showNormal()
        else:
            self.panel.hide()
            self.showFullScreen()

    def _escape(self) -> None:
        if self.isFullScreen():
            self.toggle_fullscreen()
        else:
            self.close()

    # -- status -----------------------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        self._status_note = text
        self.statusBar().showMessage(text, 6000)

    def status_text(self) -> str:
        session = self.session
        if session is None:
            return ""
        stats = session.stats()
        p50, p95 = self.meter.percentile(50), self.meter.percentile(95)
        parts = [f"{self.meter.fps():.1f} fps"]
        if p50 is not None and p95 is not None:
            parts.append(f"latency {1000 * p50:.0f} / {1000 * p95:.0f} ms (p50 / p95)")
        parts.append(f"dropped {stats.dropped}")
        if stats.model_runs:
            parts.append(f"model {stats.model_ms:.0f} ms, every {stats.every}{' (auto)' if stats.every_auto else ''}")
        if stats.device:
            parts.append(stats.device)
        if session.paused:
            parts.append("paused")
        if stats.status not in ("live", "playing", "starting"):
            parts.append(stats.status)
        if stats.recording is not None:
            parts.append(f"● REC {stats.recorded} frames")
        return "  ·  ".join(parts)

    def _refresh_status(self) -> None:
        session = self.session
        if session is None:
            return
        self.status_label.setText(self.status_text())
        stats = session.stats()
        self.controls.show_every_choice(stats.every if stats.every_auto and stats.model_runs else None)
        if session.notice:
            self._note(session.notice)
            session.notice = ""
        if session.state == "failed" and session.error is not None:
            message = (
                str(session.error)
                if isinstance(session.error, CamvideoError)
                else f"{type(session.error).__name__}: {session.error}"
            )
            if self.view.message != message:
                self.view.set_message(message)
                self.app_options.errors.append(message)
                self.exit_code = 1
                if self.app_options.duration is not None:
                    self.close()  # unattended: nothing more will come
        elif session.state == "ended" and self.view.message == "":
            self.view.set_message("End of the video")
        if self.app_options.duration is not None and not self._shown_any and self._give_up_at is None:
            # Unattended and nothing shown yet: give up a minute after the time asked for.
            self._give_up_at = time.monotonic() + self.app_options.duration + 60.0
        if self._give_up_at is not None and not self._shown_any and time.monotonic() > self._give_up_at:
            self.app_options.errors.append("no frame was shown")
            self.exit_code = 1
            self.close()

    # -- closing ----------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if self._closing:
            event.accept()
            return
        self._closing = True
        self._status_timer.stop()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self._save_options()
        self.settings.sync()
        session = self.session
        if session is not None:
            self._finish_recording(session)
        snapshot = self.app_options.snapshot
        if snapshot is not None and self.save_snapshot(snapshot) is None:
            self.app_options.errors.append(f"{snapshot}: not saved (no frame was shown)")
            self.exit_code = 1
        if session is not None:
            session.stop(timeout=1.0)
        if self.app_options.errors and self.exit_code == 0 and session is not None and session.state == "failed":
            self.exit_code = 1
        event.accept()
