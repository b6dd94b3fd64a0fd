"""``camvideo annotate --ray``: the same command, run by the workers of a Ray cluster.

Every other option means what it means locally (the model, overlay and annotate settings
are built from the namespace as one value each, as the local run builds them); the outputs
are the same files. The driver (this process) loads no model: the workers do, once each.
It prints a line for each slow start-up step (the cluster, the workers' model), shows a
progress bar over videos and frames fed by the workers, prints a line per video and a
summary, and appends one line per video to ``--manifest``. The flags are in
:mod:`camvideo.cli.parser` with every other.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..errors import CamvideoError
from ..options import ModelOptions, OverlayOptions

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


class UrlInput(str):
    """An input given as a URL: read by the worker that annotates it, never by this process.

    Looks enough like a Path for the output planning (``name``, ``stem``, ``resolve()``)."""

    @property
    def name(self) -> str:
        from ..distributed import url_name

        return url_name(self)

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def resolve(self) -> UrlInput:
        return self


def find_inputs(items: list[str]) -> list:
    """:func:`~camvideo.sources.find_videos` for files and folders, URLs kept as they are."""
    from ..sources import find_videos

    found: list = []
    for item in items:
        found += [UrlInput(item)] if "://" in item else find_videos([item])
    return found


def run_on_ray(args: argparse.Namespace, videos: list) -> int:
    """Annotate ``videos`` (:class:`~camvideo.jobs.VideoJob`) on the cluster ``args.ray`` names."""
    from ..distributed import annotate_on_ray, ray_cluster
    from ..jobs import AnnotateSettings

    model = ModelOptions.from_args(args)
    overlay = OverlayOptions.from_args(args)
    manifest = Path(args.manifest) if args.manifest else None
    if manifest is not None and not manifest.absolute().parent.is_dir():
        raise CamvideoError(f"{manifest}: folder {manifest.absolute().parent} does not exist")
    # URLs travel as plain strings (the workers need not import the command line to read them).
    videos = [replace(v, input=str(v.input)) if isinstance(v.input, UrlInput) else v for v in videos]
    started = time.monotonic()
    steps = _Steps(enabled=not args.quiet)
    progress = _Progress(len(videos), enabled=not args.quiet and sys.stderr.isatty(), steps=steps)
    failures, frames = 0, 0
    try:
        with ray_cluster(args.ray or None, dashboard=args.ray_dashboard, on_start=steps.begin) as cluster:
            gpus = f", {cluster.gpus:g} GPUs" if cluster.gpus else ""
            steps.end(f"{cluster.cpus:g} CPUs{gpus} on {cluster.nodes} node(s)", cluster.startup)  # if it started one
            cuda = cluster.gpus > 0 and args.device != "cpu"
            settings = AnnotateSettings.from_args(args, cuda=cuda)
            for outcome in annotate_on_ray(videos, settings, model=model, overlay=overlay, workers=args.ray_workers,
                                           segment_seconds=args.segment_seconds, manifest=manifest,
                                           on_event=progress.event):  # fmt: skip
                if outcome.ok:
                    frames += outcome.frames
                    if not args.quiet:
                        progress.write(_describe(outcome))
                else:
                    failures += 1
                    progress.write(f"camvideo: error: {outcome.error}", err=True)
    except KeyboardInterrupt:
        progress.close()
        print("camvideo: interrupted; the cluster's work was cancelled and unfinished outputs removed",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    finally:
        progress.close()  # also ends a start-up line an error cut short, before the error's line
    wall = time.monotonic() - started
    if not args.quiet or failures:
        where = f"{cluster.nodes} node(s)" if not cluster.started_here else "a local cluster"
        print(f"camvideo: {len(videos) - failures} of {len(videos)} videos done, {frames} frames in {wall:.1f} s "
              f"({frames / wall if wall else 0:.1f} frames/s) on {where}"
              + (f"; {failures} failed" if failures else ""), file=sys.stderr)  # fmt: skip
    return EXIT_FAILED if failures else EXIT_OK


class _Steps:
    """One line on stderr for each slow start-up step: ``camvideo: what ... detail, 4.2 s``.

    The line is begun when the step starts (so a slow start never looks hung) and ended with
    what came of it and the time it took; nothing at all with ``--quiet``.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.began: float | None = None

    def begin(self, what: str) -> None:
        self.close()
        self.began = time.monotonic()
        if self.enabled:
            print(f"camvideo: {what} ...", end="", file=sys.stderr, flush=True)

    def end(self, detail: str, seconds: float | None = None) -> None:
        if self.began is None:
            return
        took = time.monotonic() - self.began if seconds is None else seconds
        self.began = None
        if self.enabled:
            print(f" {detail}, {took:.1f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        """End a line left open (its step failed: the error follows on a line of its own)."""
        if self.began is not None:
            self.began = None
            if self.enabled:
                print(file=sys.stderr, flush=True)


def _describe(outcome) -> str:
    from ..distributed import url_name

    parts = f", {outcome.segments} segments" if outcome.segments else ""
    retried = f", {outcome.attempts} attempts" if outcome.attempts > 1 else ""
    name = outcome.video.input.name if isinstance(outcome.video.input, Path) else url_name(outcome.video.input)
    return (f"{name} -> {outcome.video.output}: {outcome.frames} frames in {outcome.wall:.1f} s "
            f"({outcome.fps:.1f} fps) on {','.join(outcome.nodes)}{parts}{retried}")  # fmt: skip


class _Progress:
    """Two tqdm bars on stderr, videos and frames, fed by the workers' progress events.

    The bars start once the workers have loaded the model: until then :class:`_Steps` says
    what is happening, on lines the bars would overwrite.
    """

    def __init__(self, videos: int, enabled: bool, steps: _Steps) -> None:
        self.count, self.enabled, self.steps = videos, enabled, steps
        self.videos = self.frames = None

    def event(self, kind: str, video: object, value: object) -> None:
        if kind == "loading":
            self.steps.begin(f"loading the model on {value} worker{'s' if value != 1 else ''}")
        elif kind == "loaded":
            devices = sorted(set(value["devices"]))
            self.steps.end(f"on {', '.join(devices)}", value["seconds"])
            if self.enabled:
                from tqdm import tqdm

                self.videos = tqdm(total=self.count, desc="videos", unit="video", position=0, file=sys.stderr)
                self.frames = tqdm(total=0, desc="frames", unit="frame", position=1, file=sys.stderr,
                                   dynamic_ncols=True)  # fmt: skip
        if self.frames is None:
            return
        if kind == "planned" and value:
            self.frames.total += int(value)
            self.frames.refresh()
        elif kind == "frames":
            self.frames.update(int(value))
        elif kind == "done":
            self.videos.update(1)

    def write(self, line: str, err: bool = False) -> None:
        if self.videos is not None:
            self.videos.write(line, file=sys.stderr if err else sys.stdout)
        else:
            print(line, file=sys.stderr if err else sys.stdout)

    def close(self) -> None:
        self.steps.close()
        for bar in (self.frames, self.videos):
            if bar is not None:
                bar.close()
        self.videos = self.frames = None
