"""The compiled-model cache on disk: its folder, keys, atomic entries, listing and clearing.

Torch-free, so that ``camvideo cache`` lists and clears without loading torch; the engine's
:mod:`camvideo.engine.cache` adds the weights hash (which needs torch) and is what the
backends import.

An entry is a folder under :func:`cache_dir` named after its key
(``efficientnet_lite0-224x398-openvino-<hash16>``). It is built in a temporary folder beside
it (same filesystem), finished with a manifest (the key, each file's size, mtime and sha256)
and renamed into place in one step, so that another process or Ray worker sees either no
entry or a complete one, never a half-written file.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "MANIFEST_NAME", "STALE_TMP_SECONDS", "TMP_PREFIX", "CacheEntry", "CacheKey", "cache_dir", "cached_entry",
    "clear", "list_entries",
]  # fmt: skip

T = TypeVar("T")

#: The manifest inside each entry; written last, so its presence marks a finished build.
MANIFEST_NAME = "camvideo-cache-entry.json"
#: Temporary build folders (and entries being removed) start with this; never listed as entries.
TMP_PREFIX = ".camvideo-tmp-"
#: A temporary folder older than this belongs to a process that was killed mid-build.
STALE_TMP_SECONDS = 3600.0
#: Bumped when the manifest's layout changes: an entry of another format is rebuilt.
MANIFEST_FORMAT = 1

_HASH_CHUNK = 1 << 20
_warned_unwritable: set[str] = set()  # one note per folder and process


def cache_dir() -> Path:
    """The cache folder: ``$CAMVIDEO_CACHE_DIR``, else ``$XDG_CACHE_HOME/camvideo/compiled``,
    else ``~/.cache/camvideo/compiled``. Not created here."""
    explicit = os.environ.get("CAMVIDEO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # the XDG spec says to ignore a relative path
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "camvideo" / "compiled"


@dataclass(frozen=True)
class CacheKey:
    """What a compiled model depends on. ``weights``: the weights' content hash
    (:func:`camvideo.engine.cache.weights_digest`); ``input_size``: (height, width);
    ``version``: whatever changes the compiled files (the runtime's version, the exporter's)."""

    model: str
    weights: str
    layer: str
    input_size: tuple[int, int]
    backend: str
    version: str

    def fields(self) -> dict[str, object]:
        """The key as JSON-ready values (the input size as a list)."""
        values = asdict(self)
        values["input_size"] = [int(n) for n in self.input_size]
        return values

    def digest(self) -> str:
        """A stable sha256 hex over every field."""
        text = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def entry_name(self) -> str:
        """The entry's folder name: readable prefix, then 16 hex digits of :meth:`digest`."""
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model)[:60] or "model"
        backend = re.sub(r"[^A-Za-z0-9._-]+", "_", self.backend)[:30] or "backend"
        height, width = self.input_size
        return f"{model}-{int(height)}x{int(width)}-{backend}-{self.digest()[:16]}"

    @classmethod
    def from_fields(cls, values: dict[str, object]) -> CacheKey:
        """The inverse of :meth:`fields` (raises KeyError/TypeError/ValueError on a bad manifest)."""
        height, width = values["input_size"]  # type: ignore[misc]
        return cls(str(values["model"]), str(values["weights"]), str(values["layer"]), (int(height), int(width)),
                   str(values["backend"]), str(values["version"]))  # fmt: skip


@dataclass(frozen=True)
class CacheEntry:
    """One entry as listed: ``key`` is None when its manifest cannot be read; ``size`` in bytes;
    ``mtime``: when it was built (the manifest's mtime, seconds since the epoch)."""

    name: str
    path: Path
    key: CacheKey | None
    size: int
    mtime: float


