"""The ``camvideo`` command: ``annotate``, ``live`` and ``models``.

User mistakes end with one ``camvideo: error: ...`` line and a non-zero exit; a
traceback only appears for bugs, and only with ``CAMVIDEO_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import CamvideoError, OutputError
from ..options import ModelOptions, OverlayOptions
from .parser import build_parser

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


#: Seconds :func:`main` waits, before it returns, for the stage threads of its run that are
#: still finishing a call: after Ctrl-C or an error, a pipeline stops waiting for its stages
#: after a grace period, and a model batch can take longer than that on a busy CPU. A thread
#: still inside torch when the interpreter shuts down aborts the process ("terminate called
#: without an active exception", exit 134) instead of exiting with the code we chose.
STAGE_EXIT_WAIT = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    before = set(threading.enumerate())
    try:
        return _main(argv)
    finally:
        _join_new_threads(before, STAGE_EXIT_WAIT)


def _join_new_threads(before: set[threading.Thread], timeout: float) -> None:
    """Wait (at most ``timeout`` s, a second Ctrl-C ends it) for threads started since ``before``.

    Not with ``Thread.join()``/``is_alive()``: on CPython 3.11 a Ctrl-C that lands inside a
    join marks the joined thread as ended while it still runs (bpo-45274's fix releases the
    thread's own lock); ``threading.enumerate()`` lists it until it has really finished.
    A thread stuck for good (a hung device read) is left behind after the wait: it is a
    daemon and cannot keep the process alive.
    """
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            running = [
                t for t in threading.enumerate() if t not in before and t.daemon and t.name.startswith("camvideo-")
            ]
            if not running:
                return
            time.sleep(0.02)
    except KeyboardInterrupt:
        pass


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="camvideo: warning: %(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "annotate":
            return _annotate(args)
        if args.command == "models":
            return _models()
        if args.command == "cache":
            from .cache import run_cache

            return run_cache(args)
        if args.command == "live":
            from .live import run_live

            return run_live(args)
        if args.command == "serve":
            from .serve import run_serve

            return run_serve(args)
    except CamvideoError as err:
        print(f"camvideo: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("camvideo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug: one line unless debugging
        if os.environ.get("CAMVIDEO_DEBUG"):
            raise
        print(f"camvideo: {_internal(err)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _check_report_extra() -> None:
    """--report draws with matplotlib, an optional extra: say so before the model loads."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CamvideoError(
            "--report needs matplotlib: pip install matplotlib (or '.[report]' in camvideo's clone)"
        ) from None


def _internal(err: BaseException) -> str:
    """A bug, on one line."""
    text = " ".join(str(err).split())
    return f"internal error: {type(err).__name__}: {text} (set CAMVIDEO_DEBUG=1 for details)"


def _models() -> int:
    from ..engine import available_models

    models = available_models()
    width = max(len("MODEL"), *(len(name) for name, _, _ in models))
    print(f"{'MODEL':<{width}}  {'WEIGHTS':<8}  NOTES")
    for name, offline, note in models:
        print(f"{name:<{width}}  {'offline' if offline else 'download':<8}  {note}")
    print("offline: loads without a network; download: needs the internet once (torchvision's cache) or --weights PATH")
    return EXIT_OK


def plan_outputs(inputs: list[Path], output: str | None, suffix: str, default_dir: Path) -> list[Path]:
    """Output path per input: ``-o FILE`` for one input, ``-o DIR`` (created if needed) for several."""
    if output is not None and len(inputs) == 1 and not Path(output).is_dir() and not output.endswith(os.sep):
        return [Path(output)]
    folder = Path(output) if output is not None else default_dir
    if output is not None and not folder.is_dir():
        from ..sinks import check_output_folder

        check_output_folder(folder)
        try:
            folder.mkdir()
        except OSError as err:
            raise OutputError(f"{folder}: cannot create folder ({err.strerror or err})") from None
    paths = [folder / f"{p.stem}{suffix}" for p in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, paths):
        if dst in seen:
            raise OutputError(f"{seen[dst]} and {src} would both write {dst}; annotate them separately")
        seen[dst] = src
    _check_not_inputs(inputs, paths)
    return paths


def _check_not_inputs(inputs: list[Path], outputs: list[Path]) -> None:
    """Refuse a plan that would write over one of the run's inputs (``a.cam.mp4`` in a
    folder run to the same folder, say), before anything is read or written."""
    sources = {p.resolve(): p for p in inputs}
    for dst in outputs:
        src = sources.get(dst.resolve())
        if src is not None:
            raise OutputError(f"{dst}: would write over the input {src}; choose another -o folder")


