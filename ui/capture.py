"""What the window saves: snapshots (PNG, the frame as drawn) and recordings (MP4).

A mixin of :class:`~ui.window.MainWindow`: it uses the window's ``view``, ``session``,
``settings``, ``controls``, ``app_options`` and ``_note``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from PyQt6.QtCore import QStandardPaths

from camvideo.errors import CamvideoError
from camvideo.jobs import LiveSession

from .widgets import to_qimage


class CaptureMixin:
    """Snapshot and record actions of the main window."""

    def _output_folder(self, kind: QStandardPaths.StandardLocation) -> Path:
        if self.app_options.output_folder is not None:
            return self.app_options.output_folder
        folder = self.settings.value("output/folder")
        if folder:
            return Path(str(folder))
        location = QStandardPaths.writableLocation(kind)
        return Path(location) if location and Path(location).is_dir() else Path.home()

    def _stamp(self) -> str:
        return datetime.now().strftime("camvideo-%Y%m%d-%H%M%S")

    def save_snapshot(self, path: Path | None = None) -> Path | None:
        """Save the frame shown (full resolution, as drawn) as PNG; its path, or None."""
        image = self.view.frame
        if image is None:
            self._note("Nothing to save yet")
            return None
        if path is None:
            path = self._output_folder(QStandardPaths.StandardLocation.PicturesLocation) / f"{self._stamp()}.png"
        if not to_qimage(image).save(str(path), "PNG"):
            self._note(f"Could not save {path}")
            return None
        self._note(f"Saved {path}")
        return path

    def _record_clicked(self) -> None:
        self.toggle_recording()

    def toggle_recording(self) -> None:
        if self.session is not None and self.session.recording is not None:
            self._finish_recording(self.session)
        else:
            path = self._output_folder(QStandardPaths.StandardLocation.MoviesLocation) / f"{self._stamp()}.mp4"
            self.start_recording(path)

    def start_recording(self, path: Path) -> Path | None:
        try:
            if self.session is None:
                raise CamvideoError("nothing to record yet")
            started = self.session.start_recording(path)
        except CamvideoError as err:
            self._note(f"Cannot record: {err}")
            self.app_options.errors.append(f"cannot record: {err}")
            self._sync_record_button()
            return None
        self._note(f"Recording to {started}")
        self._sync_record_button()
        return started

    def _finish_recording(self, session: LiveSession) -> None:
        was = session.recording
        path = session.stop_recording()
        if path is not None:
            self._note(f"Saved {path}")
        elif was is not None:
            self._note(f"Recording failed: {session.notice}")
            self.app_options.errors.append(f"recording failed: {session.notice}")
        self._sync_record_button()

    def _sync_record_button(self) -> None:
        self.controls.record_button.blockSignals(True)
        self.controls.record_button.setChecked(self.session is not None and self.session.recording is not None)
        self.controls.record_button.blockSignals(False)
