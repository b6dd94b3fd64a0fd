"""What every writer shares: one protocol, the output-folder check, safe temporary files.

A writer (:class:`Writer`) turns annotated frames into one file: ``open`` → ``write`` per
frame → ``close`` (the finished file is moved into place) or ``abort`` (nothing is left
behind). It is a context manager, so several writers compose with
:class:`contextlib.ExitStack`; :func:`close_together` closes a set of them all or nothing.

``abort`` is safe while another thread is inside ``write`` (a pipeline that stops on an
error or a stall may abort while its sink thread is still encoding a frame): the
temporary file is unlinked at once, and the writer's own resources are released by the
writing thread when its call returns, never under it.

``close`` is idempotent and thread-safe: the file is finished once, and a caller that
comes while another is finishing it waits and gets the same path or the same error (a
live recording can be stopped from the GUI thread and the session thread at once). A
write still running in another thread is waited for; one that never returns (a stalled
encoder) ends as :class:`WriterStalled`, one line, with nothing left behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from ..errors import OutputError
from ..types import FrameResult

__all__ = ["Writer", "WriterStalled", "check_output_folder", "close_together", "describe_os_error", "temporary_beside"]

T = TypeVar("T")
W = TypeVar("W", bound="Writer")


def describe_os_error(err: BaseException) -> str:
    """One-line description of an I/O failure, with the common ones spelled out."""
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC:
        return "disk full"
    if code == errno.EDQUOT:
        return "disk quota exceeded"
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(str(text).split())


def check_output_folder(path: Path) -> Path:
    """The folder ``path`` will be written in; OutputError when it is missing or not writable.

    The one check every output (videos, records, recordings, snapshots) goes through."""
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise OutputError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {folder} is not writable")
    return folder


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def temporary_beside(target: Path, suffix: str) -> Path:
    """A new hidden temporary file in ``target``'s folder (so the final rename is atomic)."""
    folder = check_output_folder(target)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.partial-", suffix=suffix, dir=folder)
    except OSError as err:
        raise OutputError(f"{target}: cannot write in {folder} ({describe_os_error(err)})") from None
    os.close(fd)
    os.chmod(name, 0o666 & ~_UMASK)  # mkstemp makes 0600; the final file gets the usual mode
    return Path(name)


class WriterStalled(OutputError):
    """``close()`` waited for a write that did not return: the output was not finished."""


