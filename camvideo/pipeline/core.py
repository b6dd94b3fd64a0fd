"""The threaded pipeline: source -> batcher + engine -> sink.

    source ──frames──▶ batcher + engine ──results──▶ sink
    (thread)   queue        (thread)        queue     (thread)

Two policies share the same stages:

* ``file``: bounded queues; nothing is dropped and frames leave in order; a batch
  waits until it is full (or the video ends).
* ``live``: the frames channel keeps only the newest ``live_depth`` frames; older ones
  are dropped (and counted) when inference falls behind; a batch takes whatever has
  arrived, never waits to fill.

The first failure in any stage stops every stage and is re-raised in the thread that
called :meth:`Pipeline.run`. A ``KeyboardInterrupt`` (Ctrl-C in the main thread, or
raised inside a stage) or a set ``interrupt`` event (Ctrl-C seen by whoever runs this
pipeline in a worker thread) stops the stages too; ``run`` then returns with
``stats.interrupted`` set, so the caller can finish its output with the frames done.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import CamvideoError
from ..types import Frame
from .channels import DropOldest

R = TypeVar("R")
T = TypeVar("T")

_STAGES = ("source", "engine", "sink")
END = object()  # end of stream marker
POLL_SECONDS = 0.05  # between checks of the stop flag while blocked


class _Stopped(Exception):
    """Raised inside a stage when another stage has stopped the pipeline."""


class StageStalled(CamvideoError):
    """A stage made no progress for longer than the pipeline's stall timeout."""


@dataclass
class PipelineStats:
    frames_read: int = 0
    frames_processed: int = 0
    frames_written: int = 0
    frames_dropped: int = 0  # live policy only: stale frames replaced by newer ones
    batches: int = 0
    busy: dict[str, float] = field(default_factory=lambda: {"source": 0.0, "engine": 0.0, "sink": 0.0})
    wall: float = 0.0
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames_written / self.wall if self.wall > 0 else 0.0


