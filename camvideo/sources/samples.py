"""The bundled sample videos (installed inside the package, or in a source checkout)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

#: The clip ``camvideo annotate`` and ``camvideo live sample`` use: ImageNet objects the
#: model recognises (a cat, then a cup of coffee; CC0 photos) with a generated CC0
#: soundtrack, so the first run shows tight boxes, real confidences and kept audio.
#: ``big_buck_bunny.mp4`` (real footage, but no ImageNet class fits a cartoon rabbit) stays.
DEFAULT_SAMPLE = "cat_and_coffee_narrated.mp4"


def sample_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # camvideo/
    # Installed: the wheel puts the clips in camvideo/sample_videos; in a clone they are beside it.
    for folder in (package / "sample_videos", package.parent / "sample_videos"):
        if folder.is_dir():
            return folder
    raise InputError("the bundled sample videos are missing from this installation; give a video file")


def sample_video(name: str = DEFAULT_SAMPLE) -> Path:
    """Path of a bundled sample clip (default: :data:`DEFAULT_SAMPLE`, the narrated cat clip)."""
    path = sample_dir() / name
    if not path.is_file():
        raise InputError(f"no bundled sample named {name!r}")
    return path
