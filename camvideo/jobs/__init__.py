"""The jobs: what wires sources, the stage and sinks together in a pipeline.

* :mod:`.stage`: :class:`FrameAnnotator`, the per-batch stage (explain → smooth → render);
* :mod:`.annotate`: the annotate job (:func:`annotate_video`, :func:`annotate_many`);
* :mod:`.live_stage`: :class:`LiveAnnotator`, the stage with the model in a background thread;
* :mod:`.live`: :class:`LiveSession`, a live source through the model to a display slot
  and a recorder; :mod:`.settings` its options, :mod:`.latency` its meter.
"""

from .annotate import (
    SINK_WAIT,
    AnnotateReport,
    AnnotateSettings,
    VideoJob,
    VideoPart,
    annotate_many,
    annotate_video,
    check_output,
    default_batch_size,
    describe,
    progress_bar,
    resolve_hwaccel,
)  # fmt: skip
from .latency import LatencyMeter, percentile
from .live import LiveSession, LiveStats
from .live_stage import LiveAnnotator
from .settings import LiveOptions, target_of
from .stage import FrameAnnotator, ModelOutput, warm_up

__all__ = [
    "SINK_WAIT", "AnnotateReport", "AnnotateSettings", "FrameAnnotator", "LatencyMeter", "LiveAnnotator", "LiveOptions",
    "LiveSession", "LiveStats", "ModelOutput", "VideoJob", "VideoPart", "annotate_many", "annotate_video", "check_output",
    "default_batch_size", "describe", "percentile", "progress_bar", "resolve_hwaccel", "target_of", "warm_up",
]  # fmt: skip
