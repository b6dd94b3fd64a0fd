"""The compiled-model cache (issue 18 item 3): atomic entries under concurrent builders, a
truncated or unreadable entry rebuilt with one note, a weights change that makes a new key,
a cache folder that cannot be written, and ``camvideo cache`` (list, --clear)."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from camvideo.compiled_cache import (
    MANIFEST_NAME,
    TMP_PREFIX,
    CacheKey,
    cache_dir,
    cached_entry,
    clear,
    list_entries,
)  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent
BLOB = "model.bin"
BLOB_BYTES = 4 << 20  # a few MB, written in chunks
KEY = CacheKey("efficientnet_lite0", "ab" * 32, "features.6", (224, 398), "openvino", "2026.4.1")


def expected_blob(tag: int) -> bytes:
    """The bytes builder ``tag`` writes (the test's own reference)."""
    return np.random.default_rng(tag).integers(0, 256, BLOB_BYTES, dtype=np.uint8).tobytes()


def read_blob(folder: Path) -> bytes:
    return (folder / BLOB).read_bytes()


class Builder:
    """A build function that writes ``expected_blob(tag)`` and counts its calls."""

    def __init__(self, tag: int = 1) -> None:
        self.tag = tag
        self.calls = 0

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / BLOB).write_bytes(expected_blob(self.tag))
        (folder / "meta.txt").write_text(f"builder {self.tag}\n")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CAMVIDEO_CACHE_DIR", str(cache))
    return cache


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMVIDEO_CACHE_DIR", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("CAMVIDEO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "camvideo" / "compiled"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec says to ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "camvideo" / "compiled"


def test_key_digest_covers_every_field() -> None:
    others = [
        CacheKey("resnet50", KEY.weights, KEY.layer, KEY.input_size, KEY.backend, KEY.version),
        CacheKey(KEY.model, "cd" * 32, KEY.layer, KEY.input_size, KEY.backend, KEY.version),
        CacheKey(KEY.model, KEY.weights, "features.5", KEY.input_size, KEY.backend, KEY.version),
        CacheKey(KEY.model, KEY.weights, KEY.layer, (398, 224), KEY.backend, KEY.version),
        CacheKey(KEY.model, KEY.weights, KEY.layer, KEY.input_size, "onnxruntime", KEY.version),
        CacheKey(KEY.model, KEY.weights, KEY.layer, KEY.input_size, KEY.backend, "2026.4.2"),
    ]
    digests = {KEY.digest(), *(key.digest() for key in others)}
    assert len(digests) == 1 + len(others)
    # stable: the same fields give the same digest (a fresh object, a list input size)
    same = CacheKey.from_fields(KEY.fields())
    assert same.digest() == KEY.digest()
    assert KEY.entry_name() == f"efficientnet_lite0-224x398-openvino-{KEY.digest()[:16]}"
    assert (
        CacheKey("timm:vit/b", "0", "x", (8, 9), "onnx runtime", "1")
        .entry_name()
        .startswith("timm_vit_b-8x9-onnx_runtime-")
    )


def test_build_once_then_load_and_manifest(folder: Path) -> None:
    build = Builder(7)
    first = cached_entry(KEY, build, read_blob)
    second = cached_entry(KEY, build, read_blob)
    assert build.calls == 1
    assert first == second == expected_blob(7)
    entry = folder / KEY.entry_name()
    import json

    manifest = json.loads((entry / MANIFEST_NAME).read_text())
    assert manifest["key"]["weights"] == KEY.weights and manifest["key"]["input_size"] == [224, 398]
    assert manifest["files"][BLOB]["size"] == BLOB_BYTES
    assert manifest["files"][BLOB]["sha256"] == hashlib.sha256(expected_blob(7)).hexdigest()
    assert [p.name for p in folder.iterdir()] == [entry.name]  # no temporary folder left


# -- two processes filling one entry at once ------------------------------------------------------


def _fill(cache: str, tag: int, barrier, results) -> None:
    """A child process: build the entry (slowly, meeting the other builder half-way) and
    report what it loaded."""
    os.environ["CAMVIDEO_CACHE_DIR"] = cache

    def build(folder: Path) -> None:
        data = expected_blob(tag)
        half = len(data) // 2
        with open(folder / BLOB, "wb") as stream:
            for start in range(0, half, 1 << 18):
                stream.write(data[start : start + (1 << 18)])
            stream.flush()
            barrier.wait(120)  # both builders are now inside build(), each half-way through its file
            for start in range(half, len(data), 1 << 18):
                stream.write(data[start : start + (1 << 18)])
        (folder / "meta.txt").write_text(f"builder {tag}\n")

    loaded = cached_entry(KEY, build, lambda entry: (read_blob(entry), (entry / "meta.txt").read_text()))
    results.put((tag, hashlib.sha256(loaded[0]).hexdigest(), loaded[1]))


