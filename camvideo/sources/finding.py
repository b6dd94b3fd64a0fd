"""Which files a run annotates: the command line's inputs, folders expanded."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from ..errors import InputError

__all__ = ["VIDEO_EXTENSIONS", "find_videos"]

#: File name suffixes (lower case) that :func:`find_videos` picks up inside a folder.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".wmv", ".asf", ".flv", ".f4v",
        ".mpg", ".mpeg", ".m2v", ".ts", ".mts", ".m2ts", ".vob", ".3gp", ".3g2", ".ogv",
        ".mxf", ".dv", ".y4m", ".divx", ".rm", ".rmvb",
    }
)  # fmt: skip


def find_videos(inputs: Sequence[str | PathLike]) -> list[Path]:
    """Expand command-line inputs into a list of video files.

    A file is taken as given, whatever its extension (:class:`FileSource` decides
    later whether it is a video). A folder contributes every non-hidden file directly
    inside it whose suffix is in :data:`VIDEO_EXTENSIONS`, sorted by name; hidden files
    are skipped so half-written ``.NAME.partial-*.mp4`` outputs are never re-read.
    Duplicates are dropped, first occurrence wins.

    Raises:
        InputError: a path does not exist, or a folder holds no video file.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            videos = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
            )
            if not videos:
                exts = " ".join(sorted(VIDEO_EXTENSIONS)[:8])
                raise InputError(f"{path}: folder holds no video file (looked for {exts} ...)")
        elif path.exists():
            videos = [path]
        elif "://" in str(item):
            # Never opened here: a URL is only read when given to `camvideo live` as its source.
            raise InputError(f"{item}: not a file; annotate reads video files (open streams with `camvideo live URL`)")
        else:
            raise InputError(f"{path}: no such file or folder")
        for video in videos:
            key = video.resolve()
            if key not in seen:
                seen.add(key)
                found.append(video)
    return found
