"""The bundled sample videos (installed inside the package, or in a source checkout)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

DEFAULT_SAMPLE = "big_buck_bunny.mp4"


def sample_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # camvideo/
    # Installed: the wheel puts the clips in camvideo/sample_videos; in a clone they are beside it.
    for folder in (package / "sample_videos", package.parent / "sample_videos"):
        if folder.is_dir():
            return folder
    raise InputError("the bundled sample videos are missing from this installation; give a video file")


def sample_video(name: str = DEFAULT_SAMPLE) -> Path:
    """Path of a bundled sample clip (default: the Big Buck Bunny excerpt)."""
    path = sample_dir() / name
    if not path.is_file():
        raise InputError(f"no bundled sample named {name!r}")
    return path
