"""Threads and queues: the only package that knows about them.

* :mod:`.core`: :class:`Pipeline`, source → batcher + engine → sink in three threads
  joined by bounded queues (file policy: nothing dropped, in order; live policy: the
  newest frames only);
* :mod:`.jobs`: :func:`run_jobs`, several pipelines at once sharing one model;
* :mod:`.live`: the primitives a live session's threads meet at (newest-item slot,
  pause gate, background workers, mailbox).
"""

from .core import Pipeline, PipelineStats, StageStalled
from .jobs import JobContext, run_jobs
from .live import DropWorker, Gate, LatestSlot, LatestWorker, Mailbox, Task, WorkerStopped

__all__ = [
    "Pipeline", "PipelineStats", "StageStalled", "JobContext", "run_jobs",
    "DropWorker", "Gate", "LatestSlot", "LatestWorker", "Mailbox", "Task", "WorkerStopped",
]  # fmt: skip
