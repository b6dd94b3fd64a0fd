"""Helpers shared by the benchmark scripts: machine facts, Markdown tables, timing.

Not part of the package; the scripts put this folder on ``sys.path`` themselves
(``python benchmarks/bench_*.py`` does it by running from here).
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_videos"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_facts() -> list[str]:
    """Lines describing the command and the machine, for the top of a report."""
    import cv2
    import torch

    argv = [Path(sys.argv[0]).as_posix()] + sys.argv[1:]
    try:
        argv[0] = Path(sys.argv[0]).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    lines = [
        f"- command: `python {shlex.join(argv)}`",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical CPUs ({usable_cpus()} usable), "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- torch {torch.__version__} (CPU threads: {torch.get_num_threads()} intra-op, "
        f"{torch.get_num_interop_threads()} inter-op), OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)",
    ]
    try:
        import av

        lines[-1] += f", PyAV {av.__version__}"
    except ImportError:
        pass
    if load:
        lines.append(f"- load average at the start (1/5/15 min): {load}  (other users share this machine)")
    return lines


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) jiffies of the whole machine so far (Linux), None elsewhere.

    On a virtual machine the hypervisor can hand the host's cores to other guests: that
    "steal" time is time this machine's cores did not run at all. Compare two readings
    with :func:`steal_percent` to know how much of a benchmark's wall time that was.
    """
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return values[7], sum(values)


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of CPU time stolen by the hypervisor between two :func:`cpu_times` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table. ``align``: one of 'l', 'r', 'c' per column (default: first left, rest right)."""
    rows = [[str(c) for c in row] for row in rows]
    align = align or ["l"] + ["r"] * (len(header) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w0, time.process_time() - c0, result


def say(*parts: object) -> None:
    """Progress on stderr, so stdout stays a clean report."""
    print(*parts, file=sys.stderr, flush=True)


def fmt(value: float, digits: int = 1) -> str:
    if value != value:  # NaN
        return "n/a"
    return f"{value:.{digits}f}"


def run_in_thread(fn: Callable[[], object], torch_threads: int | None = None) -> object:
    """Run ``fn`` in a fresh thread (as the pipeline runs its engine) and return its result.

    Two things differ between Python's main thread and the pipeline's worker threads, and
    both matter for timings here:

    * ``torch.set_num_threads(n)`` sets the calling thread's OpenMP team and also the
      process-wide count that every thread starting torch work later takes (a thread that
      already ran torch ops keeps its team). So ``torch_threads`` is set inside the new
      thread, for ``fn``, and put back when ``fn`` returns, so it does not leak into the
      threads of later measurements.
    * glibc's main-thread heap gives freed memory back to the OS and faults it in again,
      so torch ops on big tensors run up to 2x slower in the main thread (minor page
      faults, system time) than in a worker thread whose heap keeps it.
    """
    import threading

    import torch

    box: dict[str, object] = {}

    def body() -> None:
        before = torch.get_num_threads()
        try:
            if torch_threads:
                torch.set_num_threads(torch_threads)
            box["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            box["error"] = err
        finally:
            torch.set_num_threads(before)

    thread = threading.Thread(target=body, name="bench-worker")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result")


def make_longer(source: Path, target: Path, times: int) -> None:
    """Remux ``source`` ``times`` times in a row (no re-encoding: still H.264), each copy's
    packets shifted by the longest stream's end rounded up to a whole video frame."""
    import av  # only the benchmarks that make clips need it

    with av.open(str(source)) as probe:
        video = probe.streams.video[0]
        frame = 1 / Fraction(video.average_rate)
        ends = [Fraction((s.start_time or 0) + (s.duration or 0)) * s.time_base for s in probe.streams if s.duration]
        period = math.ceil(max(ends) / frame) * frame
    partial = target.with_suffix(".part.mp4")
    with av.open(str(partial), "w", format="mp4") as out:
        mapping = None
        for k in range(times):
            with av.open(str(source)) as inp:
                streams = [s for s in inp.streams if s.type in ("video", "audio")]
                if mapping is None:
                    mapping = {s.index: out.add_stream_from_template(s) for s in streams}
                for packet in inp.demux(streams):
                    if packet.size == 0:
                        continue
                    shift = round(period * k / packet.time_base)
                    if packet.pts is not None:
                        packet.pts += shift
                    if packet.dts is not None:
                        packet.dts += shift
                    packet.stream = mapping[packet.stream.index]
                    out.mux(packet)
    partial.replace(target)
