"""Small primitives the threads of a live session meet at.

So that no module outside :mod:`camvideo.pipeline` creates a thread or a queue (the
newest-item slots and the audio mailbox are :class:`~camvideo.pipeline.DropOldest`):

* :class:`Gate`: pause / resume / single step / replay between a GUI and a source;
* :class:`LatestWorker`: a thread that runs a function on the newest submitted job
  (the model in live mode, while another thread keeps rendering);
* :class:`DropWorker`: a thread fed through a bounded queue that drops rather than
  blocks when full (recording must never stall the display);
* :class:`Task`: a function in a named daemon thread, its result or error kept.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from ..errors import CamvideoError
from .channels import DropOldest
from .core import END, POLL_SECONDS, StageStalled

R = TypeVar("R")
T = TypeVar("T")
J = TypeVar("J")


class Gate:
    """Pause, resume, single steps and replays of a live source.

    The GUI thread calls :meth:`pause`, :meth:`resume`, :meth:`step` and :meth:`replay`;
    the source's thread calls :meth:`admit` for each frame it has read. A file source
    blocks while paused (the video waits); a camera keeps reading and drops what it
    reads, so its buffers never fill with stale frames.
    """

    GO, DROP, REPLAY, CLOSED = "go", "drop", "replay", "closed"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._paused_since = 0.0
        self._paused_total = 0.0
        self._steps = 0
        self._replays = 0
        self._closed = False

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def closed(self) -> bool:
        return self._closed

    def paused_total(self) -> float:
        """Seconds spent paused so far, the current pause included (file pacing skips them)."""
        with self._cond:
            extra = time.monotonic() - self._paused_since if self._paused else 0.0
            return self._paused_total + extra

    def pause(self) -> None:
        with self._cond:
            if not self._paused:
                self._paused, self._paused_since = True, time.monotonic()
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            if self._paused:
                self._paused_total += time.monotonic() - self._paused_since
                self._paused, self._steps = False, 0
            self._cond.notify_all()

    def step(self) -> None:
        """Let one more frame through while paused."""
        with self._cond:
            self._steps += 1
            self._cond.notify_all()

    def replay(self) -> None:
        """Send the last frame once more (to redraw it with new settings while paused)."""
        with self._cond:
            self._replays = 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def admit(self, block: bool) -> str:
        """What to do with the frame just read: GO, DROP (paused, not blocking), REPLAY
        (send the previous frame again first, then ask again) or CLOSED."""
        with self._cond:
            while True:
                if self._closed:
                    return self.CLOSED
                if self._replays:
                    self._replays -= 1
                    return self.REPLAY
                if not self._paused:
                    return self.GO
                if self._steps:
                    self._steps -= 1
                    return self.GO
                if not block:
                    return self.DROP
                self._cond.wait(POLL_SECONDS * 5)

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking early when closed; False when closed."""
        with self._cond:
            if seconds > 0:
                self._cond.wait_for(lambda: self._closed, seconds)
            return not self._closed


class Task(Generic[T]):
    """Run ``fn()`` in a named daemon thread; keep its result or the exception it raised."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._fn = fn
        self.result: T | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as err:  # noqa: BLE001 - handed to whoever checks the task
            self.error = err

    def start(self) -> Task[T]:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the end; True when the thread has finished."""
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread:
        return self._thread


class WorkerStopped(CamvideoError):
    """A job was handed to a worker that has stopped."""


class LatestWorker(Generic[J, R]):
    """One thread running ``fn(job)`` on the newest submitted job.

    :meth:`submit` never blocks: a job waiting while ``fn`` is busy is replaced by a newer
    one (counted in :attr:`skipped`). Results land in :attr:`results`, a
    one-item :class:`~camvideo.pipeline.DropOldest`. :meth:`call` runs one job ahead of the waiting one and waits for
    its result (a frame that must be explained before it is shown). The first exception
    ``fn`` raises stops the worker; it is kept in :attr:`error` and raised by later calls.
    """

    def __init__(self, fn: Callable[[J], R], name: str) -> None:
        self._fn = fn
        self._cond = threading.Condition()
        self._job: J | None = None
        self._has_job = False
        self._urgent: list = []  # [job, done, result] of a call() in progress
        self._stopped = False
        self.results: DropOldest[R] = DropOldest(1)
        self.error: BaseException | None = None
        self.runs = 0
        self.skipped = 0
        self.busy = 0.0  # seconds spent in fn
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> LatestWorker[J, R]:
        self._thread.start()
        return self

    def submit(self, job: J) -> None:
        with self._cond:
            if self._stopped:
                return
            if self._has_job:
                self.skipped += 1
            self._job, self._has_job = job, True
            self._cond.notify_all()

    def call(self, job: J, timeout: float | None = None) -> R:
        """Run ``job`` next (before any submitted one) and return its result."""
        ticket: list = [job, False, None]
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._raise_if_stopped()
            self._urgent.append(ticket)
            self._cond.notify_all()
            while not ticket[1]:
                self._raise_if_stopped()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise StageStalled(f"{self._thread.name}: no result within {timeout:.0f} s")
                self._cond.wait(POLL_SECONDS if left is None else min(POLL_SECONDS, left))
        return ticket[2]

    def _raise_if_stopped(self) -> None:
        if self.error is not None:
            raise self.error
        if self._stopped:
            raise WorkerStopped(f"{self._thread.name} has stopped")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopped or self._urgent or self._has_job):
                    self._cond.wait()
                if self._stopped:
                    return
                ticket = self._urgent.pop(0) if self._urgent else None
                if ticket is None:
                    job, self._job, self._has_job = self._job, None, False
                else:
                    job = ticket[0]
            start = time.perf_counter()
            try:
                result = self._fn(job)  # type: ignore[arg-type]
            except BaseException as err:  # noqa: BLE001 - kept and raised to the callers
                with self._cond:
                    self.error, self._stopped = err, True
                    self._cond.notify_all()
                return
            with self._cond:
                self.busy += time.perf_counter() - start
                self.runs += 1
                if ticket is not None:
                    ticket[1], ticket[2] = True, result
                    self._cond.notify_all()
            if ticket is None:
                self.results.put(result)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the job in progress; True when the thread has ended within ``timeout``."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread:
        return self._thread


class DropWorker(Generic[T]):
    """One thread calling ``fn(item)`` for items in order, fed through a bounded queue.

    :meth:`put` never blocks: when ``size`` items are already waiting the new one is
    dropped and counted in :attr:`dropped`. :meth:`close` lets the thread finish what is
    queued and joins it. The first exception ``fn`` raises ends the worker (later puts are
    dropped) and is kept in :attr:`error`.
    """

    def __init__(self, fn: Callable[[T], None], size: int, name: str) -> None:
        self._fn = fn
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self.dropped = 0
        self.done = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> DropWorker[T]:
        self._thread.start()
        return self

    def put(self, item: T) -> bool:
        if self.error is not None:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is END:
                return
            if self.error is not None:
                continue  # drain without working: the worker has failed
            try:
                self._fn(item)
                self.done += 1
            except BaseException as err:  # noqa: BLE001 - kept for the owner to report
                self.error = err

    def close(self, timeout: float | None = None) -> bool:
        """Finish the queued items and stop; True when the thread has ended in time."""
        if self._thread.ident is None:
            return True
        try:
            self._queue.put(END, timeout=timeout)  # waits for room: the thread is draining
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread:
        return self._thread
