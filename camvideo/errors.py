"""Errors that reach the user as one line.

Every failure the user can fix (a missing file, a wrong layer name, a model with no
weights offline) is raised as a :class:`CamvideoError`; the CLI prints ``str(err)`` and
exits non-zero. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CamvideoError(Exception):
    """Base class: the message is one line and tells the user what to do."""

    exit_code = 2


class InputError(CamvideoError):
    """The input cannot be read as a video (missing, not a video, no video stream, corrupt)."""


class OutputError(CamvideoError):
    """The output cannot be written (exists, folder missing, not writable, disk full)."""


class ModelError(CamvideoError):
    """The model, its weights, its layer or the method cannot be used as asked."""


class SourceLost(CamvideoError):
    """A live source (camera, stream) stopped delivering frames."""
