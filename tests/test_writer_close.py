"""Writer.close from several threads at once, and a write that stalls (issue 19 defect 6).

Real threads and a real MP4: the output is decoded back, and each frame (a flat grey
level of its own) must be there once, in order.
"""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo.errors import CamvideoError, OutputError
from camvideo.sinks import Mp4Sink, WriterStalled
from camvideo.types import VideoInfo

FRAMES = 12
WIDTH, HEIGHT = 64, 48
EVENT_WAIT = 60.0  # generous bound on waits for events that come at once when nothing is broken


def grey(i: int) -> int:
    return 10 + 20 * i  # 10, 30, ..., 230: far apart after the codec's rounding


def image(i: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), grey(i), np.uint8)


def new_sink(path: Path) -> Mp4Sink:
    info = VideoInfo(width=WIDTH, height=HEIGHT, fps=25.0, time_base=Fraction(1, 25), name=path.name)
    return Mp4Sink(path, info, crf=0, preset="ultrafast", threads=1)


def decoded_frames(path: Path) -> list[int]:
    """Which frame each frame of the file is, in display order, told by its grey level
    (the YUV round trip moves a level by at most 2 here, the levels are 20 apart)."""
    with av.open(str(path)) as container:
        greys = [float(f.to_ndarray(format="rgb24").mean()) for f in container.decode(video=0)]
    found = [round((g - grey(0)) / (grey(1) - grey(0))) for g in greys]
    assert all(abs(g - grey(i)) <= 2 for g, i in zip(greys, found)), greys
    return found


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def test_concurrent_close_finishes_the_file_once(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    sink = new_sink(target)
    for i in range(FRAMES):
        sink.encode(image(i), i, i / 25)
    real_finish = sink._finish
    finishes: list[int] = []
    first_in, second_in = threading.Event(), threading.Event()

    def finish() -> Path:
        finishes.append(threading.get_ident())
        if len(finishes) == 1:
            first_in.set()
            # Give the second caller its chance to run _finish too (with the fix it waits in
            # close() instead, and this wait simply runs out).
            second_in.wait(2.0)
        else:
            second_in.set()
        return real_finish()

    sink._finish = finish  # type: ignore[method-assign]
    results: dict[str, object] = {}

    def closer(name: str, after: threading.Event | None) -> None:
        if after is not None:
            assert after.wait(EVENT_WAIT)
        try:
            results[name] = sink.close()
        except BaseException as err:  # noqa: BLE001 - recorded for the assertion
            results[name] = err

    threads = [threading.Thread(target=closer, args=("a", None)),
               threading.Thread(target=closer, args=("b", first_in))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(EVENT_WAIT)
    assert not any(t.is_alive() for t in threads)
    assert results == {"a": target, "b": target}
    assert len(finishes) == 1
    assert sink.close() == target  # and once more, later
    assert decoded_frames(target) == list(range(FRAMES))
    assert leftovers(tmp_path) == []


def test_close_waits_for_a_write_in_progress(tmp_path: Path) -> None:
    """A close that comes while another thread encodes the last frame takes that frame too."""
    target = tmp_path / "out.mp4"
    sink = new_sink(target)
    real_encode = sink._encode
    inside, release = threading.Event(), threading.Event()

    def encode(img: np.ndarray, pts: int | None, seconds: float) -> None:
        if pts == FRAMES - 1:
            inside.set()
            assert release.wait(EVENT_WAIT)
        real_encode(img, pts, seconds)

    sink._encode = encode  # type: ignore[method-assign]
    writer = threading.Thread(target=lambda: [sink.encode(image(i), i, i / 25) for i in range(FRAMES)])
    writer.start()
    assert inside.wait(EVENT_WAIT)
    result: list[object] = []
    closer = threading.Thread(target=lambda: result.append(sink.close(timeout=EVENT_WAIT)))
    closer.start()
    release.set()
    closer.join(EVENT_WAIT)
    writer.join(EVENT_WAIT)
    assert result == [target]
    assert decoded_frames(target) == list(range(FRAMES))


def test_a_stalled_write_is_a_one_line_error_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    sink = new_sink(target)
    real_encode = sink._encode
    inside, release = threading.Event(), threading.Event()

    def encode(img: np.ndarray, pts: int | None, seconds: float) -> None:
        if pts == 5:  # the encoder hangs on this frame until the test lets it go
            inside.set()
            assert release.wait(EVENT_WAIT)
        real_encode(img, pts, seconds)

    sink._encode = encode  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def write_all() -> None:
        try:
            for i in range(FRAMES):
                sink.encode(image(i), i, i / 25)
        except BaseException as err:  # noqa: BLE001 - the writes after the stall are refused
            errors.append(err)

    writer = threading.Thread(target=write_all)
    writer.start()
    assert inside.wait(EVENT_WAIT)
    with pytest.raises(WriterStalled) as first:
        sink.close(timeout=0.2)  # the write is blocked on an event: it cannot return in time
    assert isinstance(first.value, CamvideoError) and isinstance(first.value, OutputError)
    message = str(first.value)
    assert "\n" not in message and str(target) in message and "stalled" in message
    # Every later caller, in any thread, sees the same outcome.
    again: list[BaseException] = []

    def close_again() -> None:
        try:
            sink.close()
        except BaseException as err:  # noqa: BLE001
            again.append(err)

    other = threading.Thread(target=close_again)
    other.start()
    other.join(EVENT_WAIT)
    assert again == [first.value]
    release.set()  # the stalled write returns: the writer's resources go with it
    writer.join(EVENT_WAIT)
    assert not writer.is_alive()
    assert not target.exists()
    assert leftovers(tmp_path) == []
    assert len(errors) == 1 and "after close() or abort()" in str(errors[0])
