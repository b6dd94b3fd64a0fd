"""The driver: videos out to the workers, outcomes back as they finish.

:func:`annotate_on_ray` plans every video (a task that opens it and, for a long one,
lists its keyframes), starts one :class:`~camvideo.distributed.worker.AnnotateWorker`
actor per worker slot, and hands each free actor the next video or segment. Placement,
restarts and retries are Ray's: an actor whose process dies is restarted (on another
node if its node is gone) and re-runs the call it had, up to ``retries`` times. When a
video's segments are all done, a joining task remuxes them into its outputs.

Ctrl-C kills the actors and the joining tasks, waits until they are gone, and removes
every unfinished video's temporary files and parts: no partial output stays anywhere.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError, OutputError
from ..jobs import AnnotateSettings, VideoJob, default_batch_size
from ..options import ModelOptions, OverlayOptions
from .segments import WARMUP_TAUS
from .worker import (
    AnnotateWorker,
    ProgressBoard,
    WorkDone,
    leftovers,
    remove_leftovers,
    segment_paths,
    video_targets,
)  # fmt: skip

_WAIT = 0.2  # seconds between looks at the board while waiting for results
_GONE_WAIT = 30.0  # seconds to wait, after Ctrl-C, for killed actors' calls to end


@dataclass
class VideoOutcome:
    """One video's result: what the manifest records."""

    video: VideoJob
    frames: int = 0
    wall: float = 0.0  # seconds from its first call's start to its end, on the driver's clock
    nodes: list[str] = field(default_factory=list)
    decoder: str = ""
    encoder: str = ""
    attempts: int = 0  # the most attempts any of its calls took (1: no retry)
    segments: int = 0  # 0: annotated whole
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def fps(self) -> float:
        return self.frames / self.wall if self.wall > 0 else 0.0

    def record(self) -> dict:
        """The manifest line: input, output, frames, fps, worker node, codecs, attempts, error."""
        return {
            "input": str(self.video.input), "output": str(self.video.output), "frames": self.frames,
            "fps": round(self.fps, 3), "worker_node": ",".join(self.nodes), "decoder": self.decoder,
            "encoder": self.encoder, "attempts": self.attempts, "segments": self.segments, "error": self.error,
        }  # fmt: skip


@dataclass
class _Video:
    job: VideoJob
    key: str
    plan: dict | None = None
    started: float | None = None
    running: int = 0  # its segments' calls in flight
    error: str | None = None  # a segment failed
    outcome: VideoOutcome | None = None
    parts: list[WorkDone] = field(default_factory=list)


