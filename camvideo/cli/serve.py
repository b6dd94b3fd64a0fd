"""``camvideo serve``: the live session in a web browser (see :mod:`camvideo.serve`).

The source is opened and the model loaded before the server starts, so a missing camera,
a wrong class name or a busy port ends with one ``camvideo: error: ...`` line; then the
URL is printed first, and the server runs until Ctrl-C (a recording in progress is finished).
"""

from __future__ import annotations

import argparse
import secrets
import socket
import sys
from pathlib import Path

from ..errors import CamvideoError, OutputError

EXIT_OK = 0


def check_extra() -> None:
    """The server's dependency is an extra: say how to install it, in one line."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise CamvideoError(
            'camvideo serve needs aiohttp: pip install aiohttp (from the clone: pip install ".[serve]")'
        ) from None


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, where ``host:port`` cannot be listened on (the server binds it again later)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            probe.bind(address)
    except OSError as err:
        raise CamvideoError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port") from None


def run_serve(args: argparse.Namespace) -> int:
    """Open the source, load the model, serve until Ctrl-C; the exit code."""
    check_extra()
    from ..engine import Explainer
    from ..jobs import LiveOptions, LiveSession, target_of
    from ..serve import BrowserSource, ServeConfig, Server, is_loopback, serve_until_stopped
    from ..sources import open_live_source

    token = args.token
    if token is None and not is_loopback(args.host):
        token = secrets.token_urlsafe(24)  # beyond this machine: never without a token
    if not 10 <= args.jpeg_quality <= 100:
        raise CamvideoError(f"--jpeg-quality {args.jpeg_quality}: give 10 to 100")
    folder = Path(args.output_folder)
    if not folder.is_dir():
        raise OutputError(f"{folder}: not a folder (--output-folder, where recordings are saved)")
    check_port(args.host, args.port)  # before the model loads (seconds): a busy port fails at once
    options = LiveOptions.from_args(args)
    browser = BrowserSource() if args.source == "browser" else None
    source = browser if browser is not None else open_live_source(args.source, loop=args.loop)
    try:
        explainer = Explainer.from_options(options.model_options())
        explainer.selector(target_of(options.target))  # a wrong class name fails now
    except BaseException:
        source.close()
        raise
    session = LiveSession(source, options, explainer=explainer, loop=args.loop)
    config = ServeConfig(host=args.host, port=args.port, token=token, jpeg_quality=args.jpeg_quality,
                         output_folder=folder)  # fmt: skip
    server = Server(session, config, browser=browser)

    def announce(url: str) -> None:
        print(f"camvideo serve: open {url}", flush=True)
        for other in server.urls[1:]:  # --host 0.0.0.0: this machine's name first, then 127.0.0.1
            print(f"  or {other}", flush=True)
        print(f"  source: {source.name}; MJPEG: {url.split('?')[0]}stream.mjpg"
              f"{'?token=' + token if token else ''}; Ctrl-C stops", flush=True)  # fmt: skip

    try:
        recording = serve_until_stopped(server, announce)
    except CamvideoError:  # the port is busy: nothing started but the source
        source.close()
        raise
    if recording is not None:
        print(f"camvideo: recording saved to {recording}", file=sys.stderr)
    return EXIT_OK
