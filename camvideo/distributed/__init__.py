"""Annotate on a Ray cluster: many videos across many workers, long videos in segments.

:func:`annotate_on_ray` is the distributed twin of :func:`camvideo.jobs.annotate_many`:
the same settings, the same output files, each video's outcome yielded as it finishes.
:func:`ray_cluster` joins a cluster (or starts a local one on 127.0.0.1) for a block.
The workers build their model and overlay from :class:`~camvideo.options.ModelOptions`
and :class:`~camvideo.options.OverlayOptions`, as the local command does.
Ray is an optional dependency (``pip install ".[ray]"`` from the clone); this package imports it
only when a run starts. Nothing in camvideo imports this package except the CLI.
"""

from .cluster import ClusterError, ClusterInfo, ray_cluster
from .fetch import is_url, url_name
from .run import VideoOutcome, annotate_on_ray, worker_slots
from .segments import WARMUP_TAUS, Segment, VideoScan, plan_segments, scan_video
from .worker import AnnotateWorker, leftovers

__all__ = [
    "WARMUP_TAUS", "AnnotateWorker", "ClusterError", "ClusterInfo", "Segment",
    "VideoOutcome", "VideoScan", "annotate_on_ray", "leftovers", "plan_segments", "ray_cluster",
    "scan_video", "worker_slots", "is_url", "url_name",
]  # fmt: skip
