"""Several pipelines at once: a shared Explainer, Ctrl-C relayed, failures kept apart."""

from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pytest

from camvideo.pipeline import JobContext, Pipeline, run_jobs
from camvideo.types import Frame


def frames(n: int):
    for i in range(n):
        yield Frame(index=i, image=np.zeros((2, 2, 3), np.uint8), pts=i, time=i / 30, captured=time.monotonic())


def camvideo_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("camvideo-") and t.is_alive()]


class Overlap:
    """Counts how many ``process`` calls run at the same moment."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self._lock = threading.Lock()

    def process(self, batch, hold=None):
        """One counted call; ``hold`` (if given) runs inside it, else a 2 ms sleep."""
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        if hold is not None:
            hold()
        else:
            time.sleep(0.002)
        with self._lock:
            self.now -= 1
        return [f.index for f in batch]


@pytest.mark.timeout(90)  # past the barrier's 30 s, so that a serial run fails on its assertions
def test_jobs_run_side_by_side_and_keep_every_frame_in_order() -> None:
    sinks = Overlap()  # the sinks (encoders) of different videos run at the same time
    written: dict[int, list[int]] = {}
    in_threads: set[str] = set()
    started_at_rendezvous: list[set[int]] = []
    # Videos 0-2 each hold their 10th sink call until all three are inside theirs: that
    # can only happen if three jobs run at once (else the barrier breaks after 30 s), and
    # no fourth video may have started meanwhile. No timing involved.
    rendezvous = threading.Barrier(3, action=lambda: started_at_rendezvous.append(set(written)))

    def work(video: int, context: JobContext) -> int:
        in_threads.add(threading.current_thread().name)
        out = written.setdefault(video, [])

        def sink(value: int) -> None:
            if video < 3 and value == 10:
                sinks.process([], hold=lambda: rendezvous.wait(timeout=30))
            else:
                sinks.process([])
            out.append(value)

        Pipeline(frames(60 + video), lambda b: [f.index for f in b], sink, batch_size=4).run()
        return len(out)

    results = dict(run_jobs(list(range(6)), work, jobs=3))
    assert results == {v: 60 + v for v in range(6)}
    assert all(written[v] == list(range(60 + v)) for v in range(6))  # in order, nothing lost
    assert started_at_rendezvous == [{0, 1, 2}]  # three videos at once, no fourth started
    assert sinks.most == 3  # never more than `jobs` sinks at once
    assert in_threads == {"camvideo-job-0", "camvideo-job-1", "camvideo-job-2"}
    assert not camvideo_threads()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_a_shared_explainer_gives_each_thread_its_own_answer(method: str) -> None:
    """Jobs share one Explainer: concurrent calls must not mix up hook captures."""
    import torch
    from torch import nn

    from camvideo import Explainer

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 7),
    ).eval()  # fmt: skip
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, (3, 40, 56, 3), dtype=np.uint8) for _ in range(4)]  # one per thread
    with Explainer(net, method=method, device="cpu", class_names=[str(i) for i in range(7)]) as ex:
        want = [ex.explain(b) for b in batches]
        got: dict[int, list] = {i: [] for i in range(4)}
        start = threading.Barrier(4)

        def hammer(i: int) -> None:
            start.wait()
            for _ in range(15):
                got[i].append(ex.explain(ex.to_device(batches[i])))

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(4):
        assert len(got[i]) == 15
        for out in got[i]:
            assert torch.equal(out.classes, want[i].classes)
            torch.testing.assert_close(out.maps, want[i].maps, rtol=1e-5, atol=1e-6)


def test_one_job_runs_in_the_calling_thread_one_video_after_another() -> None:
    seen: list[tuple[int, str, object]] = []

    def work(item: int, context: JobContext) -> int:
        seen.append((item, threading.current_thread().name, context.interrupt))
        return item * 2

    assert list(run_jobs([1, 2, 3], work, jobs=1)) == [(1, 2), (2, 4), (3, 6)]
    assert seen == [(i, threading.current_thread().name, None) for i in (1, 2, 3)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failing_job_does_not_cost_the_others(jobs: int) -> None:
    def work(item: int, context: JobContext) -> int:
        if item == 2:
            raise ValueError("bad file 2")
        return item

    results = dict(run_jobs([1, 2, 3, 4], work, jobs=jobs))
    assert set(results) == {1, 2, 3, 4}
    assert isinstance(results[2], ValueError) and str(results[2]) == "bad file 2"
    assert [results[i] for i in (1, 3, 4)] == [1, 3, 4]


@pytest.mark.parametrize("jobs", [1, 2])
def test_no_new_job_starts_after_an_interrupted_one(jobs: int) -> None:
    started: list[int] = []

    def work(item: int, context: JobContext) -> str:
        started.append(item)
        if item == 0:
            return "interrupted"
        time.sleep(0.2)  # still running when video 0 comes back interrupted
        return "done"

    results = dict(run_jobs(list(range(10)), work, jobs=jobs, interrupted=lambda r: r == "interrupted"))
    assert results[0] == "interrupted"
    assert 0 in started and set(started) <= set(range(jobs))  # one already running may finish; no other starts


@pytest.mark.timeout(30)
def test_ctrl_c_reaches_every_running_pipeline_and_starts_no_new_one() -> None:
    started: list[int] = []
    everyone_running = threading.Barrier(2)

    def work(video: int, context: JobContext):
        started.append(video)
        written: list[int] = []

        def sink(value: int) -> None:
            if value == 5:
                try:
                    everyone_running.wait(timeout=10)
                except threading.BrokenBarrierError:
                    pass
                if video == 0:
                    threading.Timer(0.05, _thread.interrupt_main).start()  # Ctrl-C in the main thread
            written.append(value)
            time.sleep(0.002)

        stats = Pipeline(frames(100_000), lambda b: [f.index for f in b], sink, batch_size=4,
                         interrupt=context.interrupt).run()  # fmt: skip
        return stats, written

    results = dict(run_jobs(list(range(5)), work, jobs=2))
    assert sorted(started) == [0, 1] and set(results) == {0, 1}
    for stats, written in results.values():
        assert stats.interrupted
        assert written == list(range(len(written))) and 5 < len(written) < 100_000  # the frames done, in order
    assert not camvideo_threads()


def test_jobs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(run_jobs([1], lambda item, context: item, jobs=0))
