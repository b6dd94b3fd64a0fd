"""``camvideo annotate --ray``: the same command, run by the workers of a Ray cluster.

Every other option means what it means locally; the outputs are the same files. The
driver (this process) loads no model: the workers do, once each. It shows a progress
bar over videos and frames fed by the workers, prints a line per video and a summary,
and appends one line per video to ``--manifest``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..errors import CamvideoError
from .parser import _nonneg_float, _positive_int

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """The ``annotate`` options of a cluster run."""
    group = parser.add_argument_group("cluster (Ray)")
    group.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                       help="run on a Ray cluster. ADDRESS: none (the cluster RAY_ADDRESS names, else a new local "
                       "one on 127.0.0.1), local, auto (the cluster this machine joined with `ray start`), "
                       "ray://HOST:10001 (Ray Client) or HOST:6379 (the head's GCS)")  # fmt: skip
    group.add_argument(
        "--ray-workers",
        type=_positive_int,
        metavar="N",
        help="worker actors, each holding the model [one per GPU, else one per CPU]",
    )
    group.add_argument(
        "--ray-dashboard", action="store_true", help="start Ray's dashboard (on 127.0.0.1) with the local cluster [off]"
    )
    group.add_argument("--segment-seconds", type=_nonneg_float, default=120.0, metavar="S",
                       help="with --ray, cut videos longer than S seconds at keyframes and annotate the pieces "
                       "in parallel; 0: never [%(default)s]")  # fmt: skip
    group.add_argument("--manifest", metavar="PATH.jsonl",
                       help="with --ray, append one line per video: input, output, frames, fps, worker node, "
                       "decoder, encoder, attempts, error")  # fmt: skip


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
    from ..distributed import ModelSpec, OverlaySpec, annotate_on_ray, ray_cluster
    from ..jobs import AnnotateSettings, resolve_hwaccel

    model = ModelSpec(args.model, args.method, args.layer, args.device, args.weights, args.precision, args.compile)
    overlay = OverlaySpec(args.colormap, args.alpha, args.boxes, args.labels, args.threshold, args.side_by_side,
                          min_score=args.min_score)  # fmt: skip
    manifest = Path(args.manifest) if args.manifest else None
    if manifest is not None and not manifest.absolute().parent.is_dir():
        raise CamvideoError(f"{manifest}: folder {manifest.absolute().parent} does not exist")
    # URLs travel as plain strings (the workers need not import the command line to read them).
    videos = [replace(v, input=str(v.input)) if isinstance(v.input, UrlInput) else v for v in videos]
    started = time.monotonic()
    with ray_cluster(args.ray or None, dashboard=args.ray_dashboard) as cluster:
        cuda = cluster.gpus > 0 and args.device != "cpu"
        settings = AnnotateSettings(target=args.target, smooth=args.smooth, batch_size=args.batch_size, crf=args.crf,
                                    preset=args.preset, overwrite=args.overwrite, hwaccel=resolve_hwaccel(args.hwaccel, cuda),
                                    encoder=args.encoder if args.encoder != "auto" or cuda else "libx264",
                                    static_batch=args.compile)  # fmt: skip
        progress = _Progress(len(videos), enabled=not args.quiet and sys.stderr.isatty())
        failures, frames, nodes = 0, 0, set()
        try:
            for outcome in annotate_on_ray(videos, settings, model=model, overlay=overlay, workers=args.ray_workers,
                                           segment_seconds=args.segment_seconds, manifest=manifest,
                                           on_event=progress.event):  # fmt: skip
                nodes.update(outcome.nodes)
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
            progress.close()
    wall = time.monotonic() - started
    if not args.quiet or failures:
        where = f"{cluster.nodes} node(s)" if not cluster.started_here else "a local cluster"
        print(f"camvideo: {len(videos) - failures} of {len(videos)} videos done, {frames} frames in {wall:.1f} s "
              f"({frames / wall if wall else 0:.1f} frames/s) on {where}"
              + (f"; {failures} failed" if failures else ""), file=sys.stderr)  # fmt: skip
    return EXIT_FAILED if failures else EXIT_OK


def _describe(outcome) -> str:
    from ..distributed import url_name

    parts = f", {outcome.segments} segments" if outcome.segments else ""
    retried = f", {outcome.attempts} attempts" if outcome.attempts > 1 else ""
    name = outcome.video.input.name if isinstance(outcome.video.input, Path) else url_name(outcome.video.input)
    return (f"{name} -> {outcome.video.output}: {outcome.frames} frames in {outcome.wall:.1f} s "
            f"({outcome.fps:.1f} fps) on {','.join(outcome.nodes)}{parts}{retried}")  # fmt: skip


class _Progress:
    """Two tqdm bars on stderr, videos and frames, fed by the workers' progress events."""

    def __init__(self, videos: int, enabled: bool) -> None:
        self.videos = self.frames = None
        if enabled:
            from tqdm import tqdm

            self.videos = tqdm(total=videos, desc="videos", unit="video", position=0, file=sys.stderr)
            self.frames = tqdm(total=0, desc="frames", unit="frame", position=1, file=sys.stderr, dynamic_ncols=True)

    def event(self, kind: str, video: object, value: object) -> None:
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
        for bar in (self.frames, self.videos):
            if bar is not None:
                bar.close()
        self.videos = self.frames = None
