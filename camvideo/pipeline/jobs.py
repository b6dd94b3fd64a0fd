"""Several videos at once: one pipeline per video, sharing one model on one device.

On a GPU the model is rarely the bottleneck of a folder run: decoding and encoding are,
and they run on the CPU. :func:`run_jobs` runs up to ``jobs`` pipelines side by side so
that the CPU's codecs all work while the device takes the engine stages' batches (a
shared :class:`~camvideo.engine.Explainer` serialises its own calls; each job renders
with its own buffers). Memory stays bounded: each pipeline holds a few batches.

Ctrl-C reaches only the main thread, which here waits for results; it relays the
interrupt to the running pipelines (their ``interrupt`` event), which finish their
outputs with the frames done, and starts no new video.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")

_POLL = 0.1  # seconds between looks at the results queue (Ctrl-C is seen between them)


@dataclass(frozen=True)
class JobContext:
    """What a job hands on to the :class:`~camvideo.pipeline.Pipeline` it runs."""

    slot: int  # which of the ``jobs`` workers runs it, from 0 (a progress bar's line)
    interrupt: threading.Event | None  # set when the run is interrupted (Ctrl-C)


@dataclass
class _Outcome(Generic[J, R]):
    item: J
    result: R | BaseException


def run_jobs(
    items: Sequence[J],
    work: Callable[[J, JobContext], R],
    jobs: int = 1,
    *,
    interrupted: Callable[[R], bool] = lambda result: False,
) -> Iterator[tuple[J, R | BaseException]]:
    """Run ``work(item, context)`` for each item, at most ``jobs`` at a time.

    Yields ``(item, result)`` as each job finishes (in order of finishing), where
    ``result`` is what ``work`` returned or the exception it raised: one video's
    failure never costs the others. After a result for which ``interrupted(result)`` is
    true, or a ``KeyboardInterrupt`` from a job, no new job starts.

    With ``jobs == 1`` the jobs run one after another in the calling thread (Ctrl-C
    reaches the pipeline directly). With more, they run in worker threads; a Ctrl-C
    while waiting sets every running job's ``interrupt`` event and the loop goes on
    yielding their (interrupted) results; a second Ctrl-C stops waiting and is raised.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    if jobs == 1 or len(items) <= 1:
        yield from _run_here(items, work, interrupted)
    else:
        yield from _run_threads(items, work, min(jobs, len(items)), interrupted)


def _run_here(items, work, interrupted) -> Iterator[tuple]:
    context = JobContext(slot=0, interrupt=None)
    for item in items:
        try:
            result = work(item, context)
        except BaseException as err:  # noqa: BLE001 - handed to the caller, like a worker's
            yield item, err
            if isinstance(err, KeyboardInterrupt):
                return
            continue
        yield item, result
        if interrupted(result):
            return


def _run_threads(items, work, jobs: int, interrupted) -> Iterator[tuple]:
    interrupt = threading.Event()  # relays Ctrl-C to the running pipelines
    no_more = threading.Event()  # start no new job
    todo = list(reversed(items))
    todo_lock = threading.Lock()
    done: queue.Queue[_Outcome | None] = queue.Queue()  # None: a worker has ended

    def worker(slot: int) -> None:
        context = JobContext(slot=slot, interrupt=interrupt)
        try:
            while not no_more.is_set():
                with todo_lock:
                    if not todo:
                        return
                    item = todo.pop()
                try:
                    result: object = work(item, context)
                    stop = interrupted(result)
                except BaseException as err:  # noqa: BLE001 - handed to the caller
                    result, stop = err, isinstance(err, KeyboardInterrupt)
                if stop:  # decided here, before this worker takes another video
                    no_more.set()
                    interrupt.set()
                done.put(_Outcome(item, result))
        finally:
            done.put(None)

    threads = [threading.Thread(target=worker, args=(slot,), name=f"camvideo-job-{slot}", daemon=True)
               for slot in range(jobs)]  # fmt: skip
    for thread in threads:
        thread.start()
    running = jobs
    ctrl_c = False
    try:
        while running:
            try:
                outcome = done.get(timeout=_POLL)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                if ctrl_c:
                    raise  # the second Ctrl-C: stop waiting
                ctrl_c = True
                no_more.set()
                interrupt.set()
                continue
            if outcome is None:
                running -= 1
                continue
            yield outcome.item, outcome.result
    finally:
        # The caller stopped early (or a second Ctrl-C): the running jobs stop as on
        # Ctrl-C and finish their outputs in their (daemon) threads; the CLI waits for
        # those threads before it exits.
        no_more.set()
        if running:
            interrupt.set()