def test_two_processes_filling_one_entry_at_once(folder: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    children = [context.Process(target=_fill, args=(str(folder), tag, barrier, results)) for tag in (1, 2)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=240) for _ in children]
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert not barrier.broken  # both really built at the same time
    # both loaded the same entry: the winner's, complete, exactly as its builder wrote it
    winners = {meta for _, _, meta in outcomes}
    assert len(winners) == 1
    winner = int(winners.pop().split()[1])
    reference = hashlib.sha256(expected_blob(winner)).hexdigest()
    assert [digest for _, digest, _ in outcomes] == [reference, reference]
    entry = folder / KEY.entry_name()
    assert (entry / BLOB).read_bytes() == expected_blob(winner)  # read back independently
    assert sorted(p.name for p in folder.iterdir()) == [entry.name]  # the loser's build was discarded
    assert sorted(p.name for p in entry.iterdir()) == sorted([BLOB, "meta.txt", MANIFEST_NAME])


# -- a corrupt or stale entry ---------------------------------------------------------------------


def test_truncated_entry_is_rebuilt_with_one_note(folder: Path, capfd: pytest.CaptureFixture[str]) -> None:
    build = Builder(3)
    cached_entry(KEY, build, read_blob)
    blob = folder / KEY.entry_name() / BLOB
    with open(blob, "r+b") as stream:  # cut in half, as a killed copy or a full disk would
        stream.truncate(BLOB_BYTES // 2)
    capfd.readouterr()
    loaded = cached_entry(KEY, build, read_blob)
    err = capfd.readouterr().err
    assert build.calls == 2
    assert loaded == expected_blob(3) and blob.read_bytes() == expected_blob(3)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"camvideo: compiled model cache entry {KEY.entry_name()} was unreadable (")
    assert f"{BLOB_BYTES // 2} bytes, {BLOB_BYTES} expected" in lines[0] and lines[0].endswith("; rebuilding")
    assert [p.name for p in folder.iterdir()] == [KEY.entry_name()]


def test_changed_content_of_the_same_size_is_detected(folder: Path) -> None:
    build = Builder(4)
    cached_entry(KEY, build, read_blob)
    blob = folder / KEY.entry_name() / BLOB
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))  # same size, new mtime: the content hash is checked
    notes: list[str] = []
    assert cached_entry(KEY, build, read_blob, note=notes.append) == expected_blob(4)
    assert build.calls == 2 and len(notes) == 1 and "has changed" in notes[0]


def test_an_entry_its_loader_refuses_is_rebuilt(folder: Path) -> None:
    """A stale format the runtime rejects: the manifest is fine, load raises once."""
    cached_entry(KEY, lambda f: (f / BLOB).write_bytes(b"OLD FORMAT"), read_blob)

    def load(entry: Path) -> bytes:
        data = read_blob(entry)
        if data.startswith(b"OLD"):
            raise ValueError("unsupported IR version 10\n(expected 11)")
        return data

    build = Builder(5)
    notes: list[str] = []
    assert cached_entry(KEY, build, load, note=notes.append) == expected_blob(5)
    assert build.calls == 1
    assert notes == [f"camvideo: compiled model cache entry {KEY.entry_name()} was unreadable "
                     "(ValueError: unsupported IR version 10 (expected 11)); rebuilding"]  # fmt: skip
    assert cached_entry(KEY, build, load, note=notes.append) == expected_blob(5) and len(notes) == 1


# -- the weights are part of the key --------------------------------------------------------------


def test_changed_weights_make_a_new_entry(folder: Path) -> None:
    import copy

    import torch

    from camvideo.engine.cache import weights_digest

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(5, 2))
    twin = copy.deepcopy(net)
    changed = copy.deepcopy(net)
    with torch.no_grad():
        changed[0].weight[1, 2, 0, 1] += 1e-6  # one weight, a tiny change
    assert weights_digest(net) == weights_digest(twin)
    assert weights_digest(net) != weights_digest(changed)
    renamed = torch.nn.Sequential(copy.deepcopy(net[1]), copy.deepcopy(net[0]), copy.deepcopy(net[2]))
    assert weights_digest(renamed) != weights_digest(net)  # the names count, not only the bytes

    def key(model: torch.nn.Module) -> CacheKey:
        return CacheKey("tiny", weights_digest(model), "0", (32, 32), "onnxruntime", "1.32.0")

    # what each build compiles: the weights as they were (the test's own record, not the cache's)
    def build_from(model: torch.nn.Module):
        def build(entry: Path) -> None:
            (entry / BLOB).write_bytes(model[0].weight.detach().numpy().tobytes())

        return build

    first = cached_entry(key(net), build_from(net), read_blob)
    again = cached_entry(key(twin), build_from(twin), read_blob)  # the same weights: reused
    second = cached_entry(key(changed), build_from(changed), read_blob)
    assert first == again == net[0].weight.detach().numpy().tobytes()
    assert second == changed[0].weight.detach().numpy().tobytes() != first
    assert len(list_entries()) == 2


# -- a cache folder that cannot be written --------------------------------------------------------


