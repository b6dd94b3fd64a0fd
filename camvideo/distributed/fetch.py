"""Inputs that are URLs: copied onto the shared file system by the worker that needs them.

``http(s)://`` and ``ftp://`` are read with the standard library; any other scheme
(``s3://``, ``gs://``, ``az://``, ...) through fsspec, when it and the scheme's package
(s3fs, gcsfs, ...) are installed on the workers. The copy is a hidden temporary file beside
the video's output (``.NAME.partial-input-*``), so a dead attempt's copy is removed like
its other partial files, and it is deleted when the video is done. Bytes are copied as
they are: the decoder and the audio remux see exactly the remote file.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ..errors import InputError

_STDLIB_SCHEMES = ("http", "https", "ftp")
_CHUNK = 1 << 20


def is_url(item: object) -> bool:
    """Whether a video's input is a URL (``scheme://...``) rather than a path."""
    return isinstance(item, str) and "://" in item


def url_name(url: str) -> str:
    """The file name a URL ends in (``clip.mp4`` of ``s3://bucket/videos/clip.mp4?x=1``)."""
    return PurePosixPath(urllib.parse.urlparse(url).path).name or "video"


def fetch(url: str, beside: Path) -> Path:
    """Copy ``url`` into a new hidden file in ``beside``'s folder; InputError if it cannot be read."""
    suffix = PurePosixPath(url_name(url)).suffix
    handle, name = tempfile.mkstemp(
        prefix=f".{beside.name}.partial-input-", suffix=suffix, dir=beside.absolute().parent
    )
    target = Path(name)
    try:
        with open(handle, "wb") as out, _open(url) as remote:
            shutil.copyfileobj(remote, out, _CHUNK)
    except BaseException as err:
        target.unlink(missing_ok=True)
        if isinstance(err, (OSError, ValueError, ImportError)):
            raise InputError(f"{url}: cannot be read ({' '.join(str(err).split())[:200]})") from err
        raise
    if target.stat().st_size == 0:
        target.unlink(missing_ok=True)
        raise InputError(f"{url}: is empty (0 bytes)")
    return target


def _open(url: str):
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme in _STDLIB_SCHEMES:
        return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - the user's own input
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            f"{scheme}:// needs fsspec on the workers (pip install fsspec and its {scheme} package)"
        ) from None
    return fsspec.open(url, "rb").open()
