"""``camvideo live``: check everything that can be checked without Qt, then open the app.

The source is opened here, before PyQt6 is imported, so a missing camera, an unreachable
stream or an unusable output path ends with one ``camvideo: error: ...`` line and no
window. Without a display (and no ``QT_QPA_PLATFORM`` set) the command says so instead of
letting Qt abort; so it does when a system library of Qt's platform plugin is missing
(:mod:`.desktop`), with the command that installs it, and when no X server answers at
``DISPLAY``.

The model loads in the background once the window is up (it shows a loading message;
loading takes seconds), except for a target given as a class name or index, which is
checked against the model's classes before any window opens. Each slow start-up step
prints one line on the terminal (stdout), so a start never looks hung.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import CamvideoError, OutputError
from .desktop import check_platform_libraries, check_x_display

EXIT_OK, EXIT_FAILED = 0, 1


def explicit_options(args: argparse.Namespace) -> frozenset[str]:
    """Names of the options given on the command line (they win over saved settings).

    argparse does not say which values are defaults; a value equal to the default counts
    as not given, which only matters when it also differs from the saved setting.
    """
    from .parser import build_parser

    defaults = vars(build_parser().parse_args(["live"]))
    return frozenset(name for name, value in vars(args).items() if name in defaults and value != defaults[name])


def check_display() -> None:
    """Fail early, with a way out, where Qt would find no display and abort."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return
    if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise CamvideoError(
                "no display to open the window on (DISPLAY and WAYLAND_DISPLAY are not set); run it on a desktop "
                "or with ssh -X, or set QT_QPA_PLATFORM=offscreen to run without a window (with --duration and "
                "--snapshot or --record)"
            )


def check_snapshot_path(path: Path) -> Path:
    if path.suffix.lower() != ".png":
        raise OutputError(f"{path}: snapshots are PNG images; give a name ending in .png")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name ending in .png")
    from ..sinks import check_output_folder

    check_output_folder(path)
    return path


def say(message: str) -> None:
    """One line about a slow start-up step, on the terminal."""
    print(f"camvideo live: {message}", flush=True)


def needs_class_names(target: str) -> bool:
    """Whether a target can only be checked against the model's classes (a name, an index)."""
    text = target.strip().lower()
    return not (text.startswith("top") and (text[3:] == "" or text[3:].isdigit()))


def run_live(args: argparse.Namespace) -> int:
    """Validate, open the source, then run the desktop app (the model loads in it); the exit code."""
    from ..sinks import check_recording_path

    snapshot = check_snapshot_path(Path(args.snapshot)) if args.snapshot else None
    record = check_recording_path(Path(args.record)) if args.record else None
    if snapshot is not None and record is not None and snapshot.absolute() == record.absolute():
        raise OutputError(f"{snapshot}: --snapshot and --record are the same file")
    check_display()
    check_platform_libraries()  # Qt would abort (SIGABRT) on a missing plugin library
    check_x_display()  # ... and on a DISPLAY where no X server answers
    started = time.monotonic()
    say("starting (loading torch) ...")
    from ..engine import Explainer
    from ..jobs import LiveOptions, target_of
    from ..sources import CameraSource, PacedFileSource, describe_spec, open_live_source, sample_video

    options = LiveOptions.from_args(args)
    kind = describe_spec(args.source) if args.source is not None else "default"
    what = {"default": "the first camera, else the sample", "sample": "the sample"}.get(
        kind, f"the {kind} {args.source}"
    )
    say(f"opening {what} ...")
    source = open_live_source(args.source, loop=args.loop)
    try:
        spec = args.source
        if spec is None:  # what was picked, so a model change can reopen the same thing
            if isinstance(source, CameraSource):
                spec = str(source.device)
            elif isinstance(source, PacedFileSource) and source.path == sample_video():
                spec = "sample"
        explainer = None
        if needs_class_names(options.target):  # a wrong class name fails now, before any window
            say(f"loading {options.model} to check the class {options.target!r} ...")
            explainer = Explainer.from_options(options.model_options())
            explainer.selector(target_of(options.target))
        try:
            from ui.app import run
            from ui.window import AppOptions
        except ImportError as err:
            raise CamvideoError(f"the desktop app cannot start: {err} (install PyQt6: pip install pyqt6)") from None
    except BaseException:
        source.close()
        raise
    say(f"opening the window ({time.monotonic() - started:.1f} s)")
    app = AppOptions(source=source, spec=spec, options=options, explainer=explainer, loop=args.loop,
                     duration=args.duration, snapshot=snapshot, record=record,
                     explicit=explicit_options(args), say=say)  # fmt: skip
    code = run(app)
    for message in dict.fromkeys(app.errors):  # each once, in order
        print(f"camvideo: error: {message}", file=sys.stderr)
    return code if code else (EXIT_FAILED if app.errors else EXIT_OK)
