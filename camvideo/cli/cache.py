"""``camvideo cache``: list the compiled-model cache, or ``--clear`` it.

Reads only the filesystem (:mod:`camvideo.compiled_cache`), so it starts without torch.
"""

from __future__ import annotations

import argparse
import time

from ..compiled_cache import cache_dir, clear, list_entries
from ..errors import OutputError

__all__ = ["run_cache"]


def run_cache(args: argparse.Namespace) -> int:
    folder = cache_dir()
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: the compiled model cache is not a folder (see CAMVIDEO_CACHE_DIR)")
    if args.clear:
        try:
            removed, freed = clear()
        except OSError as err:
            raise OutputError(f"{folder}: cannot clear the compiled model cache ({err.strerror or err})") from None
        print(f"removed {removed} {'entry' if removed == 1 else 'entries'} ({human_size(freed)}) from {folder}")
        return 0
    entries = list_entries()
    if not entries:
        print(f"no compiled models cached in {folder}")
        return 0
    rows = [("NAME", "MODEL", "INPUT", "BACKEND", "SIZE", "AGE")]
    now = time.time()
    for entry in entries:
        key = entry.key
        model, size, backend = ("?", "?", "? (unreadable manifest)") if key is None else (
            key.model, f"{key.input_size[0]}x{key.input_size[1]}", f"{key.backend} {key.version}")  # fmt: skip
        rows.append((entry.name, model, size, backend, human_size(entry.size), human_age(now - entry.mtime)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)) + "  " + row[-1])
    total = sum(entry.size for entry in entries)
    print(f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}, {human_size(total)} in {folder}")
    return 0


def human_size(size: int) -> str:
    """Bytes in MB with one decimal (compiled models are megabytes)."""
    return f"{size / 1e6:.1f} MB"


def human_age(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