def worker_slots(cpus: float, gpus: float, use_gpus: bool, cpus_per_worker: int) -> int:
    """Actors the cluster holds: one per GPU, else one per ``cpus_per_worker`` CPUs."""
    if use_gpus:
        return max(1, int(gpus))
    return max(1, int(cpus // cpus_per_worker))


def annotate_on_ray(
    videos: Sequence[VideoJob],
    settings: AnnotateSettings,
    *,
    model: ModelOptions | None = None,
    overlay: OverlayOptions | None = None,
    workers: int | None = None,
    segment_seconds: float = 120.0,
    retries: int = 2,
    cpus_per_worker: int = 1,
    manifest: Path | None = None,
    on_event: Callable[[str, VideoJob | None, Any], None] | None = None,
) -> Iterator[VideoOutcome]:
    """Annotate ``videos`` on the Ray cluster this process is connected to.

    Yields each video's :class:`VideoOutcome` as it finishes (failed ones included:
    one video's problem never costs the others). Videos longer than ``segment_seconds``
    (0: never) are cut at keyframes and their segments annotated in parallel.
    ``workers``: actors to start (default: one per GPU, else one per ``cpus_per_worker``
    CPUs). ``retries``: how often Ray re-runs a call whose worker died.
    ``manifest``: a JSONL file that gets each outcome's :meth:`~VideoOutcome.record`.
    ``model`` and ``overlay``: how every worker builds its Explainer and Renderer (the
    command line's defaults when None). ``on_event(kind, video, value)``: progress for a
    display: ``("loading", None, workers)`` and ``("loaded", None, {workers, seconds,
    devices})`` around the workers' model load, ``("planned", video, frames)``,
    ``("started", video, {node, pid, attempt, call})`` (a call began on a worker),
    ``("frames", video, n)`` (n more frames done), ``("done", video, outcome)``.

    Raises :class:`~camvideo.errors.OutputError` at once, before anything runs, for a video
    without an annotated video output (``output=None``: records only, which runs locally
    only); :class:`~camvideo.errors.ModelError` when the workers cannot load the model
    (once, before any video starts); and KeyboardInterrupt after cleaning up on Ctrl-C.
    """
    for video in videos:
        if video.output is None:
            raise OutputError(f"{video.input}: output=None (records only) does not run on Ray; give the video an "
                              "output, or annotate it locally (camvideo.jobs.annotate_many)")  # fmt: skip
    return _run(list(videos), settings, model or ModelOptions(), overlay or OverlayOptions(), workers,
                segment_seconds, retries, cpus_per_worker, manifest, on_event)  # fmt: skip


def _run(
    videos: list[VideoJob],
    settings: AnnotateSettings,
    model: ModelOptions,
    overlay: OverlayOptions,
    workers: int | None,
    segment_seconds: float,
    retries: int,
    cpus_per_worker: int,
    manifest: Path | None,
    on_event: Callable[[str, VideoJob | None, Any], None] | None,
) -> Iterator[VideoOutcome]:
    """:func:`annotate_on_ray`'s generator, once its arguments are checked."""
    from .cluster import import_ray

    ray = import_ray()
    notify = on_event or (lambda kind, video, value: None)
    resources = ray.cluster_resources()
    use_gpus = resources.get("GPU", 0) > 0 and model.device != "cpu"
    batch = settings.batch_size or default_batch_size("cuda" if use_gpus else "cpu")
    warmup = WARMUP_TAUS * settings.smooth
    states = {f"v{i}": _Video(job, f"v{i}") for i, job in enumerate(videos)}
    log = open(manifest, "a", encoding="utf-8") if manifest is not None else None  # noqa: SIM115
    board = ray.remote(num_cpus=0)(ProgressBoard).remote()
    actors: list = []
    calls: dict = {}  # object ref -> (what, video key, segment or None, actor)
    attempts: collections.Counter = collections.Counter()  # call key -> starts seen

    def finish(state: _Video, outcome: VideoOutcome) -> VideoOutcome:
        outcome.attempts = max([attempts[k] for k in attempts if k.split("/")[0] == state.key] or [0])
        if outcome.ok:  # it ran, even if its "start" post has not reached the board yet
            outcome.attempts = max(outcome.attempts, 1)
        if state.started is not None and not outcome.wall:
            outcome.wall = time.monotonic() - state.started
        if not outcome.ok:
            _discard(state)
        state.outcome = outcome
        if log is not None:
            log.write(json.dumps(outcome.record()) + "\n")
            log.flush()
        notify("done", state.job, outcome)
        return outcome

    def read_board() -> None:
        for key, kind, *data in ray.get(board.take.remote()):
            state = states[key.split("/")[0]]
            if kind == "start":
                attempts[key] += 1
                if state.started is None:
                    state.started = time.monotonic()
                notify("started", state.job, {"node": data[0], "pid": data[1], "attempt": attempts[key], "call": key})
            elif kind == "frames":
                notify("frames", state.job, data[0])

    def submit(actor: Any, item: tuple) -> None:
        what, key, segment = item
        state = states[key]
        if what == "plan":
            ref = actor.plan.remote(state.job, settings.overwrite, segment_seconds, warmup, batch)
        elif what == "video":
            ref = actor.annotate.remote(key, state.job, board)
        elif what == "segment":
            ref = actor.annotate_segment.remote(f"{key}/{segment.index}", state.job, segment, board)
            state.running += 1
        else:  # join
            plan = state.plan
            ref = actor.join.remote(state.job, len(plan["segments"]), plan["time_base"], plan["has_audio"])
        calls[ref] = (what, key, segment, actor)

    try:
        # 1. The workers: one actor per slot, the model loaded once in each. Planning,
        # annotating and joining all run on them (a task would start a fresh process).
        slots = workers or worker_slots(resources.get("CPU", 0), resources.get("GPU", 0), use_gpus, cpus_per_worker)
        count = max(1, min(slots, len(videos) if segment_seconds <= 0 and not workers else slots))
        options = {"num_gpus": 1} if use_gpus else {"num_cpus": cpus_per_worker}
        restarts = retries * (len(videos) + 1)
        actor_class = ray.remote(max_restarts=restarts, max_task_retries=retries, **options)(AnnotateWorker)
        notify("loading", None, count)
        loading = time.monotonic()
        actors = [
            actor_class.remote(model, overlay, settings, None if use_gpus else cpus_per_worker) for _ in range(count)
        ]
        loaded = ray.get([a.ready.remote() for a in actors])
        errors = sorted({r["error"] for r in loaded if r["error"]})
        if errors:
            raise ModelError(f"the workers cannot load the model: {errors[0]}")
        seconds = time.monotonic() - loading
        notify("loaded", None, {"workers": count, "seconds": seconds, "devices": [r["device"] for r in loaded]})
        # 2. Each free actor takes the next item: plan a video (bad inputs end there), then
        # annotate it whole or its segments, then join them. Ray retries what a dead one had.
        work: collections.deque = collections.deque(("plan", key, None) for key in states)
        free = list(actors)
        while work or calls:
            while work and free:
                submit(free.pop(0), work.popleft())
            if work and not calls:  # every actor is out of restarts
                for key in dict.fromkeys(k for _, k, _ in work):
                    yield finish(states[key], VideoOutcome(states[key].job, error="no worker left on the cluster"))
                work.clear()
                continue
            ready, _ = ray.wait(list(calls), num_returns=1, timeout=_WAIT)
            read_board()
            for ref in ready:
                what, key, segment, actor = calls.pop(ref)
                state = states[key]
                done = _get(ray, ref)
                if done.extra.get("dead"):
                    actors.remove(actor)  # out of restarts: not given work again
                else:
                    free.append(actor)
                if what == "plan":
                    state.plan = done.extra.get("plan") or {"error": done.error}
                    if state.plan.get("error") is not None:
                        yield finish(state, VideoOutcome(state.job, error=state.plan["error"]))
                        continue
                    notify("planned", state.job, state.plan["frames"])
                    segments = state.plan["segments"]
                    work.extend([("segment", key, seg) for seg in segments] if segments else [("video", key, None)])
                elif what == "video":
                    outcome = VideoOutcome(state.job, done.frames, 0.0, [done.node], done.decoder, done.encoder,
                                           error=done.error)  # fmt: skip
                    yield finish(state, outcome)
                elif what == "join":
                    yield finish(state, _video_outcome(state, done))
                else:
                    state.running -= 1
                    state.parts.append(done)
                    if done.error is not None and state.error is None:
                        state.error = done.error  # the video fails; its other segments are dropped
                        work = collections.deque(w for w in work if w[1] != key)
                    if state.error is not None:
                        if state.running == 0:
                            yield finish(state, VideoOutcome(state.job, error=state.error, segments=len(state.parts)))
                    elif len(state.parts) == len(state.plan["segments"]):
                        work.appendleft(("join", key, None))  # first: a finished video is worth more
    except BaseException as err:
        # Ctrl-C, a model that does not load, the driver stopped early: nothing runs on.
        _stop(ray, actors, list(calls))
        for state in states.values():
            if state.outcome is None or not state.outcome.ok:
                _discard(state)
            if state.outcome is None and log is not None and isinstance(err, KeyboardInterrupt):
                log.write(
                    json.dumps(VideoOutcome(state.job, error="interrupted (Ctrl-C); nothing written").record()) + "\n"
                )
        raise
    finally:
        _kill(ray, [*actors, board])
        if log is not None:
            log.close()


def _get(ray: Any, ref: Any) -> WorkDone:
    """A call's result; a worker that died more often than Ray retries is a failure too."""
    try:
        result = ray.get(ref)
    except ray.exceptions.RayActorError as err:
        return WorkDone(error=f"the worker died and Ray's retries ran out ({type(err).__name__})", extra={"dead": True})
    except ray.exceptions.RayError as err:
        return WorkDone(error=f"the task failed on the cluster ({type(err).__name__}: {_one_line(err)})")
    return result


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]


def _video_outcome(state: _Video, joined: WorkDone) -> VideoOutcome:
    parts = state.parts
    nodes = sorted({p.node for p in parts if p.node})
    return VideoOutcome(state.job, joined.frames, 0.0, nodes, parts[0].decoder if parts else "",
                        parts[0].encoder if parts else "", segments=len(parts), error=joined.error)  # fmt: skip


def _discard(state: _Video) -> None:
    """Remove a failed or unfinished video's temporary files and segment parts."""
    count = len(state.plan["segments"]) if state.plan and state.plan.get("segments") else 0
    remove_leftovers(video_targets(state.job, count))
    for k in range(count):
        for path in segment_paths(state.job, k).values():
            if path is not None:
                path.unlink(missing_ok=True)


def _stop(ray: Any, actors: list, refs: list) -> None:
    """Kill the actors and wait until their calls have ended (their processes are gone).

    Only then may their partial files be removed: a process still writing would re-create
    them. A second Ctrl-C stops the wait; the cleanup still follows.
    """
    _kill(ray, actors)
    if refs:
        try:
            ray.wait(refs, num_returns=len(refs), timeout=_GONE_WAIT)
        except (Exception, KeyboardInterrupt):  # noqa: BLE001 - a lost cluster or a second Ctrl-C
            pass


def _kill(ray: Any, actors: list) -> None:
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead, or the cluster is gone
            pass


__all__ = ["VideoOutcome", "annotate_on_ray", "worker_slots", "leftovers"]
