"""Fuzzing the decode → engine → encode path with mutated containers (hypothesis).

A small valid MP4 is mutated (bit flips, byte runs, truncations, chunks spliced in, moved
or deleted) and annotated with the real :class:`FileSource`, pipeline and
:class:`Mp4Sink` (a tiny model stands for the engine). The only acceptable outcomes:

* a finished MP4 that PyAV decodes, with as many frames as were written, or
* a :class:`~camvideo.errors.CamvideoError` (one line) and no output;

never another exception, a stall, a hang or a temporary file left behind.

The CI run is bounded (``FUZZ_EXAMPLES``, derandomised so it is the same every time);
for longer runs::

    CAMVIDEO_FUZZ_EXAMPLES=5000 CAMVIDEO_FUZZ_RANDOM=1 python -m pytest tests/test_fuzz.py -s
    python benchmarks/fuzz_atheris.py -max_total_time=3600     # coverage-guided, atheris

Every crash found this way is pinned below with ``@example`` (see ``REGRESSIONS``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import av
import corpus
import pytest
from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from camvideo.errors import CamvideoError
from camvideo.jobs import AnnotateSettings, annotate_video
from camvideo.pipeline import StageStalled
from camvideo.render import Renderer
from camvideo.sources import FileSource

SEED = corpus.small_mp4(n=6, size=(32, 24), gop=3)
FUZZ_EXAMPLES = int(os.environ.get("CAMVIDEO_FUZZ_EXAMPLES", "150"))
RANDOM = bool(os.environ.get("CAMVIDEO_FUZZ_RANDOM"))
PER_INPUT_LIMIT = 20.0  # s: a 6-frame 32x24 clip takes about 0.1 s; far more is a hang

# -- mutations ---------------------------------------------------------------------------------------

positions = st.integers(0, len(SEED) - 1)
mutation = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(0, 7)),
    st.tuples(st.just("set"), positions, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("delete"), positions, st.integers(1, 256)),
    st.tuples(st.just("splice"), positions, positions, st.integers(1, 512)),  # copy a chunk over another place
    st.tuples(st.just("insert"), positions, positions, st.integers(1, 512)),  # copy a chunk in (sizes shift)
    st.tuples(
        st.just("box"),
        st.sampled_from([b"moov", b"trak", b"mdia", b"stsz", b"stco", b"stts", b"avcC", b"mdat"]),
        st.integers(0, 2**32 - 1),
    ),  # an atom's size field set to anything  # fmt: skip
)


def mutate(data: bytes, steps) -> bytes:
    buf = bytearray(data)
    for step in steps:
        kind, *args = step
        if not buf:
            break
        if kind == "flip":
            pos, bit = args
            buf[pos % len(buf)] ^= 1 << bit
        elif kind == "set":
            pos, chunk = args
            pos %= len(buf)
            buf[pos : pos + len(chunk)] = chunk
        elif kind == "truncate":
            del buf[args[0] % len(buf) :]
        elif kind == "delete":
            pos, size = args
            del buf[pos % len(buf) : pos % len(buf) + size]
        elif kind in ("splice", "insert"):
            src, dst, size = args
            chunk = bytes(buf[src % len(buf) : src % len(buf) + size])
            dst %= len(buf)
            if kind == "splice":
                buf[dst : dst + len(chunk)] = chunk
            else:
                buf[dst:dst] = chunk
        elif kind == "box":
            name, size = args
            at = buf.find(name)
            if at >= 4:
                buf[at - 4 : at] = size.to_bytes(4, "big")
    return bytes(buf)


# -- the target --------------------------------------------------------------------------------------

_explainer = None


def explainer():
    global _explainer
    if _explainer is None:
        _explainer = corpus.tiny_explainer()
    return _explainer


def annotate_bytes(data: bytes, folder: Path) -> int | None:
    """Annotate ``data`` as a file; frames written, or None for a CamvideoError. Asserts the rules."""
    source, output = folder / "input.mp4", folder / "output.mp4"
    for path in folder.iterdir():
        path.unlink()
    source.write_bytes(data)
    ex = explainer()
    settings = AnnotateSettings(smooth=0.0, batch_size=4, preset="ultrafast", stall_timeout=PER_INPUT_LIMIT)
    start = time.monotonic()
    try:
        report = annotate_video(source, output, ex, Renderer(class_names=ex.class_names), settings)
    except StageStalled:  # nothing in a 6-frame file may take that long: a hang
        raise
    except CamvideoError as err:
        assert "\n" not in str(err)
        assert sorted(p.name for p in folder.iterdir()) == ["input.mp4"], "output or temporary file left behind"
        written = None
    else:
        written = report.stats.frames_written
        assert written > 0 and not report.interrupted
        with av.open(str(output)) as c:
            assert sum(1 for _ in c.decode(video=0)) == written
        assert sorted(p.name for p in folder.iterdir()) == ["input.mp4", "output.mp4"]
    assert time.monotonic() - start < PER_INPUT_LIMIT
    assert source.read_bytes() == data  # the input is never written
    return written


# Inputs kept as regressions: hand-made edge cases, and every file in
# tests/fuzz_regressions/ (inputs a fuzzer once failed on: drop libFuzzer's crash-* there
# as NAME.mp4).
REGRESSIONS = {
    "index-only": SEED[: SEED.find(b"mdat") + 8],  # the index and the mdat header, not one frame
    "cut-mid-frames": SEED[: len(SEED) // 2],  # what decodes is kept
    "no-avcC": SEED.replace(b"avcC", b"avcD", 1),  # no decoder configuration
    # found by atheris (a flipped SPS byte): frames of two sizes broke the engine's batch
    # (ValueError from np.stack, an "internal error"); now scaled to the first size
    "size-change": corpus.size_change_ts(),
    **{p.name: p.read_bytes() for p in sorted((Path(__file__).parent / "fuzz_regressions").glob("*.mp4"))},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.timeout(300)
def test_seed_is_a_good_video(workdir) -> None:
    with corpus.one_torch_thread():
        assert annotate_bytes(SEED, workdir) == 6


@pytest.mark.timeout(300)
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(steps=st.lists(mutation, min_size=1, max_size=4))
@example(steps=[("truncate", SEED.find(b"mdat") + 8)])
@example(steps=[("box", b"stsz", 2**32 - 1)])
@example(steps=[("box", b"moov", 0)])
@example(steps=[("insert", 0, SEED.find(b"mdat"), 512)])
def test_fuzz_decode_engine_encode(workdir, steps) -> None:
    data = mutate(SEED, steps)
    threads = threading.active_count()
    with corpus.one_torch_thread():
        written = annotate_bytes(data, workdir)
    target(float(written or 0), label="frames written")  # steer towards inputs that still decode
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= threads  # every stage thread ended


@pytest.mark.parametrize("name", REGRESSIONS)
def test_fuzz_regressions(workdir, name: str) -> None:
    with corpus.one_torch_thread():
        annotate_bytes(REGRESSIONS[name], workdir)


@pytest.mark.timeout(300)
@settings(max_examples=FUZZ_EXAMPLES * 2, deadline=None, derandomize=not RANDOM, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(steps=st.lists(mutation, min_size=1, max_size=6))
def test_fuzz_decoder_alone(workdir, steps) -> None:
    """The decoder alone, twice as many inputs: frames are upright uint8 RGB of one size."""
    data = mutate(SEED, steps)
    path = workdir / "decode.mp4"
    path.write_bytes(data)
    try:
        with FileSource(path) as src:
            size = (src.info.height, src.info.width, 3)
            frames = list(src)
            lost = src.frames_lost
            promised = src.info.frame_count  # what the container's index announces (0: unknown)
    except CamvideoError as err:
        assert "\n" not in str(err)
        return
    target(float(len(frames)), label="frames decoded")
    assert frames  # the constructor decoded one, so there is at least one
    if promised:
        # No frame is invented or counted lost twice: decoded + lost never exceeds the index;
        # and when any frame is reported lost, every frame the index announced is accounted for.
        assert len(frames) + lost <= promised, (len(frames), lost, promised)
        if lost:
            assert len(frames) + lost == promised, (len(frames), lost, promised)
    assert all(f.image.shape == size and f.image.dtype.name == "uint8" for f in frames)
    assert [f.index for f in frames] == list(range(len(frames)))
