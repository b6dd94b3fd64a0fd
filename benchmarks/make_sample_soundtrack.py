"""Build ``sample_videos/cat_and_coffee_narrated.mp4``: the cat clip with a soundtrack of our own.

The default sample of ``camvideo annotate`` and ``camvideo live``: the video stream of
``sample_videos/cat_and_coffee.mp4`` (two CC0 photos, see ``make_sample_clip.py``), copied
packet for packet, plus a 4 s soundtrack generated here, so the sample shows that the
annotated MP4 keeps the sound:

- a soft chord under each half (C major under the cat, A minor under the cup), made by
  ``sox``'s ``synth``;
- a spoken line on each half ("Here is a cat." at 0.3 s, "And a cup of coffee." at
  2.3 s), made by ``espeak-ng`` (voice ``en-gb``);
- a glass "clink" (a plucked E6) at the cut, 2.0 s.

Everything audible is generated from numbers and text by this script, so the soundtrack is
ours to dedicate to the public domain (CC0), like the photos. Needs the Debian packages
``sox`` and ``espeak-ng`` (``sudo apt-get install sox espeak-ng``).

AAC-LC 48 kHz stereo 128 kb/s; deterministic for a given sox/espeak-ng/FFmpeg build.

    python benchmarks/make_sample_soundtrack.py [OUTPUT]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import tempfile

import av
import numpy as np

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "sample_videos"
VIDEO = SAMPLES / "cat_and_coffee.mp4"
DEFAULT_OUTPUT = SAMPLES / "cat_and_coffee_narrated.mp4"
RATE, SECONDS = 48000, 4.0
LINES = [(0.3, "Here is a cat."), (2.3, "And a cup of coffee.")]
CHORDS = [(0.0, (261.63, 329.63, 392.00)), (2.0, (220.00, 261.63, 329.63))]  # C major, A minor


def _run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _read_wav(path: pathlib.Path) -> np.ndarray:
    """Mono float32 samples at RATE (sox converts what espeak-ng wrote)."""
    raw = path.with_suffix(".f32")
    _run("sox", "-D", str(path), "-r", str(RATE), "-c", "1", "-t", "f32", str(raw))
    return np.fromfile(raw, dtype=np.float32)


def soundtrack(tmp: pathlib.Path) -> np.ndarray:
    """(2, RATE * SECONDS) float32 stereo in [-1, 1]."""
    total = int(RATE * SECONDS)
    mix = np.zeros(total, np.float32)

    def add(samples: np.ndarray, start: float, gain: float) -> None:
        at = round(start * RATE)
        n = min(len(samples), total - at)
        mix[at : at + n] += gain * samples[:n]

    for i, (start, tones) in enumerate(CHORDS):
        wav = tmp / f"chord{i}.wav"
        synth = [arg for f in tones for arg in ("sine", f"{f}")]
        _run("sox", "-D", "-n", "-r", str(RATE), "-c", str(len(tones)), str(wav), "synth", "2.0", *synth,
             "remix", "-", "fade", "q", "0.25", "2.0", "0.35")  # fmt: skip
        add(_read_wav(wav), start, 0.12)
    clink = tmp / "clink.wav"
    _run(
        "sox",
        "-D",
        "-n",
        "-r",
        str(RATE),
        "-c",
        "1",
        str(clink),
        "synth",
        "0.6",
        "pluck",
        "E6",
        "fade",
        "0",
        "0.6",
        "0.5",
    )
    add(_read_wav(clink), 2.0, 0.35)
    for i, (start, text) in enumerate(LINES):
        wav = tmp / f"line{i}.wav"
        _run("espeak-ng", "-v", "en-gb", "-s", "150", "-w", str(wav), text)
        voice = _read_wav(wav)
        add(voice / max(1e-6, float(np.abs(voice).max())), start, 0.6)
    mix /= max(1.0, float(np.abs(mix).max()) / 0.9)  # headroom, never clipped
    return np.stack([mix, mix])


def mux(video: pathlib.Path, audio: np.ndarray, output: pathlib.Path) -> None:
    """Copy the video packets, encode the audio as AAC, into a +faststart MP4."""
    with av.open(str(video)) as src, av.open(str(output), "w", options={"movflags": "+faststart"}) as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream("aac", rate=RATE, layout="stereo")
        aout.bit_rate = 128_000
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
        frame_size = 1024
        for start in range(0, audio.shape[1], frame_size):
            chunk = np.ascontiguousarray(audio[:, start : start + frame_size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = RATE
            frame.pts = start
            out.mux(aout.encode(frame))
        out.mux(aout.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=pathlib.Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    for tool in ("sox", "espeak-ng"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: sudo apt-get install sox espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        audio = soundtrack(pathlib.Path(tmp))
        partial = pathlib.Path(tmp) / "out.mp4"
        mux(VIDEO, audio, partial)
        shutil.move(str(partial), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