def _annotate(args: argparse.Namespace) -> int:
    # Inputs and outputs are checked before torch and the model load (seconds), so a
    # wrong path, a text file or an unsupported extension is refused at once.
    from ..sinks import container_format, report_path
    from ..sources import FileSource, find_videos, sample_video

    if args.ray is not None and args.inputs:  # on a cluster, URLs too: the workers fetch them
        from .ray import find_inputs

        inputs = find_inputs(args.inputs)
    else:
        inputs = find_videos(args.inputs) if args.inputs else [sample_video()]
    if args.no_video:
        if args.output is not None or args.report:
            raise OutputError("--no-video writes no video: leave out -o/--output and --report")
        if not (args.jsonl or args.maps):
            raise OutputError("--no-video needs --jsonl and/or --maps (the records are its only output)")
        if getattr(args, "ray", None) is not None:
            raise OutputError("--no-video does not run on --ray yet; run it locally")
        outputs: list[Path | None] = [None] * len(inputs)
    else:
        outputs = list(plan_outputs(inputs, args.output, ".cam.mp4", Path.cwd()))
    for path in outputs:
        if path is not None:
            container_format(path)
    jsonls = plan_outputs(inputs, args.jsonl, ".jsonl", Path.cwd()) if args.jsonl else [None] * len(inputs)
    maps = plan_outputs(inputs, args.maps, ".npz", Path.cwd()) if args.maps else [None] * len(inputs)
    if args.report is True:  # --report alone: beside each video
        reports = [report_path(path) for path in outputs]
    else:
        reports = (
            plan_outputs(inputs, args.report, ".cam.report.png", Path.cwd()) if args.report else [None] * len(inputs)
        )
    if args.report:
        for path in reports:
            if path.suffix.lower() != ".png":
                raise OutputError(f"{path}: the report is a PNG picture; give a name ending in .png")
        _check_report_extra()
    if len(inputs) == 1 and isinstance(inputs[0], Path):  # a folder run reports each bad file and goes on
        if not args.overwrite:  # the same refusal as the job's, before the model loads (seconds)
            for path in (outputs[0], jsonls[0], maps[0], reports[0]):
                if path is not None and path.exists():
                    raise OutputError(f"{path}: already exists (use --overwrite to replace it)")
        with FileSource(inputs[0]):  # opens the container and decodes the first frame
            pass

    from ..engine import Explainer
    from ..jobs import AnnotateSettings, VideoJob, annotate_many, describe, progress_bar
    from ..render import Renderer

    if args.ray is not None:  # the workers load the model, not this process
        from .ray import run_on_ray

        return run_on_ray(args, [VideoJob(*paths) for paths in zip(inputs, outputs, jsonls, maps, reports)])
    explainer = Explainer.from_options(ModelOptions.from_args(args))
    explainer.selector(args.target)  # a wrong class name fails now, not on every video
    if not args.quiet:  # which layer is explained, why, and how its output becomes a map (transformers)
        print(
            f"{explainer.spec.name}: {explainer.method} on layer {explainer.report.describe()}; {explainer.describe()}"
        )
    renderer = Renderer(**OverlayOptions.from_args(args).keywords(), class_names=explainer.class_names)
    cuda = explainer.device.type == "cuda"
    settings = AnnotateSettings.from_args(args, cuda=cuda)
    jobs = args.jobs or (min(len(inputs), AUTO_GPU_JOBS) if cuda else 1)
    videos = [VideoJob(*paths) for paths in zip(inputs, outputs, jsonls, maps, reports)]
    bars: dict[VideoJob, object] = {}

    def start(video: VideoJob, source, slot: int):
        bar = bars[video] = progress_bar(source.info.frame_count, video.input.name, not args.quiet,
                                         position=slot if jobs > 1 else None)  # fmt: skip
        return (lambda _: bar.update(1)) if bar is not None else None

    failures: list[str] = []
    interrupted = False
    for video, outcome in annotate_many(videos, explainer, renderer, settings, jobs=jobs, on_start=start):
        bar = bars.pop(video, None)
        if bar is not None:
            bar.close()
        if isinstance(outcome, KeyboardInterrupt):
            print(f"camvideo: interrupted; {video.output or video.jsonl or video.maps} not written", file=sys.stderr)
            interrupted = True
        elif isinstance(outcome, BaseException):
            # One video's failure (a bad file, a stall, even a bug) must not cost the others
            # of a folder run: say which and go on. A single video fails as main() says.
            if len(inputs) == 1 or (not isinstance(outcome, CamvideoError) and os.environ.get("CAMVIDEO_DEBUG")):
                raise outcome
            message = str(outcome) if isinstance(outcome, CamvideoError) else f"{video.input}: {_internal(outcome)}"
            failures.append(message)
            print(f"camvideo: error: {message}", file=sys.stderr)
        elif outcome.interrupted:
            frames = outcome.stats.frames_written
            print(f"camvideo: interrupted; {video.output or video.jsonl or video.maps} keeps the {frames} frames done",
                  file=sys.stderr)  # fmt: skip
            interrupted = True
        elif not args.quiet:
            print(describe(outcome))
    if interrupted:
        return EXIT_INTERRUPTED
    if failures:
        print(f"camvideo: {len(failures)} of {len(inputs)} videos failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


#: ``--jobs auto`` on CUDA: videos at once (the CPU-side codecs are then the bottleneck).
AUTO_GPU_JOBS = 4


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