class Writer:
    """Base of the writers: the lifecycle, its thread safety and the context manager.

    Subclasses implement ``_open`` (create the temporary file), ``_write(result)``,
    ``_finish() -> Path`` (complete the file and move it into place) and ``_discard()``
    (release everything and remove the temporary file; idempotent). Public calls:

    - :meth:`open`: idempotent; writers open in their constructor so that a bad
      output fails before any frame is decoded.
    - :meth:`write`: one :class:`~camvideo.types.FrameResult`.
    - :meth:`close`: returns the target path; on failure the partial file is removed
      and :class:`~camvideo.errors.OutputError` raised. Idempotent and thread-safe: the
      file is finished once; a concurrent or later call gets the same path or error.
      A write in progress in another thread is waited for up to :attr:`CLOSE_WAIT`
      seconds, then the writer is aborted and :class:`WriterStalled` raised.
    - :meth:`abort`: idempotent, never raises; after a successful close it does nothing;
      while another thread is closing, it waits for that close.

    As a context manager: an exception in the block aborts; Ctrl-C (KeyboardInterrupt)
    keeps what was written if anything was; a normal exit closes.
    """

    path: Path
    frames_written: int = 0
    #: Seconds :meth:`close` waits for a write that another thread is still inside.
    CLOSE_WAIT = 10.0

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.frames_written = 0
        self._state = "new"  # new -> open -> closing -> closed | aborted
        # Guards the state; notified when a write returns and when a close ends.
        self._guard = threading.Condition(threading.Lock())
        self._writing = False
        self._discard_pending = False
        self._closer: int | None = None  # the thread inside _finish
        self._close_error: BaseException | None = None  # what the failed close raised

    # -- subclass hooks -------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _write(self, result: FrameResult) -> None:
        raise NotImplementedError

    def _finish(self) -> Path:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError

    # -- the protocol ---------------------------------------------------------------------
    def open(self: W) -> W:
        with self._guard:
            if self._state == "new":
                self._open()
                self._state = "open"
        return self

    def write(self, result: FrameResult) -> None:
        self._guarded(self._write, result)
        self.frames_written += 1

    def _guarded(self, fn: Callable[..., T], *args: object) -> T:
        """Run one write-like call; an abort that lands meanwhile is finished after it."""
        with self._guard:
            if self._state != "open":
                raise RuntimeError(f"{self.path}: write after close() or abort()")
            self._writing = True
        try:
            return fn(*args)
        finally:
            with self._guard:
                self._writing = False
                pending, self._discard_pending = self._discard_pending, False
                self._guard.notify_all()
            if pending:
                self._discard()

    def close(self, timeout: float | None = None) -> Path:
        """Finish the file and return its path (see the class docstring).

        ``timeout``: seconds to wait for a write in progress in another thread
        (default :attr:`CLOSE_WAIT`).

        Raises:
            OutputError: the file could not be finished, or the writer was aborted.
            WriterStalled: a write in another thread did not return in time.
        """
        wait = self.CLOSE_WAIT if timeout is None else timeout
        deadline = time.monotonic() + wait
        with self._guard:
            while True:
                if self._state == "closing":
                    if self._closer == threading.get_ident():
                        raise RuntimeError(f"{self.path}: close() from inside close()")
                    self._guard.wait()  # another thread is finishing the file: take its outcome
                elif self._state == "closed":
                    return self.path
                elif self._state == "aborted":
                    if self._close_error is not None:
                        raise self._close_error
                    raise OutputError(f"{self.path}: the output was abandoned (aborted); nothing was saved")
                elif self._writing and time.monotonic() < deadline:
                    self._guard.wait(deadline - time.monotonic())
                else:
                    break
            if self._writing:
                # Still inside a write: the encoder hangs. Give up on the file; the writing
                # thread releases the resources when (if ever) its call returns.
                self._state = "aborted"
                self._discard_pending = True
                self._close_error = WriterStalled(
                    f"{self.path}: a frame was still being written after {wait:g} s (the encoder stalled); "
                    "the file was not finished and nothing was saved"
                )
                self._unlink_partial()
                self._guard.notify_all()
                raise self._close_error
            self._state, self._closer = "closing", threading.get_ident()
        try:
            path = self._finish()
        except BaseException as err:
            with self._guard:
                self._state, self._closer, self._close_error = "aborted", None, err
                self._guard.notify_all()
            self._discard()
            raise
        with self._guard:
            self._state, self._closer = "closed", None
            self._guard.notify_all()
        return path

    def abort(self) -> None:
        with self._guard:
            while self._state == "closing" and self._closer != threading.get_ident():
                self._guard.wait()  # another thread is finishing the file: it decides
            if self._state in ("closed", "aborted"):
                return
            self._state = "aborted"
            if self._writing:
                # Another thread is inside write(): release the resources when it returns.
                self._discard_pending = True
                self._unlink_partial()
                return
        self._discard()

    def _unlink_partial(self) -> None:
        """Remove the temporary file now (safe under an open handle on POSIX)."""

    @property
    def finished(self) -> bool:
        """Closed or aborted."""
        return self._state in ("closed", "aborted")

    def __enter__(self: W) -> W:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Exception) or (exc is not None and self.frames_written == 0):
            self.abort()
        elif not self.finished:
            self.close()


def close_together(writers: Iterable[Writer]) -> list[Path]:
    """Close every writer, all or nothing: when one cannot be finished, the others are
    aborted and the files already finished are removed, then the error is raised."""
    writers = list(writers)
    saved: list[Path] = []
    try:
        for writer in writers:
            saved.append(writer.close())
    except BaseException:
        for writer in writers:
            writer.abort()
        for path in saved:
            path.unlink(missing_ok=True)
        raise
    return saved
