"""`camvideo annotate --ray` on a local Ray cluster that these tests start (2 CPUs, 127.0.0.1).

The references are independent of the code under test: a local `camvideo annotate` of the
same clips (the one-worker run), and the source files themselves, decoded and demuxed with
PyAV (every frame's pts, every audio packet's bytes). Ray starts once for the module (it
takes ~10 s on two cores); the Ctrl-C test's subprocess joins that same cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from camvideo.cli import main  # noqa: E402
from camvideo.distributed import (  # noqa: E402
    Segment,
    VideoScan,
    annotate_on_ray,
    plan_segments,
    ray_cluster,
    scan_video,
)  # fmt: skip
from camvideo.errors import ModelError, OutputError  # noqa: E402
from camvideo.jobs import AnnotateSettings, VideoJob  # noqa: E402
from camvideo.options import ModelOptions, OverlayOptions  # noqa: E402
from camvideo.sources import FileSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from corpus import pattern  # noqa: E402

pytestmark = pytest.mark.timeout(600)


# -- clips ----------------------------------------------------------------------------------------


def make_clip(path: Path, n: int, *, fps: int = 10, size: tuple[int, int] = (160, 96), gop: int = 10,
              shift: int = 0) -> Path:  # fmt: skip
    """H.264 with a keyframe every ``gop`` frames and an AAC track as long as the video."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        video.codec_context.options = {"preset": "ultrafast", "g": str(gop), "keyint_min": str(gop),
                                       "sc_threshold": "0"}  # fmt: skip
        audio = out.add_stream("aac", rate=8000)
        audio.layout = "mono"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i + shift, *size), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        for i in range(n * 8000 // fps // 1024 + 1):
            samples = (0.2 * np.sin(np.arange(1024) * 0.05 * (1 + shift) + i)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            out.mux(audio.encode(frame))
        out.mux(video.encode())
        out.mux(audio.encode())
    return path


def frame_times(path: Path) -> list[Fraction]:
    """Every decoded frame's presentation time, exact."""
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(video=0)]


def frames_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def audio_packets(path: Path) -> list[tuple[Fraction, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts * p.time_base, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if p.is_file())


def assert_whole(output: Path, source: Path) -> None:
    """Every source frame at its exact time, the source's audio packets byte for byte."""
    assert frame_times(output) == frame_times(source)
    assert audio_packets(output) == audio_packets(source)


# -- the cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    auth_before = os.environ.get("RAY_AUTH_MODE")
    with ray_cluster(num_cpus=2) as info:
        yield info
    # Ray marks the process for its local cluster's token; another cluster must not inherit that
    assert os.environ.get("RAY_AUTH_MODE") == auth_before


@pytest.fixture(scope="module")
def one_thread():
    """The workers run torch on 1 thread (one CPU each); the local references do too, so that
    their float sums add up in the same order and the JSONL can be compared byte for byte."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_local_cluster_listens_on_loopback_only(cluster) -> None:
    import psutil

    assert cluster.started_here and cluster.cpus == 2
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    ours = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in ours]
    assert listening, "expected the cluster's own servers"
    assert {c.laddr.ip for c in listening} <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening
    # No dashboard: none of its head processes, nothing on its port.
    names = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
    assert not [n for n in names if n.startswith("ray-dashboard-")] and 8265 not in {c.laddr.port for c in listening}
    if os.environ.get("RAY_AUTH_MODE") != "token":
        pytest.skip("this Ray starts its local cluster without token authentication: loopback is all there is")
    # Ray (2.60) gave the cluster a token: a client on this machine without it is refused.
    address = ray.get_runtime_context().gcs_address
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR')"
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, RAY_AUTH_MODE="disabled"),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0 and "Failed to connect" in proc.stderr, proc.stderr[-2000:]


# -- plans and segment decoding (no cluster) ----------------------------------------------------


def test_plan_cuts_at_keyframes_and_keeps_the_batch_grid() -> None:
    scan = VideoScan(pts=list(range(0, 600, 10)), keyframes=list(range(0, 600, 100)), time_base=Fraction(1, 100))
    segments = plan_segments(scan, seconds=2.0, warmup=1.5, batch=4)  # 60 frames of 0.1 s, keyframe every 1 s
    assert [(s.start, s.end) for s in segments] == [(0, 20), (20, 40), (40, 60)]
    for s in segments:
        assert s.feed_from % 4 == 0 and s.feed_from <= max(0, s.start - 15)
        assert s.feed_to == min(60, -(-s.end // 4) * 4)
        assert list(s.pts) == scan.pts[s.feed_from : s.feed_to]
        # the stretch its worker annotates: exactly frames feed_from .. feed_to - 1 (end exclusive)
        part = s.part()
        assert (part.first_index, part.write_start, part.write_end) == (s.feed_from, s.start, s.end)
        assert part.start == Fraction(scan.pts[s.feed_from], 100)
        assert Fraction(scan.pts[s.feed_to - 1], 100) < part.end <= Fraction(scan.pts[s.feed_to - 1] + 10, 100)


def test_segment_part_decodes_exactly_its_frames(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "c.mp4", 40, size=(64, 48))
    scan = scan_video(clip)
    assert len(scan.pts) == 40 and scan.keyframes == [scan.pts[i] for i in (0, 10, 20, 30)]
    segment = Segment(2, start=20, end=30, feed_from=14, pts=tuple(scan.pts[14:32]), time_base=scan.time_base)
    part = segment.part()
    with FileSource(clip, start=part.start, end=part.end, first_index=part.first_index) as source:
        got = list(source)
    # The reference: PyAV decoding the whole file, every frame by its presentation order.
    with av.open(str(clip)) as c:
        every = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    assert [f.index for f in got] == list(range(14, 32))
    for frame in got:
        pts, image = every[frame.index]
        assert frame.pts == pts and np.array_equal(frame.image, image)


# -- runs -----------------------------------------------------------------------------------------


def local_reference(inputs: list[str], out: Path, *extra: str) -> None:
    assert main(["annotate", *inputs, "-o", str(out), "--jsonl", str(out), "--quiet", *extra]) == 0


def test_folder_on_ray_equals_local_annotate(cluster, one_thread, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        make_clip(folder / f"clip{k}.mp4", 16, shift=7 * k)
    # Lossless, so that the decoded frames are the overlays themselves: x264's lossy output
    # also depends on its threads' timing, not only on the images it is given.
    local_reference([str(folder)], tmp_path / "local", "--crf", "0")
    manifest = tmp_path / "run.jsonl"
    code = main(["annotate", str(folder), "-o", str(tmp_path / "ray"), "--jsonl", str(tmp_path / "ray"), "--quiet",
                 "--crf", "0", "--ray", "--manifest", str(manifest)])  # fmt: skip
    assert code == 0
    names = ["clip0.cam.mp4", "clip0.jsonl", "clip1.cam.mp4", "clip1.jsonl", "clip2.cam.mp4", "clip2.jsonl"]
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    for k in range(3):
        ours, ref = tmp_path / "ray" / f"clip{k}.cam.mp4", tmp_path / "local" / f"clip{k}.cam.mp4"
        assert (tmp_path / "ray" / f"clip{k}.jsonl").read_bytes() == (
            tmp_path / "local" / f"clip{k}.jsonl"
        ).read_bytes()
        assert np.array_equal(frames_of(ours), frames_of(ref))
        assert_whole(ours, folder / f"clip{k}.mp4")
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in records) == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    for r in records:
        assert (r["frames"], r["error"], r["attempts"], r["worker_node"]) == (16, None, 1, "127.0.0.1")
        assert r["decoder"] == "h264" and r["encoder"] == "libx264" and r["fps"] > 0


def test_non_default_options_on_ray_equal_the_local_run(cluster, one_thread, tmp_path: Path, capsys) -> None:
    """Every model and overlay option reaches the workers (issue 19: --input-size did not), on
    the whole-video and the segment path; the reference is the local run's files, decoded."""
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "short.mp4", 8, shift=2)
    make_clip(folder / "long.mp4", 30, shift=9)  # 3 s: cut at 1 s and 2 s
    options = ["--input-size", "budget", "--precision", "bf16", "--method", "gradcam", "--layer", "blocks.14",
               "--min-score", "0.06", "--threshold", "0.4", "--colormap", "turbo", "--alpha", "0.7", "--smooth", "0.5",
               "--target", "top2", "--crf", "0"]  # fmt: skip
    for run in ("local", "ray"):
        (tmp_path / run).mkdir()
        outputs = ["-o", str(tmp_path / run), "--jsonl", str(tmp_path / run), "--maps", str(tmp_path / run)]
        ray_flags = ["--ray", "--ray-workers", "2", "--segment-seconds", "1", "--manifest", str(tmp_path / "m.jsonl")]
        assert main(["annotate", str(folder), *outputs, *options, *(ray_flags if run == "ray" else ["--quiet"])]) == 0
    records = {Path(r["input"]).name: r for r in map(json.loads, (tmp_path / "m.jsonl").read_text().splitlines())}
    assert (records["short.mp4"]["segments"], records["long.mp4"]["segments"]) == (0, 3)
    # the workers' start-up is said, with its time, before any video's line (a --ray run is not silent)
    err = capsys.readouterr().err
    assert re.search(r"camvideo: loading the model on 2 workers \.\.\. on cpu, \d+\.\d s\n", err), err
    for name in ("short", "long"):
        ours, ref = tmp_path / "ray" / name, tmp_path / "local" / name
        assert Path(f"{ours}.jsonl").read_bytes() == Path(f"{ref}.jsonl").read_bytes()
        with np.load(f"{ours}.npz") as a, np.load(f"{ref}.npz") as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in b.files)
        assert np.array_equal(frames_of(Path(f"{ours}.cam.mp4")), frames_of(Path(f"{ref}.cam.mp4")))
    # --input-size budget: about 224x224's pixel count with the clip's 5:3 aspect, so the maps
    # (1/32 of the input) are smaller than the default's 224 x 373 would give (7 x 11 or 7 x 12).
    with np.load(tmp_path / "ray" / "long.npz") as maps:
        assert maps["maps"].shape[1] < 7 and maps["maps"].shape[2] < 11