def test_unwritable_cache_folder_builds_in_a_temporary_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CAMVIDEO_CACHE_DIR", str(blocker / "cache"))  # cannot be created, even by root
    build = Builder(6)
    notes: list[str] = []
    places: list[Path] = []

    def load(entry: Path) -> bytes:
        places.append(entry)
        return read_blob(entry)

    assert cached_entry(KEY, build, load, note=notes.append) == expected_blob(6)
    assert cached_entry(KEY, build, load, note=notes.append) == expected_blob(6)
    assert build.calls == 2
    assert len(notes) == 1 and notes[0].startswith(
        f"camvideo: cannot write the compiled model cache {blocker / 'cache'} ("
    )
    assert all(not str(p).startswith(str(blocker)) for p in places)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("how", ["chmod", "erofs"])
def test_read_only_cache_folder_still_loads_its_entries(
    folder: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = Builder(8)
    cached_entry(KEY, build, read_blob)
    if how == "chmod":
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        folder.chmod(0o555)
    else:  # a read-only mount, which root cannot write either
        real_mkdtemp = tempfile.mkdtemp

        def mkdtemp(*args, **kwargs):
            if kwargs.get("dir") is not None and Path(kwargs["dir"]) == folder:
                raise OSError(errno.EROFS, "Read-only file system", str(folder))
            return real_mkdtemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    others = [CacheKey(name, KEY.weights, KEY.layer, KEY.input_size, KEY.backend, KEY.version) for name in ("a", "b")]
    try:
        notes: list[str] = []
        assert cached_entry(KEY, build, read_blob, note=notes.append) == expected_blob(8)  # read, not rebuilt
        assert build.calls == 1 and notes == []
        for calls, key in enumerate(others, start=2):
            assert cached_entry(key, build, read_blob, note=notes.append) == expected_blob(8)
            assert build.calls == calls
        assert len(notes) == 1 and notes[0].startswith(f"camvideo: cannot write the compiled model cache {folder} (")
        assert [p.name for p in folder.iterdir()] == [KEY.entry_name()]
    finally:
        folder.chmod(0o755)


def test_leftovers_of_killed_builds_are_cleaned_after_an_hour(folder: Path) -> None:
    folder.mkdir()
    old = folder / f"{TMP_PREFIX}killed"
    young = folder / f"{TMP_PREFIX}building"
    for path in (old, young):
        path.mkdir()
        (path / BLOB).write_bytes(b"x" * 1000)
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    cached_entry(KEY, Builder(9), read_blob)
    assert not old.exists() and young.is_dir()  # another process may still be building there


# -- camvideo cache -------------------------------------------------------------------------------


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    code = "import sys\nfrom camvideo.cli import main\nrc = main(sys.argv[1:])\nprint('torch loaded:', 'torch' in sys.modules)\nsys.exit(rc)"  # noqa: E501
    env = {**os.environ, "CAMVIDEO_CACHE_DIR": str(folder)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)  # fmt: skip


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_cli_lists_and_clears(folder: Path) -> None:
    cached_entry(KEY, Builder(10), read_blob)
    small = CacheKey("resnet50", "cd" * 32, "layer4", (224, 224), "onnxruntime", "1.32.0")
    cached_entry(small, lambda f: (f / BLOB).write_bytes(b"y" * 5000), read_blob)
    total = folder_bytes(folder)
    (folder / "notes.txt").write_text("the user's file")  # not an entry: neither listed nor removed

    listed = run_cli(folder, "cache")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[-1] == "torch loaded: False"
    rows = {line.split()[0]: line.split() for line in lines[1:-2]}
    assert set(rows) == {KEY.entry_name(), small.entry_name()}
    big_row = rows[KEY.entry_name()]
    assert big_row[1:5] == ["efficientnet_lite0", "224x398", "openvino", "2026.4.1"]
    assert big_row[5:7] == [f"{folder_bytes(folder / KEY.entry_name()) / 1e6:.1f}", "MB"]
    assert rows[small.entry_name()][1:5] == ["resnet50", "224x224", "onnxruntime", "1.32.0"]
    assert lines[-2] == f"2 entries, {total / 1e6:.1f} MB in {folder}"

    cleared = run_cli(folder, "cache", "--clear")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.splitlines()[0] == f"removed 2 entries ({total / 1e6:.1f} MB) from {folder}"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert list_entries() == [] and clear() == (0, 0)

    empty = run_cli(folder, "cache")
    assert empty.returncode == 0 and empty.stdout.splitlines()[0] == f"no compiled models cached in {folder}"


def test_cli_bad_use_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli(blocker, "cache")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [f"camvideo: error: {blocker}: the compiled model cache is not a folder "
                                          "(see CAMVIDEO_CACHE_DIR)"]  # fmt: skip
    assert blocker.read_text() == "x"
    extra = run_cli(tmp_path, "cache", "now")
    assert extra.returncode == 2 and "unrecognized arguments: now" in extra.stderr.splitlines()[-1]
    assert "Traceback" not in extra.stderr
