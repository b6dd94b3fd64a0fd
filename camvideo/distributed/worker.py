"""What runs on the cluster: the annotate actor, the planning and joining tasks.

:class:`AnnotateWorker` is one worker slot: its process loads the model once (the
:class:`~camvideo.engine.Explainer` with its hooks and device buffers) and then
annotates whole videos and segments, one call at a time. Ray restarts it when its process
dies and re-runs the call it was running (``max_restarts``/``max_task_retries``); every
call therefore starts by removing what a dead attempt may have left of its outputs.

Calls never raise for a video's own problems (a corrupt file, an output that exists):
they return the error in their outcome, so Ray does not retry them and the driver knows
which video failed. Only the death of the process reaches Ray's retries.

Progress goes to a :class:`ProgressBoard` actor a few times a second, fire and forget.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..engine import Explainer
from ..errors import CamvideoError, OutputError
from ..jobs import AnnotateSettings, VideoJob, annotate_video, check_output
from ..jobs.threads import plan_threads
from ..options import ModelOptions, OverlayOptions
from ..render import Renderer
from ..sources import FileSource
from .fetch import fetch, is_url, url_name
from .join import join_jsonl, join_maps, join_video, move_into_place
from .segments import Segment, plan_segments, scan_video

#: Seconds between a worker's progress posts (frames done since the last one).
PROGRESS_EVERY = 0.5


@dataclass
class WorkDone:
    """What one call on a worker reports back (``error`` set when the video's own fault)."""

    frames: int = 0
    wall: float = 0.0
    node: str = ""
    decoder: str = ""
    encoder: str = ""
    error: str | None = None
    extra: dict = field(default_factory=dict)


def leftovers(targets: list[Path]) -> list[Path]:
    """Hidden temporary files of ``targets``: ``.NAME.partial-*`` beside each target."""
    found = []
    for target in targets:
        folder = Path(target).absolute().parent
        with contextlib.suppress(OSError):
            found += [p for p in folder.glob(f".{Path(target).name}.partial-*") if p.is_file()]
    return found


def remove_leftovers(targets: list[Path]) -> int:
    """Delete what a dead attempt left of ``targets`` (never the targets themselves)."""
    removed = 0
    for path in leftovers(targets):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def segment_paths(video: VideoJob, index: int) -> dict[str, Path | None]:
    """Where segment ``index`` of ``video`` writes: hidden files beside the outputs."""

    def part(target: Path | None, suffix: str) -> Path | None:
        return None if target is None else target.with_name(f".{target.name}.segment-{index:05d}{suffix}")

    return {"mp4": part(video.output, ".mp4"), "jsonl": part(video.jsonl, ".jsonl"), "maps": part(video.maps, ".npz")}


def video_targets(video: VideoJob, segments: int = 0) -> list[Path]:
    """Every file a video's run may create: its outputs and its segments' parts."""
    targets = [p for p in (video.output, video.jsonl, video.maps, video.report) if p is not None]
    for k in range(segments):
        targets += [p for p in segment_paths(video, k).values() if p is not None]
    return targets


def node_name() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a label for the manifest
        return socket.gethostname()


class ProgressBoard:
    """Events from the workers, collected for the driver (a Ray actor with no CPU)."""

    def __init__(self) -> None:
        self._events: list[tuple] = []

    def post(self, events: list[tuple]) -> None:
        self._events.extend(events)

    def take(self) -> list[tuple]:
        events, self._events = self._events, []
        return events


class _Reporter:
    """Counts a call's frames and posts them to the board every ``PROGRESS_EVERY`` s."""

    def __init__(self, board: Any, key: str) -> None:
        self.board, self.key = board, key
        self.pending = 0
        self.last = time.monotonic()

    def post(self, *event: object) -> None:
        if self.board is not None:
            self.board.post.remote([(self.key, *event)])

    def frame(self, _: object = None) -> None:
        self.pending += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.flush()
            self.last = now

    def flush(self) -> None:
        if self.pending:
            self.post("frames", self.pending)
            self.pending = 0


class AnnotateWorker:
    """One worker slot: the model, loaded once per process, and the calls that use it.

    A model that cannot load is not an exception here (Ray would report it on every
    call): :meth:`ready` returns the message, and the driver stops the run with it once.
    """

    def __init__(self, model: ModelOptions, overlay: OverlayOptions, settings: AnnotateSettings,
                 threads: int | None = None) -> None:  # fmt: skip
        import torch

        if threads:
            torch.set_num_threads(threads)  # the CPUs Ray gave this actor, not the whole node's
        self.settings = settings
        self.node = node_name()
        self.error: str | None = None
        try:
            self.explainer = Explainer.from_options(model)
            self.explainer.selector(settings.target)  # a wrong class name fails here, once
            self.renderer = Renderer(**overlay.keywords(), class_names=self.explainer.class_names)
            if threads and settings.threads is None:
                # Each job plans its thread pools over the cores it may use: this actor's share,
                # not the node's (its affinity mask), which every actor on the node would take.
                self.settings = replace(settings, threads=plan_threads(threads, device=self.explainer.device.type))
        except CamvideoError as err:
            self.error = str(err)
        except Exception as err:  # noqa: BLE001 - reported to the driver as one line
            self.error = f"{type(err).__name__}: {' '.join(str(err).split())}"

    def ready(self) -> dict:
        device = "" if self.error else str(self.explainer.device)
        return {"error": self.error, "node": self.node, "pid": os.getpid(), "device": device}

    def pid(self) -> int:
        return os.getpid()

    def annotate(self, key: str, video: VideoJob, board: Any = None) -> WorkDone:
        """Annotate one whole video, as ``camvideo annotate`` does; progress to ``board``."""
        reporter = _Reporter(board, key)
        reporter.post("start", self.node, os.getpid())
        remove_leftovers(video_targets(video))  # a dead attempt's partial files
        started = time.monotonic()
        copy = None
        try:
            source = video.input
            if is_url(source):
                copy = source = fetch(source, video.output)
            report = annotate_video(
                source, video.output, self.explainer, self.renderer, self.settings, jsonl=video.jsonl,
                maps=video.maps, report=video.report, on_frame=reporter.frame,
            )  # fmt: skip
        except CamvideoError as err:
            return WorkDone(node=self.node, error=str(err))
        finally:
            reporter.flush()
            if copy is not None:
                copy.unlink(missing_ok=True)
        return WorkDone(report.stats.frames_written, time.monotonic() - started, self.node, report.decoder,
                        report.encoder)  # fmt: skip

    def annotate_segment(self, key: str, video: VideoJob, segment: Segment, board: Any = None) -> WorkDone:
        """Annotate one segment of ``video`` into its hidden part files."""
        reporter = _Reporter(board, key)
        reporter.post("start", self.node, os.getpid())
        paths = segment_paths(video, segment.index)
        remove_leftovers([p for p in paths.values() if p is not None])
        for path in paths.values():
            if path is not None:
                path.unlink(missing_ok=True)  # a finished part of an attempt whose join never came
        started = time.monotonic()
        try:
            # The same job as a whole video's, on the segment's stretch (it fails unless
            # every frame of the segment is written).
            report = annotate_video(video.input, paths["mp4"], self.explainer, self.renderer, self.settings,
                                    jsonl=paths["jsonl"], maps=paths["maps"], on_frame=reporter.frame,
                                    part=segment.part())  # fmt: skip
        except CamvideoError as err:
            return WorkDone(node=self.node, error=str(err))
        finally:
            reporter.flush()
        return WorkDone(segment.frames, time.monotonic() - started, self.node, report.decoder, report.encoder)

    def plan(self, video: VideoJob, overwrite: bool, segment_seconds: float, warmup: float, batch: int) -> WorkDone:
        """:func:`plan_video` on this worker (its file system, its codecs)."""
        plan = plan_video(video, overwrite, segment_seconds, warmup, batch)
        return WorkDone(node=self.node, error=plan["error"], extra={"plan": plan})

    def join(self, video: VideoJob, count: int, time_base: Fraction, has_audio: bool) -> WorkDone:
        """:func:`join_segments` on this worker."""
        result = join_segments(video, count, time_base, has_audio)
        return WorkDone(result.get("frames", 0), node=result["node"], error=result["error"])


# -- tasks (no CPU of their own: they only read headers and copy packets) ----------------


def plan_video(video: VideoJob, overwrite: bool, segment_seconds: float, warmup: float, batch: int) -> dict:
    """Check a video's outputs and decide whether to cut it: ``{"segments": [...]}``.

    Returns ``{"error": ...}`` for a video's own problem (an existing output, a file
    that does not open); the driver reports it without running anything.
    """
    try:
        if is_url(video.input):  # read when its worker annotates it (fetch.py); never cut
            for path in (video.output, video.jsonl, video.maps, video.report):
                if path is not None:
                    check_output(Path(url_name(video.input)), path, overwrite)
            return {"segments": [], "frames": None, "has_audio": False, "time_base": None, "error": None}
        for path in (video.output, video.jsonl, video.maps, video.report):
            if path is not None:
                check_output(video.input, path, overwrite)
        with FileSource(video.input) as source:  # opens and decodes the first frame: a real check
            info = source.info
        duration = info.duration
        frames = info.frame_count
        segments: list[Segment] = []
        # A --report picture needs the whole video in one place: such a video is not cut.
        if segment_seconds > 0 and duration is not None and duration > segment_seconds and video.report is None:
            scan = scan_video(video.input)
            segments = plan_segments(scan, segment_seconds, warmup, batch)
            frames = len(scan.pts)
            if len(segments) < 2:
                segments = []
    except CamvideoError as err:
        return {"error": str(err)}
    return {"segments": segments, "frames": frames, "has_audio": info.has_audio, "time_base": info.time_base,
            "error": None}  # fmt: skip


def join_segments(video: VideoJob, count: int, time_base: Fraction, has_audio: bool) -> dict:
    """Join a video's ``count`` finished parts into its outputs, then delete the parts."""
    parts = [segment_paths(video, k) for k in range(count)]
    remove_leftovers(video_targets(video))  # a dead join's temporary files
    temps: list[tuple[Path, Path]] = []
    try:
        frames, temp = join_video([p["mp4"] for p in parts], video.output, time_base,
                                  video.input if has_audio else None)  # fmt: skip
        temps.append((temp, video.output))
        if video.jsonl is not None:
            temps.append((join_jsonl([p["jsonl"] for p in parts], video.jsonl), video.jsonl))
        if video.maps is not None:
            temps.append((join_maps([p["maps"] for p in parts], video.maps), video.maps))
        move_into_place(temps)
    except (CamvideoError, OSError) as err:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        message = str(err) if isinstance(err, CamvideoError) else str(OutputError(f"{video.output}: {err}"))
        return {"error": message, "node": node_name()}
    for part in parts:
        for path in part.values():
            if path is not None:
                path.unlink(missing_ok=True)
    return {"frames": frames, "error": None, "node": node_name()}