def test_a_worker_plans_its_threads_over_its_own_cpus() -> None:
    """An actor given one CPU runs its jobs' pools on one core's plan, not on the node's cores
    (every actor on a node would otherwise take them all). No cluster: the actor class itself."""
    from camvideo.distributed import AnnotateWorker

    worker = AnnotateWorker(ModelOptions(device="cpu"), OverlayOptions(), AnnotateSettings(), threads=1)
    assert worker.ready()["error"] is None
    plan = worker.settings.threads
    assert plan is not None and (plan.cores, plan.model, plan.decoder, plan.encoder, plan.opencv) == (1, 1, 1, 1, 1)


def test_records_only_on_ray_is_refused_up_front(tmp_path: Path) -> None:
    # No cluster needed: the refusal comes at the call, before Ray is touched.
    clip = make_clip(tmp_path / "a.mp4", 4)
    with pytest.raises(OutputError, match=r"output=None .* does not run on Ray"):
        annotate_on_ray([VideoJob(clip, None, tmp_path / "a.jsonl")], AnnotateSettings())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]


def test_killed_worker_is_retried_and_every_output_is_whole(cluster, tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    clips = [make_clip(folder / f"clip{k}.mp4", 40, shift=5 * k) for k in range(3)]
    jobs = [VideoJob(c, out / f"{c.stem}.cam.mp4", out / f"{c.stem}.jsonl") for c in clips]
    started: dict[str, dict] = {}
    killed: list[int] = []

    def on_event(kind: str, video, value) -> None:
        if kind == "started":
            started[value["call"]] = value
        elif kind == "frames" and not killed:
            # A worker busy on a video (it has posted frames, so its partial MP4 exists): kill -9.
            victim = next(v for v in started.values() if v["call"] == f"v{jobs.index(video)}")
            os.kill(victim["pid"], signal.SIGKILL)
            killed.append(jobs.index(video))

    outcomes = list(annotate_on_ray(jobs, AnnotateSettings(), on_event=on_event))
    assert killed and all(o.ok for o in outcomes), [o.error for o in outcomes]
    attempts = {jobs.index(o.video): o.attempts for o in outcomes}
    assert attempts[killed[0]] == 2 and sorted(attempts.values()) == [1, 1, 2]
    for clip, job in zip(clips, jobs):
        assert_whole(job.output, clip)
        assert [json.loads(line)["frame"] for line in job.jsonl.read_text().splitlines()] == list(range(40))
    assert partials(out) == []


def test_segments_join_into_the_one_worker_video(cluster, one_thread, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", 60)  # 6 s at 10 fps, a keyframe every second
    options = ["--smooth", "0.1", "--crf", "0", "--quiet"]
    for run in ("one", "seg"):
        (tmp_path / run).mkdir()
    outputs = {run: ["-o", str(tmp_path / run / "long.cam.mp4"), "--jsonl", str(tmp_path / run / "long.jsonl"),
                     "--maps", str(tmp_path / run / "long.npz")] for run in ("one", "seg")}  # fmt: skip
    assert main(["annotate", str(clip), *outputs["one"], *options]) == 0
    manifest = tmp_path / "run.jsonl"
    code = main(["annotate", str(clip), *outputs["seg"], *options, "--ray", "--segment-seconds", "2",
                 "--manifest", str(manifest)])  # fmt: skip
    assert code == 0
    record = json.loads(manifest.read_text())
    assert (record["segments"], record["frames"], record["error"]) == (3, 60, None)
    ours, one = tmp_path / "seg" / "long.cam.mp4", tmp_path / "one" / "long.cam.mp4"
    assert_whole(ours, clip)
    assert (tmp_path / "seg" / "long.jsonl").read_bytes() == (tmp_path / "one" / "long.jsonl").read_bytes()
    with np.load(tmp_path / "seg" / "long.npz") as a, np.load(tmp_path / "one" / "long.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in b.files)
    # The overlay at each seam (segments start at frames 20 and 40), lossless: as the one-worker run's.
    mine, theirs = frames_of(ours).astype(np.int16), frames_of(one).astype(np.int16)
    for seam in (20, 40):
        for i in (seam - 1, seam, seam + 1, seam + 2):
            assert np.abs(mine[i] - theirs[i]).mean() < 0.5 and np.abs(mine[i] - theirs[i]).max() <= 8, i
    assert partials(tmp_path / "seg") == []


def test_corrupt_clip_fails_alone_and_is_in_the_manifest(cluster, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "a.mp4", 8)
    (folder / "b.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    make_clip(folder / "c.mp4", 8, shift=3)
    manifest = tmp_path / "run.jsonl"
    code = main(["annotate", str(folder), "-o", str(tmp_path / "out"), "--quiet", "--ray", "--manifest", str(manifest)])
    assert code == 1
    records = {Path(r["input"]).name: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert records["a.mp4"]["error"] is None and records["c.mp4"]["error"] is None
    assert "b.mp4" in records["b.mp4"]["error"] and records["b.mp4"]["attempts"] == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.cam.mp4", "c.cam.mp4"]
    err = capsys.readouterr().err
    assert "camvideo: error:" in err and "b.mp4" in err and "Traceback" not in err


def test_model_that_does_not_load_is_one_error(cluster, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", 4)
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"not a state dict")
    started = time.monotonic()
    with pytest.raises(ModelError, match="cannot load the model"):
        list(annotate_on_ray([VideoJob(clip, tmp_path / "a.cam.mp4")], AnnotateSettings(),
                             model=ModelOptions(weights=str(bad))))  # fmt: skip
    assert time.monotonic() - started < 120
    assert not (tmp_path / "a.cam.mp4").exists() and partials(tmp_path) == []


def test_ctrl_c_exits_130_and_leaves_no_partial_output(cluster, tmp_path: Path) -> None:
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for k in range(3):
        make_clip(folder / f"clip{k}.mp4", 300, shift=k)
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-m", "camvideo.cli", "annotate", str(folder), "-o", str(out), "--quiet",
                             "--ray", address, "--segment-seconds", "0"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # until a worker is writing
        if out.is_dir() and any(".partial-" in p.name and p.stat().st_size > 2000 for p in out.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert partials(out) == [] and not list(out.glob("*.cam.mp4")), sorted(p.name for p in out.iterdir())


def test_url_input_is_fetched_by_the_worker(cluster, one_thread, tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    clip = make_clip(served / "clip.mp4", 8, shift=11)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"
        for run in ("local", "ray"):
            (tmp_path / run).mkdir()
        assert (
            main(["annotate", str(clip), "-o", str(tmp_path / "local"), "--jsonl", str(tmp_path / "local"), "--quiet"])
            == 0
        )
        code = main(
            ["annotate", url, "-o", str(tmp_path / "ray"), "--jsonl", str(tmp_path / "ray"), "--quiet", "--ray"]
        )
    finally:
        server.shutdown()
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["clip.cam.mp4", "clip.jsonl"]  # no copy left
    assert (tmp_path / "ray" / "clip.jsonl").read_bytes() == (tmp_path / "local" / "clip.jsonl").read_bytes()
    assert_whole(tmp_path / "ray" / "clip.cam.mp4", clip)


def test_an_address_where_no_cluster_answers_is_one_line(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", 4)
    with __import__("socket").socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "camvideo.cli", "annotate", str(clip), "-o", str(tmp_path / "o.mp4"),
                           "--ray", f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1].startswith(f"camvideo: error: no Ray cluster answers at 127.0.0.1:{port}")
    )
    # the step was announced (a slow connection does not look hung), and its line ended before the error's
    assert proc.stderr.splitlines()[0] == f"camvideo: connecting to the Ray cluster at 127.0.0.1:{port} ..."
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.mp4").exists()
