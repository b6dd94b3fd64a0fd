"""How a video job shares the CPU cores among its thread pools.

A video job runs several pools at once, and each would take one thread per core on its
own: torch's OpenMP team (the model; the renderer's torch ops run in the same thread,
between model calls), FFmpeg's decoder threads, x264's frame threads, swscale's
threads (RGB conversions) and OpenCV's pool (the overlay), besides the pipeline's
three threads (decode, model + render, encode). An OpenMP team waits at every barrier
for its slowest thread, so a team of one thread per core stalls whenever a codec
thread holds one of those cores: on a busy 2-core machine the bare forward took 584
CPU-ms a frame with 2 threads against 97 with one.

:func:`plan_threads` gives each pool its share (a :class:`ThreadPlan`), and
:func:`use_threads` applies the process-wide part (torch's and OpenCV's counts) for the
length of a job and then restores the previous values, so that a library user's own
settings are not leaked. The codec counts go to :class:`~camvideo.sources.FileSource`
(``decoder_threads``) and :class:`~camvideo.sinks.Mp4Sink` (``threads``). The model's
inference backend reads ``torch.get_num_threads()``, so torch's count is the model's
budget whatever runs it.

The plan, on ``n`` usable cores (``os.sched_getaffinity``: a container's or ``taskset``'s
share, not the machine's):

- CPU model: the model is nine tenths of the work (EfficientNet-Lite0: ~60-100 CPU-ms a
  720p frame, against ~1 for decoding and ~7-12 for the RGB→YUV conversion and x264
  veryfast), so the codecs get what keeps them up with it and the model the rest:
  encoder ``max(1, n // 8)``, decoder 1 (2 from 16 cores), model and OpenCV
  ``max(1, n - encoder - decoder)``. On 2 cores that is one thread each: no pool waits
  on another's thread.
- CUDA model: the CPU only decodes, renders and encodes, so the codecs get most of it:
  encoder ``max(1, n // 2)``, decoder ``max(1, n // 4)``, torch and OpenCV
  ``max(1, n // 4)``.
- ``jobs`` videos at once share one model (its calls take turns) but each has its own
  codecs: the codec shares are divided by ``jobs`` (at least 1 each).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ThreadPlan", "plan_threads", "usable_cores", "use_threads"]


@dataclass(frozen=True)
class ThreadPlan:
    """Threads for each pool of a video job (see the module docstring)."""

    cores: int  # the cores the plan shares out
    model: int  # torch's intra-op (OpenMP) threads: the model and the renderer's torch ops
    decoder: int  # FFmpeg decoder threads per video (and its RGB conversion's swscale threads)
    encoder: int  # x264 threads per video (and its RGB→YUV conversion's swscale threads)
    opencv: int  # cv2.setNumThreads: the overlay, drawn in the model's thread

    def describe(self) -> str:
        return (f"{self.cores} cores: model {self.model}, decoder {self.decoder}, encoder {self.encoder}, "
                f"OpenCV {self.opencv} threads")  # fmt: skip


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def plan_threads(cores: int | None = None, *, device: str = "cpu", jobs: int = 1) -> ThreadPlan:
    """Each pool's threads for ``jobs`` videos at once with the model on ``device``
    (``"cpu"``, ``"cuda"``, ...), on ``cores`` cores (default: :func:`usable_cores`)."""
    n = max(1, cores if cores is not None else usable_cores())
    jobs = max(1, jobs)
    if device == "cpu":
        encoder, decoder = max(1, n // 8), 2 if n >= 16 else 1
        model = max(1, n - encoder - decoder)
        opencv = model
    else:
        encoder, decoder = max(1, n // 2), max(1, n // 4)
        model = opencv = max(1, n // 4)
    return ThreadPlan(cores=n, model=model, decoder=max(1, decoder // jobs), encoder=max(1, encoder // jobs),
                      opencv=opencv)  # fmt: skip


# Several jobs of one run (annotate --jobs N) apply the same plan at once: the first sets
# the counts and remembers the previous ones, the last to finish restores them.
_lock = threading.Lock()
_users = 0
_saved: tuple[int, int] | None = None


@contextlib.contextmanager
def use_threads(plan: ThreadPlan) -> Iterator[ThreadPlan]:
    """Set torch's and OpenCV's process-wide thread counts to ``plan``'s for the block,
    then restore the previous ones.

    torch's count reaches the threads that run torch code after this (the pipeline's are
    started per video); one that already ran torch code keeps its own OpenMP team size.
    Nested and concurrent uses share the first one's previous values, and the counts are
    restored when the last one ends.
    """
    global _users, _saved
    import cv2
    import torch

    with _lock:
        if _users == 0:
            _saved = (torch.get_num_threads(), cv2.getNumThreads())
            torch.set_num_threads(plan.model)
            cv2.setNumThreads(plan.opencv)
        _users += 1
    try:
        yield plan
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                torch.set_num_threads(_saved[0])
                cv2.setNumThreads(_saved[1])
                _saved = None