class _Channel:
    """A bounded FIFO whose blocking calls give up when the pipeline stops."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = stop

    def put(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def get(self) -> object:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue

    def get_nowait(self) -> object | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None


class _LiveFrames(_Channel):
    """The live policy's frame queue: the newest ``depth`` frames (a :class:`DropOldest`);
    the end of the stream closes it, so the end is never dropped."""

    def __init__(self, depth: int, stop: threading.Event) -> None:
        self._frames: DropOldest[object] = DropOldest(depth)
        self._stop = stop

    @property
    def dropped(self) -> int:
        return self._frames.dropped

    def put(self, item: object) -> None:
        if item is END:
            self._frames.close()
        else:
            self._frames.put(item)

    def get(self) -> object:
        while True:
            item = self._frames.get(POLL_SECONDS)
            if item is not None:
                return item
            if self._frames.closed:
                return END
            if self._stop.is_set():
                raise _Stopped

    def get_nowait(self) -> object | None:
        item = self._frames.take()
        if item is None and self._frames.closed:
            return END
        return item


class Pipeline(Generic[R]):
    """Run ``source`` → ``process`` (in batches) → ``sink`` in three threads.

    ``process`` gets a list of frames (in order) and returns one result per frame;
    ``sink`` gets each result in order. ``close_source`` is called to unblock a source
    that may be waiting on a device (a camera read) when the pipeline stops.

    ``interrupt`` is an event that, once set, stops the pipeline as Ctrl-C would
    (``stats.interrupted``): Ctrl-C reaches only the main thread, so whoever runs
    pipelines in worker threads relays it this way.
    """

    def __init__(
        self,
        source: Iterable[Frame],
        process: Callable[[Sequence[Frame]], Sequence[R]],
        sink: Callable[[R], None],
        *,
        batch_size: int = 8,
        policy: str = "file",
        queue_size: int | None = None,
        live_depth: int = 1,
        close_source: Callable[[], None] | None = None,
        stall_timeout: float | None = None,
        grace: float = 5.0,
        interrupt: threading.Event | None = None,
    ) -> None:
        if policy not in ("file", "live"):
            raise ValueError(f"policy must be 'file' or 'live', not {policy!r}")
        if batch_size < 1:
            raise CamvideoError(f"batch size must be at least 1, not {batch_size}")
        self.source = source
        self.process = process
        self.sink = sink
        self.batch_size = batch_size
        self.policy = policy
        self.close_source = close_source
        self.stall_timeout = stall_timeout
        self.grace = grace
        self.interrupt = interrupt
        self.stats = PipelineStats()
        self._stop = threading.Event()
        size = queue_size if queue_size is not None else 2 * batch_size
        self._frames: _Channel = _LiveFrames(live_depth, self._stop) if policy == "live" else _Channel(size, self._stop)
        self._results = _Channel(size, self._stop)
        self._error: BaseException | None = None
        self._error_stage = ""
        self._lock = threading.Lock()
        self._progress = time.monotonic()
        self._threads: list[threading.Thread] = []
        # Set by each stage thread as its very last act. Waited on instead of
        # Thread.join()/is_alive(): on CPython 3.11 a Ctrl-C landing inside join() can mark
        # a thread that still runs as ended.
        self._ended = {name: threading.Event() for name in _STAGES}
        # When each stage's current call into user code (read, process, write) began;
        # None while it waits on a queue. Names the stuck stage when the pipeline stalls.
        self._calls: dict[str, float | None] = dict.fromkeys(_STAGES)

    # -- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask every stage to stop (safe from any thread, idempotent)."""
        if not self._stop.is_set():
            self._stop.set()
            if self.close_source is not None:
                try:
                    self.close_source()
                except Exception:  # closing is best effort; the stage reports its own error
                    pass

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def frames_dropped(self) -> int:
        """Stale frames dropped so far (live policy); readable while the pipeline runs."""
        return self._frames.dropped if isinstance(self._frames, _LiveFrames) else 0

    def _fail(self, stage: str, err: BaseException) -> None:
        with self._lock:
            if isinstance(err, KeyboardInterrupt):
                self.stats.interrupted = True
            elif self._error is None:
                self._error, self._error_stage = err, stage
        self.stop()

    def _tick(self) -> None:
        self._progress = time.monotonic()

    # -- stages -------------------------------------------------------------------------------
    def _stage(self, name: str, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except _Stopped:
                pass
            except BaseException as err:  # noqa: BLE001 - every failure must reach run()
                self._fail(name, err)
            finally:
                self._ended[name].set()

        return run

    def _call(self, name: str, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)``, timed into ``stats.busy[name]`` and marked as in progress."""
        start = time.monotonic()
        self._calls[name] = start
        try:
            return fn(*args)
        finally:
            self._calls[name] = None
            self.stats.busy[name] += time.monotonic() - start
            self._tick()

    def _read(self) -> None:
        iterator = iter(self.source)
        while not self._stop.is_set():
            frame = self._call("source", next, iterator, END)
            if frame is END:
                break
            self.stats.frames_read += 1
            self._frames.put(frame)
        self._frames.put(END)

    def _next_batch(self) -> tuple[list[Frame], bool]:
        """Frames for one batch, and whether the stream ended after them."""
        first = self._frames.get()
        if first is END:
            return [], True
        batch = [first]
        while len(batch) < self.batch_size:
            item = self._frames.get_nowait() if self.policy == "live" else self._frames.get()
            if item is None:
                break
            if item is END:
                return batch, True
            batch.append(item)
        return batch, False

    def _engine(self) -> None:
        ended = False
        while not ended:
            batch, ended = self._next_batch()
            if not batch:
                break
            results = self._call("engine", self.process, batch)
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} frames")
            self.stats.batches += 1
            self.stats.frames_processed += len(batch)
            for result in results:
                self._results.put(result)
        self._results.put(END)

    def _write(self) -> None:
        while True:
            result = self._results.get()
            if result is END:
                return
            self._call("sink", self.sink, result)
            self.stats.frames_written += 1

    # -- running ------------------------------------------------------------------------------
    def run(self) -> PipelineStats:
        """Run to the end of the source (or a stop); re-raise the first stage error."""
        start = time.perf_counter()
        bodies = {"source": self._read, "engine": self._engine, "sink": self._write}
        self._threads = [
            threading.Thread(target=self._stage(name, bodies[name]), name=f"camvideo-{name}", daemon=True)
            for name in _STAGES
        ]
        for thread in self._threads:
            thread.start()
        try:
            self._wait()
        except KeyboardInterrupt:
            self._fail("main", KeyboardInterrupt())
            self._wait()
        self.stats.wall = time.perf_counter() - start
        if isinstance(self._frames, _LiveFrames):
            self.stats.frames_dropped = self._frames.dropped
        if self._error is not None:
            raise self._error
        return self.stats

    def _wait(self) -> None:
        """Wait for the stages to end; watch for stalls and for ``interrupt``; once
        stopping, give the stages ``grace`` seconds.

        A thread stuck inside a call (a hung camera read) cannot be killed in Python; it is
        a daemon, so it cannot keep the process alive, and ``run`` returns regardless.
        """
        deadline = None
        while not all(event.is_set() for event in self._ended.values()):
            for event in self._ended.values():
                event.wait(POLL_SECONDS / len(_STAGES))
            now = time.monotonic()
            if self._stop.is_set():
                deadline = deadline or now + self.grace
                if now > deadline:
                    return
            elif self.interrupt is not None and self.interrupt.is_set():
                self._fail("main", KeyboardInterrupt())
            elif self.stall_timeout is not None and now - self._progress > self.stall_timeout:
                self._fail("pipeline", StageStalled(self._stall_message(now)))

    def _stall_message(self, now: float) -> str:
        # The stage(s) inside one call since (about) the last progress; the others wait on queues.
        stuck = [
            name for name, since in self._calls.items() if since is not None and now - since >= self.stall_timeout / 2
        ]
        running = [name for name, ended in self._ended.items() if not ended.is_set()]
        where = (
            f"the {' and '.join(stuck)} stage is stuck in one call"
            if stuck
            else f"stages still running: {', '.join(running)}"
        )
        return f"no progress for {now - self._progress:.0f} s ({where}); stopped"

    def wait_stage(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for stage ``name`` to end (after a stop); True if it has."""
        return self._ended[name].wait(timeout)

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)
