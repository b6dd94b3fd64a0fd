"""The annotate job: recorded videos in, annotated MP4s (and records) out.

:func:`annotate_video` builds the stages for one video (FileSource → FrameAnnotator →
Mp4Sink + JSONL/NPZ writers), runs them in a :class:`~camvideo.pipeline.Pipeline`, and
finishes or removes the outputs. :func:`annotate_many` runs several such videos at
once on one model (:func:`~camvideo.pipeline.run_jobs`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from av.codec.hwaccel import hwdevices_available

from ..engine import Explainer, Target
from ..errors import InputError, OutputError
from ..options import DEFAULT_PRESET
from ..pipeline import JobContext, Pipeline, PipelineStats, run_jobs
from ..render import Renderer, TemporalSmoother
from ..sinks import JsonlWriter, MapsWriter, Mp4Sink, ReportWriter, Writer, close_together
from ..sources import FileSource
from ..types import FrameResult
from .stage import FrameAnnotator
from .threads import ThreadPlan, plan_threads, use_threads

log = logging.getLogger("camvideo")


@dataclass
class AnnotateSettings:
    """Everything about an annotate run except the model (shared by all videos of a run)."""

    target: Target = None
    smooth: float = 0.25  # seconds; 0 turns smoothing off
    batch_size: int | None = None  # frames per model call; None: default_batch_size(device)
    crf: int = 23
    preset: str = DEFAULT_PRESET  # the CLI's, see camvideo.options
    overwrite: bool = False
    stall_timeout: float | None = 300.0
    hwaccel: str | None = None  # hardware decoder device type ("cuda"), None for software
    encoder: str = "libx264"  # "libx264", "h264_nvenc" or "auto" (NVENC where it works)
    static_batch: bool = False  # pad the last batch to batch_size (torch.compile: one shape)
    threads: ThreadPlan | None = None  # each thread pool's share; None: plan_threads() for the device

    @classmethod
    def from_args(cls, args: object, *, cuda: bool) -> AnnotateSettings:
        """``camvideo annotate``'s settings from its argparse namespace (local and ``--ray`` alike);
        ``cuda``: whether the model runs on CUDA (``--hwaccel``/``--encoder auto`` follow it)."""
        encoder = args.encoder if args.encoder != "auto" or cuda else "libx264"
        return cls(target=args.target, smooth=args.smooth, batch_size=args.batch_size, crf=args.crf,
                   preset=args.preset, overwrite=args.overwrite, hwaccel=resolve_hwaccel(args.hwaccel, cuda),
                   encoder=encoder, static_batch=args.compile)  # fmt: skip


def default_batch_size(device_type: str) -> int:
    """Frames per model call when none is given: 32 on a GPU; 2 on the CPU.

    On the CPU, bigger batches cost more CPU time per frame (EfficientNet-Lite0 at
    224x398: ~78 ms/frame at batch 1 vs ~107 at batch 8, one thread; worse cache use),
    and the pipeline's codecs need that CPU: batch 2 gave the best whole-pipeline
    figure of 2/4/8 (``benchmarks/bench_pipeline.py --sweep``).
    """
    return 32 if device_type == "cuda" else 2


def resolve_hwaccel(choice: str, cuda: bool) -> str | None:
    """The hardware decoder to try: ``auto`` is NVDEC when the model runs on CUDA.

    Like every fallback of the decoder, a PyAV build without CUDA support decodes on
    the CPU: silently for ``auto``, with a warning when ``cuda`` was asked for by name.
    """
    if choice == "none" or (choice == "auto" and not cuda):
        return None
    if "cuda" not in hwdevices_available():
        if choice != "auto":
            log.warning("this PyAV build has no CUDA decoding; decoding on the CPU")
        return None
    return "cuda"


@dataclass(frozen=True)
class VideoJob:
    """One video of a run and where its outputs go."""

    input: Path
    output: Path | None  # None: no video (--no-video), the records only
    jsonl: Path | None = None
    maps: Path | None = None
    report: Path | None = None  # the PNG picture of the whole video (ReportWriter)


@dataclass(frozen=True)
class VideoPart:
    """A stretch of a video annotated on its own: a segment of a long video on Ray.

    The frames from ``start`` to ``end`` (seconds, :class:`~camvideo.sources.FileSource`'s
    range: ``start <= time < end``, exact as Fractions) go through the model and the
    smoother; only the frames with index in ``[write_start, write_end)`` are written. Those
    before warm the smoother up, those after fill the last model batch, as in the whole
    video's run. ``first_index``: the index of the frame at ``start``. A part has no audio
    (the join copies the source's once) and fails unless it writes every one of its frames.
    """

    start: Fraction
    end: Fraction | None
    first_index: int
    write_start: int
    write_end: int

    @property
    def frames(self) -> int:
        return self.write_end - self.write_start


@dataclass
class AnnotateReport:
    input: Path
    output: Path | None
    stats: PipelineStats
    frames_lost: int = 0
    interrupted: bool = False
    decoder: str = ""  # e.g. "h264" or "h264 (cuda)"
    encoder: str = ""  # "libx264" or "h264_nvenc"
    report_png: Path | None = None  # where --report wrote its picture


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
    output: Path | None,
    explainer: Explainer,
    renderer: Renderer,
    settings: AnnotateSettings,
    *,
    jsonl: Path | None = None,
    maps: Path | None = None,
    report: Path | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    on_start: Callable[[FileSource], None] | None = None,
    context: JobContext | None = None,
    part: VideoPart | None = None,
) -> AnnotateReport:
    """Annotate one video. Raises CamvideoError for bad input/output; on failure no output
    file is left behind; on Ctrl-C the outputs keep the frames done so far.

    ``context`` comes from :func:`~camvideo.pipeline.run_jobs` when several videos share
    the explainer (see :func:`annotate_many`). ``output`` None writes no video (``--no-video``):
    the records only, and no overlay is drawn unless a ``report`` wants its pictures.
    ``part``: annotate that stretch of the video only (a Ray segment, see :class:`VideoPart`);
    ``on_frame`` is called for the frames written."""
    outputs = [path for path in (output, jsonl, maps, report) if path is not None]
    for path in outputs:
        check_output(input_path, path, settings.overwrite)
    if len({path.resolve() for path in outputs}) < len(outputs):
        raise OutputError(f"{output}: the video, --jsonl, --maps and --report outputs must be different files")
    batch_size = settings.batch_size or default_batch_size(explainer.device.type)
    stretch = {} if part is None else {"start": part.start, "end": part.end, "first_index": part.first_index}
    written = 0
    plan = settings.threads or plan_threads(device=explainer.device.type)
    with (
        FileSource(input_path, hwaccel=settings.hwaccel, decoder_threads=plan.decoder, **stretch) as source,
        contextlib.ExitStack() as stack,
    ):
        stack.enter_context(use_threads(plan))  # torch's and OpenCV's counts, restored at the end
        if on_start is not None:
            on_start(source)
        annotator = FrameAnnotator(
            explainer,
            renderer,
            TemporalSmoother(settings.smooth),
            settings.target,
            keep_maps=maps is not None or report is not None,  # the report locates the heat on the raw map
            static_batch=batch_size if settings.static_batch else None,
            draw=output is not None or report is not None,
        )
        # Each writer aborts (nothing left behind) if the block ends with an error.
        writers: list[Writer] = []
        sink: Mp4Sink | None = None
        if output is not None:
            sink = stack.enter_context(
                Mp4Sink(
                    output,
                    source.info,
                    audio=input_path if source.info.has_audio and part is None else None,
                    crf=settings.crf,
                    preset=settings.preset,
                    encoder=settings.encoder,
                    threads=plan.encoder,
                )  # fmt: skip
            )
            writers.append(sink)
        if jsonl is not None:
            writers.append(stack.enter_context(JsonlWriter(jsonl, explainer.class_names)))
        if maps is not None:
            writers.append(stack.enter_context(MapsWriter(maps)))
        if report is not None:
            writers.append(stack.enter_context(ReportWriter(report, explainer.class_names, title=input_path.name)))

        def consume(result: FrameResult) -> None:
            nonlocal written
            if part is not None and not part.write_start <= result.frame.index < part.write_end:
                return  # warm-up, or the rest of the last model batch
            for writer in writers:
                writer.write(result)
            written += 1
            if on_frame is not None:
                on_frame(result)

        pipeline = Pipeline(source, annotator, consume, batch_size=batch_size,
                            close_source=source.close, stall_timeout=settings.stall_timeout,
                            interrupt=context.interrupt if context else None)  # fmt: skip
        try:
            stats = pipeline.run()
        finally:
            # run() stops waiting for its stages after a grace period; the sink thread may
            # still be inside a write. Let it finish before the writers are closed or
            # aborted (an abort that still lands mid-write is finished by that write).
            pipeline.wait_stage("sink", SINK_WAIT)
        if written == 0 or (part is not None and stats.interrupted):
            if stats.interrupted:
                raise KeyboardInterrupt
            raise OutputError(f"{input_path}: no frame could be annotated; nothing written")
        if part is not None and written != part.frames:
            raise InputError(f"{input_path}: frames {part.write_start}..{part.write_end - 1} gave {written} of "
                             f"{part.frames} (damaged there?); annotate the video whole (--segment-seconds 0)")  # fmt: skip
        close_together(writers)  # all or nothing: a video whose records fail is removed too
        return AnnotateReport(input_path, output, stats, source.frames_lost, stats.interrupted,
                              decoder=source.decoder, encoder=(sink.encoder or "") if sink is not None else "",
                              report_png=report)  # fmt: skip


#: Seconds to wait, after Ctrl-C, for the sink thread to finish the frame it is writing.
SINK_WAIT = 10.0


def annotate_many(
    videos: Sequence[VideoJob],
    explainer: Explainer,
    renderer: Renderer,
    settings: AnnotateSettings,
    *,
    jobs: int = 1,
    on_start: Callable[[VideoJob, FileSource, int], Callable[[FrameResult], None] | None] | None = None,
) -> Iterator[tuple[VideoJob, AnnotateReport | BaseException]]:
    """Annotate several videos, up to ``jobs`` at once, all on ``explainer``'s model.

    Yields ``(video, report or exception)`` as each video finishes, so one bad file
    never costs the others. ``on_start(video, source, slot)`` is called when a video's
    source is open (``slot``: which of the ``jobs`` runs it, for progress lines) and may
    return a per-frame callback. Ctrl-C: the running videos keep the frames done (their
    reports say ``interrupted``) and no new video starts. The videos share ``explainer``
    (its calls take turns); each renders with its own copy of ``renderer``.
    """

    # One plan for the run: the videos share the model's threads, each has its own codecs.
    settings = replace(settings, threads=settings.threads or plan_threads(device=explainer.device.type, jobs=jobs))

    def work(video: VideoJob, context: JobContext) -> AnnotateReport:
        on_frame: Callable[[FrameResult], None] | None = None

        def started(source: FileSource) -> None:
            nonlocal on_frame
            if on_start is not None:
                on_frame = on_start(video, source, context.slot)

        own = renderer if jobs == 1 else renderer.copy()  # its download buffers are per thread
        return annotate_video(video.input, video.output, explainer, own, settings, jsonl=video.jsonl,
                              maps=video.maps, report=video.report,
                              on_frame=lambda result: on_frame(result) if on_frame else None,
                              on_start=started, context=context)  # fmt: skip

    yield from run_jobs(videos, work, jobs, interrupted=lambda report: report.interrupted)


def progress_bar(total: int | None, name: str, enabled: bool, position: int | None = None):
    """A tqdm bar on stderr (frames, fps, ETA), or None when disabled or not a terminal.

    ``position`` is the bar's line when several videos run at once."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="frame", dynamic_ncols=True, leave=True, file=sys.stderr,
                position=position)  # fmt: skip


def describe(report: AnnotateReport) -> str:
    s = report.stats
    codecs = f" [{report.decoder} -> {report.encoder}]" if report.decoder and report.encoder else ""
    target = report.output if report.output is not None else "records only"
    png = f"; report -> {report.report_png}" if report.report_png is not None else ""
    speed = f"{s.frames_written} frames in {s.wall:.1f} s ({s.fps:.1f} fps)"
    return f"{report.input.name} -> {target}: {speed}{codecs}{png}"
