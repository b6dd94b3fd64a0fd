"""Threads and channels: the only package that knows about them.

* :mod:`.core`: :class:`Pipeline`, source → batcher + engine → sink in three threads
  joined by bounded queues (file policy: nothing dropped, in order; live policy: the
  newest frames only);
* :mod:`.channels`: :class:`DropOldest`, the one drop-oldest channel (live frames, the
  display slot, audio on its way to a recording);
* :mod:`.jobs`: :func:`run_jobs`, several pipelines at once sharing one model;
* :mod:`.workers`: what a live session's threads meet at (pause gate, background
  workers, tasks).
"""

from .channels import DropOldest
from .core import Pipeline, PipelineStats, StageStalled
from .jobs import JobContext, run_jobs
from .workers import DropWorker, Gate, LatestWorker, Task, WorkerStopped

__all__ = [
    "DropOldest", "DropWorker", "Gate", "JobContext", "LatestWorker", "Pipeline", "PipelineStats",
    "StageStalled", "Task", "WorkerStopped", "run_jobs",
]  # fmt: skip
