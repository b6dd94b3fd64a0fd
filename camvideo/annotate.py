"""The annotate job: one recorded video in, an annotated MP4 (and records) out.

Builds the stages (FileSource → FrameAnnotator → Mp4Sink + JSONL/NPZ writers), runs
them in a :class:`~camvideo.pipeline.Pipeline`, and finishes or removes the outputs.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .annotator import FrameAnnotator, FrameResult
from .engine.explainer import Explainer, Target
from .errors import OutputError
from .pipeline import Pipeline, PipelineStats
from .render import Renderer
from .results import JsonlWriter, MapsWriter
from .sinks import Mp4Sink
from .smoothing import TemporalSmoother
from .sources import FileSource

log = logging.getLogger("camvideo")


@dataclass
class AnnotateSettings:
    """Everything about an annotate run except the model (shared by all videos of a run)."""

    target: Target = None
    smooth: float = 0.25  # seconds; 0 turns smoothing off
    batch_size: int = 8
    crf: int = 23
    preset: str = "veryfast"
    overwrite: bool = False
    stall_timeout: float | None = 300.0


@dataclass
class AnnotateReport:
    input: Path
    output: Path
    stats: PipelineStats
    frames_lost: int = 0
    interrupted: bool = False


def check_output(input_path: Path, output: Path, overwrite: bool) -> None:
    """Refuse to write over the input, or over an existing file without ``overwrite``."""
    if output.exists() and input_path.exists() and output.resolve() == input_path.resolve():
        raise OutputError(f"{output}: the output is the input file; choose another -o")
    if output.is_dir():
        raise OutputError(f"{output}: is a folder; give a file name ending in .mp4")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists (use --overwrite to replace it)")
    if not output.absolute().parent.is_dir():
        raise OutputError(f"{output}: folder {output.absolute().parent} does not exist")


def annotate_video(
    input_path: Path,
    output: Path,
    explainer: Explainer,
    renderer: Renderer,
    settings: AnnotateSettings,
    *,
    jsonl: Path | None = None,
    maps: Path | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    on_start: Callable[[FileSource], None] | None = None,
) -> AnnotateReport:
    """Annotate one video. Raises CamvideoError for bad input/output; on failure no output
    file is left behind; on Ctrl-C the outputs keep the frames done so far."""
    outputs = [path for path in (output, jsonl, maps) if path is not None]
    for path in outputs:
        check_output(input_path, path, settings.overwrite)
    if len({path.resolve() for path in outputs}) < len(outputs):
        raise OutputError(f"{output}: the video, --jsonl and --maps outputs must be different files")
    with FileSource(input_path) as source:
        if on_start is not None:
            on_start(source)
        annotator = FrameAnnotator(
            explainer, renderer, TemporalSmoother(settings.smooth), settings.target, keep_maps=maps is not None
        )
        writers: list = []
        sink = Mp4Sink(output, source.info, audio_from=input_path if source.info.has_audio else None,
                       crf=settings.crf, preset=settings.preset)  # fmt: skip
        writers.append(sink)
        try:
            jsonl_writer = JsonlWriter(jsonl, explainer.class_names) if jsonl is not None else None
            maps_writer = MapsWriter(maps) if maps is not None else None
            writers += [w for w in (jsonl_writer, maps_writer) if w is not None]

            def consume(result: FrameResult) -> None:
                sink.write(result.image, result.frame.pts, result.frame.time)
                if jsonl_writer is not None:
                    jsonl_writer.write(result)
                if maps_writer is not None:
                    maps_writer.write(result)
                if on_frame is not None:
                    on_frame(result)

            pipeline = Pipeline(source, annotator, consume, batch_size=settings.batch_size,
                                close_source=source.close, stall_timeout=settings.stall_timeout)  # fmt: skip
            stats = pipeline.run()
            if stats.interrupted:
                _wait_for_sink(pipeline, SINK_WAIT)
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        if stats.frames_written == 0:
            for writer in writers:
                writer.abort()
            if stats.interrupted:
                raise KeyboardInterrupt
            raise OutputError(f"{input_path}: no frame could be annotated; nothing written")
        saved: list[Path] = []
        try:
            for writer in writers:
                saved.append(writer.close())
        except BaseException:
            # All or nothing: a video whose records could not be saved is removed too.
            for writer in writers:
                writer.abort()
            for path in saved:
                path.unlink(missing_ok=True)
            raise
        return AnnotateReport(input_path, output, stats, source.frames_lost, stats.interrupted)


#: Seconds to wait, after Ctrl-C, for the sink thread to finish the frame it is writing.
SINK_WAIT = 10.0


def _wait_for_sink(pipeline: Pipeline, timeout: float) -> None:
    """After Ctrl-C, wait until the sink thread has really ended before the writers close.

    ``Pipeline.run()`` joins its stages, but on CPython 3.11 a Ctrl-C that lands inside
    ``Thread.join()`` marks the joined thread as ended while it still runs, so ``run()`` can
    return with the sink in the middle of a write; closing the MP4 then would race with
    it. ``threading.enumerate()`` lists such a thread until it has really finished.
    """
    deadline = time.monotonic() + timeout
    sinks = [t for t in pipeline.threads if t.name.endswith("-sink")]
    while any(t in threading.enumerate() for t in sinks) and time.monotonic() < deadline:
        time.sleep(0.01)


def progress_bar(total: int | None, name: str, enabled: bool):
    """A tqdm bar on stderr (frames, fps, ETA), or None when disabled or not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="frame", dynamic_ncols=True, leave=True, file=sys.stderr)


def describe(report: AnnotateReport) -> str:
    s = report.stats
    return f"{report.input.name} -> {report.output}: {s.frames_written} frames in {s.wall:.1f} s ({s.fps:.1f} fps)"