def cached_entry(key: CacheKey, build: Callable[[Path], None], load: Callable[[Path], T], *,
                 note: Callable[[str], None] | None = None) -> T:  # fmt: skip
    """``load(entry)`` of the cache entry for ``key``, built first with ``build(folder)`` when
    there is none.

    ``build`` writes its files into the empty folder it is given; ``load`` reads the folder and
    returns the usable object. A complete entry (its manifest matches the key and every file's
    size) is loaded; one that fails the check or whose ``load`` raises (a truncated file, a
    stale format) is removed and rebuilt after one line through ``note`` (default: stderr).
    Content hashes are checked only for a file whose mtime differs from the manifest's: sizes
    catch a truncation, and hashing every file on every start would cost ~12 ms for Lite0's
    20 MB and ~60 ms for ResNet-50's 100 MB here (sha256 at ~1.7 GB/s).

    Two processes building the same entry at once both finish; the first rename wins and
    the other discards its own and loads the winner's. Where the cache folder cannot be
    created or written (a read-only home), the model is built into a temporary folder
    (removed at exit) and loaded from there, with one note per folder and process. An
    exception from ``build``, or from ``load`` on a fresh build, propagates (the caller falls
    back to torch); nothing half-built is left in the cache.
    """
    say = note if note is not None else _print_note
    folder = cache_dir()
    entry = folder / key.entry_name()
    if entry.is_dir():
        problem = _problem(entry, key)
        if problem is None:
            try:
                return load(entry)
            except Exception as err:  # a corrupt file the runtime refuses, a stale format
                problem = _one_line(err)
        say(f"camvideo: compiled model cache entry {entry.name} was unreadable ({problem}); rebuilding")
        _remove(entry)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _clean_stale(folder)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{entry.name}-", dir=folder))
    except OSError as err:
        if str(folder) not in _warned_unwritable:
            _warned_unwritable.add(str(folder))
            say(f"camvideo: cannot write the compiled model cache {folder} ({_one_line(err)}); "
                "compiling into a temporary folder")  # fmt: skip
        return _build_and_load(Path(tempfile.mkdtemp(prefix="camvideo-compiled-")), key, build, load)
    try:
        build(tmp)
        _write_manifest(tmp, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.rename(tmp, entry)  # atomic; fails when another process placed the entry first
    except OSError:
        if entry.is_dir() and _problem(entry, key) is None:
            shutil.rmtree(tmp, ignore_errors=True)
            return load(entry)
        _remove_at_exit(tmp)  # cannot place ours and theirs is unusable: use ours where it is
        return load(tmp)
    return load(entry)


def list_entries() -> list[CacheEntry]:
    """The entries in :func:`cache_dir`, by name; temporary build folders are not listed.
    Only folders holding a cache manifest count, so a cache folder pointed at the wrong place
    lists (and :func:`clear` removes) nothing of the user's."""
    folder = cache_dir()
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(folder.iterdir()):
        manifest = path / MANIFEST_NAME
        if path.name.startswith(TMP_PREFIX) or not path.is_dir() or not manifest.is_file():
            continue
        try:
            key: CacheKey | None = CacheKey.from_fields(json.loads(manifest.read_text(encoding="utf-8"))["key"])
        except (OSError, ValueError, KeyError, TypeError):
            key = None
        try:
            mtime = manifest.stat().st_mtime
        except OSError:  # removed meanwhile
            continue
        entries.append(CacheEntry(path.name, path, key, _folder_size(path), mtime))
    return entries


def clear() -> tuple[int, int]:
    """Remove every entry and every stale temporary folder; returns (entries, bytes) removed.
    A temporary folder younger than :data:`STALE_TMP_SECONDS` is another process's build in
    progress and is left alone. Raises OSError when an entry cannot be removed."""
    removed = freed = 0
    for entry in list_entries():
        _remove(entry.path, strict=True)
        removed += 1
        freed += entry.size
    folder = cache_dir()
    if folder.is_dir():
        freed += _clean_stale(folder)
    return removed, freed


def _build_and_load(folder: Path, key: CacheKey, build: Callable[[Path], None], load: Callable[[Path], T]) -> T:
    _remove_at_exit(folder)
    build(folder)
    return load(folder)


def _write_manifest(folder: Path, key: CacheKey) -> None:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        files[path.relative_to(folder).as_posix()] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                                      "sha256": _file_sha256(path)}  # fmt: skip
    manifest = {"format": MANIFEST_FORMAT, "key": key.fields(), "files": files, "created": time.time()}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _problem(entry: Path, key: CacheKey) -> str | None:
    """Why ``entry`` cannot be used for ``key``, or None when it is complete."""
    try:
        manifest = json.loads((entry / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest"
    except (OSError, ValueError) as err:
        return f"manifest: {_one_line(err)}"
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return "an older cache format"
    if manifest.get("key") != key.fields():
        return "its manifest names another key"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return "its manifest lists no files"
    for name, recorded in files.items():
        path = entry / name
        try:
            stat = path.stat()
            if stat.st_size != recorded["size"]:
                return f"{name} is {stat.st_size} bytes, {recorded['size']} expected"
            if stat.st_mtime_ns != recorded["mtime_ns"] and _file_sha256(path) != recorded["sha256"]:
                return f"{name} has changed since it was written"
        except FileNotFoundError:
            return f"{name} is missing"
        except (OSError, KeyError, TypeError) as err:
            return f"{name}: {_one_line(err)}"
    return None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _remove(path: Path, strict: bool = False) -> None:
    """Take ``path`` out of the cache in one step (a rename), then delete it; another process
    then never loads a half-deleted entry. ``strict``: raise when it cannot be removed."""
    doomed = path.with_name(f"{TMP_PREFIX}removed-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return  # another process removed it first
    except OSError:
        if strict:
            raise
        return
    shutil.rmtree(doomed, ignore_errors=not strict)


def _clean_stale(folder: Path) -> int:
    """Remove the temporary folders of killed processes; returns the bytes freed."""
    freed = 0
    now = time.time()
    for path in folder.glob(f"{TMP_PREFIX}*"):
        try:
            if now - path.stat().st_mtime < STALE_TMP_SECONDS or not path.is_dir():
                continue
        except OSError:
            continue
        size = _folder_size(path)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            freed += size
    return freed


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _remove_at_exit(folder: Path) -> None:
    atexit.register(shutil.rmtree, folder, True)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _print_note(message: str) -> None:
    print(message, file=sys.stderr)
