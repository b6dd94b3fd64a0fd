"""Long runs, bounded for CI: 20,000 frames through the whole file pipeline, and 1,000
create/close cycles of the engine. Memory, hooks, threads and file descriptors must stay
flat once warmed up. ``benchmarks/soak.py`` runs the same for longer and prints a table.
"""

from __future__ import annotations

import gc
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import corpus
import numpy as np
import psutil
import pytest

from camvideo.engine import METHODS
from camvideo.jobs import FrameAnnotator
from camvideo.pipeline import Pipeline
from camvideo.render import Renderer, TemporalSmoother
from camvideo.sinks import Mp4Sink
from camvideo.types import Frame, VideoInfo

SOAK_FRAMES = 20_000
WARM_UP = 2_000  # frames before the reference sample (allocator pools, x264 lookahead, caches)
RSS_BOUND = 24 * 2**20  # bytes of growth allowed after warm-up (measured: about 3 MB, the MP4 index)
CYCLES = 1_000
CYCLE_RSS_BOUND = 16 * 2**20


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with corpus.one_torch_thread():
        yield


def synthetic(n: int, size: int = 32):
    """``n`` distinct-looking frames at 30 fps, made from 16 noise images and the index."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(16)]
    for i in range(n):
        image = images[i % 16].copy()
        image[i % size] = 255  # a moving line, so no two consecutive frames are equal
        yield Frame(index=i, image=image, pts=i, time=i / 30, captured=time.monotonic())


def sample(process: psutil.Process, model) -> dict:
    return {
        "rss": process.memory_info().rss,
        "threads": threading.active_count(),
        "os_threads": process.num_threads(),
        "fds": process.num_fds(),
        "hooks": corpus.count_hooks(model),
    }


@pytest.mark.timeout(240)
def test_soak_20k_frames_through_the_pipeline(tmp_path: Path) -> None:
    process = psutil.Process()
    gc.collect()
    explainer = corpus.tiny_explainer()
    before = sample(process, explainer.model)
    annotator = FrameAnnotator(
        explainer, Renderer("jet", 0.5, class_names=explainer.class_names), TemporalSmoother(0.25)
    )
    info = VideoInfo(width=32, height=32, fps=30.0, time_base=Fraction(1, 30))
    samples: dict[int, dict] = {}
    out = tmp_path / "soak.mp4"
    start = time.monotonic()
    with Mp4Sink(out, info, preset="ultrafast") as sink:

        def consume(result) -> None:
            sink.encode(result.image, result.frame.pts, result.frame.time)
            if result.frame.index % 1000 == 999:
                samples[result.frame.index + 1] = sample(process, explainer.model)

        stats = Pipeline(synthetic(SOAK_FRAMES), annotator, consume, batch_size=32).run()
    elapsed = time.monotonic() - start
    explainer.close()
    gc.collect()
    after = sample(process, explainer.model)

    assert stats.frames_written == SOAK_FRAMES and not stats.interrupted
    # from warm-up until shortly before the end (then the source and engine threads finish)
    steady = {n: s for n, s in samples.items() if WARM_UP <= n <= SOAK_FRAMES - 1000}
    reference = steady[WARM_UP]
    growth = max(s["rss"] for s in steady.values()) - reference["rss"]
    print(f"\nsoak: {SOAK_FRAMES} frames in {elapsed:.1f} s ({SOAK_FRAMES / elapsed:.0f} fps); RSS after warm-up "
          f"{reference['rss'] / 2**20:.1f} MiB, growth {growth / 2**20:.2f} MiB; threads {reference['threads']} "
          f"({reference['os_threads']} OS), fds {reference['fds']}, hooks {reference['hooks']}")  # fmt: skip
    assert growth < RSS_BOUND
    for key in ("threads", "fds", "hooks"):  # constant while running
        assert {s[key] for s in steady.values()} == {reference[key]}, (key, steady)
    # Native threads: OpenCV and OpenMP start their worker pools lazily, on the first call
    # big enough to split, which can come after the warm-up (seen once: 11 -> 12). A leak
    # would add a thread per video or per batch, far more than that one.
    native = [s["os_threads"] for _, s in sorted(steady.items())]
    assert max(native) - reference["os_threads"] <= 1, native
    assert reference["hooks"] == 1  # the explainer's one capture hook
    # once finished: the stage threads are gone, the file is closed, the hook removed
    assert after["threads"] == before["threads"] and after["fds"] == before["fds"] and after["hooks"] == 0
    with av.open(str(out)) as c:
        video = c.streams.video[0]
        assert video.frames == SOAK_FRAMES
        assert float(video.duration * video.time_base) == pytest.approx(SOAK_FRAMES / 30, abs=0.05)


@pytest.mark.timeout(240)
def test_engine_create_close_cycles_leave_nothing_behind() -> None:
    process = psutil.Process()
    model = corpus.tiny_net()
    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    methods = sorted(m for m in METHODS if m != "rollout")  # rollout needs a ViT, not this CNN

    def cycle(i: int) -> None:
        with corpus.tiny_explainer(model) as explainer:
            explainer.set_method(methods[i % len(methods)])  # every method's hooks, in turn
            out = explainer.explain(frames)
            assert out.maps.shape[0] == 2
        assert corpus.count_hooks(model) == 0, (i, methods[i % len(methods)])

    for i in range(50):  # warm up: first calls allocate pools and kernels for good
        cycle(i)
    gc.collect()
    first = sample(process, model)
    start = time.monotonic()
    for i in range(CYCLES):
        cycle(i)
    elapsed = time.monotonic() - start
    gc.collect()
    last = sample(process, model)
    growth = last["rss"] - first["rss"]
    print(f"\nengine: {CYCLES} create/explain/close cycles in {elapsed:.1f} s; RSS growth {growth / 2**20:.2f} MiB; "
          f"threads {last['threads']} ({last['os_threads']} OS), fds {last['fds']}, hooks {last['hooks']}")  # fmt: skip
    assert last["hooks"] == 0
    assert (last["threads"], last["os_threads"], last["fds"]) == (first["threads"], first["os_threads"], first["fds"])
    assert growth < CYCLE_RSS_BOUND
