"""``camvideo live``: check everything that can be checked without Qt, then open the app.

The source is opened and the model loaded here, before PyQt6 is imported, so a
missing camera, an unreachable stream, a wrong class name or an unusable output path
ends with one ``camvideo: error: ...`` line and no window. Without a display (and no
``QT_QPA_PLATFORM`` set) the command says so instead of letting Qt abort; so it does
when a system library of Qt's platform plugin is missing (:mod:`.desktop`), with the
command that installs it, and when no X server answers at ``DISPLAY``.
"""

from __future__ import annotations

import argparse
import os
import sys
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


def run_live(args: argparse.Namespace) -> int:
    """Validate, open the source, load the model, then run the desktop app; the exit code."""
    from ..engine import Explainer
    from ..jobs import LiveOptions, target_of
    from ..sinks import check_recording_path
    from ..sources import CameraSource, PacedFileSource, open_live_source, sample_video

    options = LiveOptions.from_args(args)
    snapshot = check_snapshot_path(Path(args.snapshot)) if args.snapshot else None
    record = check_recording_path(Path(args.record)) if args.record else None
    if snapshot is not None and record is not None and snapshot.absolute() == record.absolute():
        raise OutputError(f"{snapshot}: --snapshot and --record are the same file")
    check_display()
    check_platform_libraries()  # Qt would abort (SIGABRT) on a missing plugin library
    check_x_display()  # ... and on a DISPLAY where no X server answers
    source = open_live_source(args.source, loop=args.loop)
    try:
        spec = args.source
        if spec is None:  # what was picked, so a model change can reopen the same thing
            if isinstance(source, CameraSource):
                spec = str(source.device)
            elif isinstance(source, PacedFileSource) and source.path == sample_video():
                spec = "sample"
        explainer = Explainer.from_options(options.model_options())
        explainer.selector(target_of(options.target))  # a wrong class name fails now
        try:
            from ui.app import run
            from ui.window import AppOptions
        except ImportError as err:
            raise CamvideoError(f"the desktop app cannot start: {err} (install PyQt6: pip install pyqt6)") from None
    except BaseException:
        source.close()
        raise
    app = AppOptions(source=source, spec=spec, options=options, explainer=explainer, loop=args.loop,
                     duration=args.duration, snapshot=snapshot, record=record,
                     explicit=explicit_options(args))  # fmt: skip
    code = run(app)
    for message in dict.fromkeys(app.errors):  # each once, in order
        print(f"camvideo: error: {message}", file=sys.stderr)
    return code if code else (EXIT_FAILED if app.errors else EXIT_OK)
