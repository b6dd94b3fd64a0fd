"""The thread budget of a video job (issue 18 item 5) and the reused swscale contexts.

- :func:`plan_threads` against the rules its docstring states, written out here;
- :func:`use_threads` sets torch's and OpenCV's counts and restores the caller's values;
- ``annotate_video`` runs with the plan: torch and OpenCV counts during the run, x264's
  ``threads`` as the encoder writes it into the file (its SEI options string), restored after;
- the decoder's thread count: no codec threads are started with ``decoder_threads=1``;
- one reused reformatter per stream gives the same pixels as a new swscale context per frame:
  decoding (FileSource vs PyAV's per-frame ``to_ndarray``) and encoding (a lossless MP4's YUV
  planes vs PyAV's per-frame ``reformat``, and its luma vs the BT.709 formula in float64).
"""

from __future__ import annotations

import os
import re
import threading
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from av.video.reformatter import ColorRange, Colorspace
from live_helpers import BUNNY, CATS, tiny_explainer

from camvideo.jobs import AnnotateSettings, annotate_video
from camvideo.jobs.threads import ThreadPlan, plan_threads, usable_cores, use_threads
from camvideo.render import Renderer
from camvideo.sinks import Mp4Sink
from camvideo.sources import FileSource
from camvideo.sources.upright import yuv_matrix
from camvideo.types import VideoInfo


