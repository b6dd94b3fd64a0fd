"""Running a :class:`~camvideo.serve.Server`: until Ctrl-C (the command), or in a thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .server import Server

__all__ = ["ServerThread", "serve_until_stopped"]


def serve_until_stopped(server: Server, on_url: Callable[[str], None] = print) -> Path | None:
    """Start ``server``, tell ``on_url`` its URL, serve until SIGINT or SIGTERM, then stop it
    cleanly (a recording in progress is finished); the finished recording's path, if any."""

    async def main() -> Path | None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt
                pass
        url = await server.start()  # a busy port fails here, before anything runs
        try:
            on_url(url)
            await stop.wait()
        finally:
            print("camvideo: stopping (Ctrl-C again to quit at once)", file=sys.stderr)
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:  # a second Ctrl-C while a recording is finishing: the user wants out now
                    loop.add_signal_handler(sig, os._exit, 130)
                except (NotImplementedError, RuntimeError):
                    pass
            path = await server.close()
        return path

    return asyncio.run(main())


class ServerThread:
    """A server on its own event loop in a thread: ``url = ServerThread(server).start()``, then ``stop()``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = ""
        self.recording: Path | None = None
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="camvideo-serve-loop", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.url = self.loop.run_until_complete(self.server.start())
        except BaseException as err:  # noqa: BLE001 - raised again by start()
            self._error = err
            self._started.set()
            return
        self._started.set()
        self.loop.run_forever()
        self.loop.close()

    def start(self, timeout: float = 60.0) -> str:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the server did not start")
        if self._error is not None:
            raise self._error
        return self.url

    def call(self, coroutine, timeout: float = 30.0):  # noqa: ANN001 - any coroutine
        """Run ``coroutine`` on the server's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        if self._error is None and self._thread.is_alive():
            self.recording = self.call(self.server.close(), timeout)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