# -- the plan ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 64])
@pytest.mark.parametrize("jobs", [1, 2, 4])
def test_cpu_plan_follows_its_rules(cores: int, jobs: int) -> None:
    plan = plan_threads(cores, device="cpu", jobs=jobs)
    encoder = max(1, cores // 8)  # x264 keeps up with the model at ~1/8 of the cores
    decoder = 2 if cores >= 16 else 1
    model = max(1, cores - encoder - decoder)
    assert plan == ThreadPlan(cores=cores, model=model, decoder=max(1, decoder // jobs),
                              encoder=max(1, encoder // jobs), opencv=model)  # fmt: skip
    # never more busy threads than cores once there are enough for one per pool
    if cores >= 3:
        assert plan.model + plan.decoder + plan.encoder <= cores


def test_two_cores_give_every_pool_one_thread() -> None:
    """The issue's case: a 2-thread OpenMP team stalls whenever a codec thread takes a core."""
    assert plan_threads(2) == ThreadPlan(cores=2, model=1, decoder=1, encoder=1, opencv=1)


@pytest.mark.parametrize("cores", [1, 2, 4, 8, 16])
def test_cuda_plan_gives_the_cpu_to_the_codecs(cores: int) -> None:
    plan = plan_threads(cores, device="cuda")
    assert (plan.encoder, plan.decoder, plan.model, plan.opencv) == (
        max(1, cores // 2), max(1, cores // 4), max(1, cores // 4), max(1, cores // 4))  # fmt: skip


def test_usable_cores_is_the_affinity_mask() -> None:
    assert usable_cores() == len(os.sched_getaffinity(0))
    assert plan_threads().cores == len(os.sched_getaffinity(0))


# -- applying it -------------------------------------------------------------------------------
def test_use_threads_sets_and_restores_torch_and_opencv() -> None:
    torch_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    plan = ThreadPlan(cores=8, model=3, decoder=1, encoder=1, opencv=2)
    try:
        torch.set_num_threads(5)
        cv2.setNumThreads(4)
        with pytest.raises(ZeroDivisionError):
            with use_threads(plan):
                assert (torch.get_num_threads(), cv2.getNumThreads()) == (3, 2)
                assert threads_of_a_new_thread() == 3  # the pipeline's threads start in the job
                1 / 0  # an error in the job restores the counts too
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (5, 4)
    finally:
        torch.set_num_threads(torch_before)
        cv2.setNumThreads(cv2_before)


def threads_of_a_new_thread() -> int:
    """torch's count in a thread started now (set_num_threads in one thread reaches the
    threads that start later, not the OpenMP team of another running thread)."""
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    return seen[0]


def test_concurrent_jobs_restore_when_the_last_one_ends() -> None:
    torch_before = torch.get_num_threads()
    plan = ThreadPlan(cores=8, model=1, decoder=1, encoder=1, opencv=1)
    inside, release = threading.Barrier(3), threading.Event()

    def job() -> None:
        with use_threads(plan):
            inside.wait(60)
            assert release.wait(60)

    jobs = [threading.Thread(target=job) for _ in range(2)]
    try:
        torch.set_num_threads(2)
        for t in jobs:
            t.start()
        inside.wait(60)  # both jobs are running under the plan
        assert threads_of_a_new_thread() == 1
        release.set()
        for t in jobs:
            t.join(60)
        assert threads_of_a_new_thread() == 2
    finally:
        release.set()
        torch.set_num_threads(torch_before)


def x264_options(path: Path) -> str:
    """The options string x264 writes into its first SEI message (``... threads=1 ...``)."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start : data.index(b"\x00", start)].decode("ascii", "replace")


def test_annotate_runs_with_the_plan_and_restores_the_counts(tmp_path: Path) -> None:
    torch_before, cv2_before = torch.get_num_threads(), cv2.getNumThreads()
    plan = ThreadPlan(cores=4, model=1, decoder=1, encoder=1, opencv=1)
    seen: list[tuple[int, int]] = []
    try:
        torch.set_num_threads(2)
        cv2.setNumThreads(2)
        ex = tiny_explainer()
        settings = AnnotateSettings(smooth=0.0, batch_size=4, preset="ultrafast", threads=plan)
        report = annotate_video(CATS, tmp_path / "out.mp4", ex, Renderer(class_names=ex.class_names), settings,
                                on_frame=lambda r: seen.append((torch.get_num_threads(), cv2.getNumThreads())))  # fmt: skip
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (2, 2)  # the caller's values again
    finally:
        torch.set_num_threads(torch_before)
        cv2.setNumThreads(cv2_before)
    assert report.stats.frames_written == len(seen) > 0
    assert set(seen) == {(1, 1)}  # the sink thread, started for the job, runs with the plan
    assert re.search(r"\bthreads=1\b", x264_options(tmp_path / "out.mp4"))
    # and without a plan, the job makes one for the machine: x264 gets its share, not 0 (auto)
    ex = tiny_explainer()
    annotate_video(CATS, tmp_path / "auto.mp4", ex, Renderer(class_names=ex.class_names),
                   AnnotateSettings(smooth=0.0, batch_size=4, preset="ultrafast"))  # fmt: skip
    assert re.search(rf"\bthreads={plan_threads().encoder}\b", x264_options(tmp_path / "auto.mp4"))


def codec_threads() -> int:
    """This process's FFmpeg threads (FFmpeg names them ``av:h264:df0`` and the like)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:  # ended meanwhile
            pass
    return sum(name.startswith("av:") for name in names)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_one_decoder_thread_starts_no_codec_threads() -> None:
    """FFmpeg's frame threads are started when the decoder opens; with thread_count 1 it
    decodes in the calling thread (thread_count 0 starts one per core and then some)."""
    before = codec_threads()
    with FileSource(BUNNY, threads="FRAME", decoder_threads=1) as source:
        frames = [f for _, f in zip(range(10), source)]
        during = codec_threads()
    assert len(frames) == 10
    assert during == before
    with FileSource(BUNNY, threads="FRAME", decoder_threads=2) as source:  # the count is what reaches FFmpeg
        frames = [f for _, f in zip(range(10), source)]
        assert codec_threads() == before + 2


# -- one swscale context per stream: the same pixels ----------------------------------------------
@pytest.mark.parametrize("threads", [0, 1])
def test_decoded_rgb_is_bit_identical_to_a_new_context_per_frame(threads: int) -> None:
    with av.open(str(BUNNY)) as container:
        reference = []
        for i, frame in enumerate(container.decode(video=0)):
            if i == 24:
                break
            kwargs = {"src_colorspace": yuv_matrix(frame)}  # the matrix FileSource picks (tested elsewhere)
            if frame.color_range:
                kwargs["src_color_range"] = frame.color_range
            reference.append(frame.to_ndarray(format="rgb24", **kwargs))  # a new context each
    with FileSource(BUNNY, decoder_threads=threads) as source:
        got = [f.image for _, f in zip(range(24), source)]
    assert len(got) == len(reference) == 24
    for a, b in zip(got, reference):
        assert np.array_equal(a, b)


def test_encoded_yuv_is_bit_identical_to_a_new_context_per_frame(tmp_path: Path) -> None:
    """crf 0 is lossless in x264: the decoded planes are what the conversion produced."""
    with av.open(str(BUNNY)) as container:
        images = [f.to_ndarray(format="rgb24") for _, f in zip(range(8), container.decode(video=0))]
    info = VideoInfo(width=1280, height=720, fps=25.0, time_base=Fraction(1, 25), name="out.mp4")
    with Mp4Sink(tmp_path / "out.mp4", info, crf=0, preset="ultrafast", threads=1) as sink:
        for i, image in enumerate(images):
            sink.encode(image, i, i / 25)
    with av.open(str(tmp_path / "out.mp4")) as container:
        decoded = [f.to_ndarray() for f in container.decode(video=0)]  # raw yuv420p planes
    assert len(decoded) == len(images)
    for image, planes in zip(images, decoded):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        ref = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)
        assert np.array_equal(planes, ref.to_ndarray())
        # luma from its definition: BT.709 weights, limited range (16 + 219 x), float64
        rgb = image.astype(np.float64) / 255.0
        luma = 16.0 + 219.0 * (0.2126 * rgb[..., 0] + 0.7152 * rgb[..., 1] + 0.0722 * rgb[..., 2])
        assert np.abs(planes[:720].astype(np.float64) - luma).max() <= 1.0
