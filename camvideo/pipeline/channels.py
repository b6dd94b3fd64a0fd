"""The one drop-oldest channel between threads.

Live video wants the newest frame, never a backlog: when a consumer is slower than its
producer, the oldest waiting item is dropped (and counted) instead of blocking the
producer. :class:`DropOldest` is that buffer for every such place: the live frame
queue of :class:`~camvideo.pipeline.Pipeline`, the display and settings slots of a
live session (``size=1``), and a stream's audio on its way to a recording.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["DropOldest"]


class DropOldest(Generic[T]):
    """A FIFO of at most ``size`` items whose :meth:`put` never blocks: when it is full,
    the oldest item is dropped and counted in :attr:`dropped`.

    ``on_ready`` is called (in the producer's thread, outside the lock) when a put makes
    an empty channel non-empty. A GUI posts one event from it: however many items arrive
    before the GUI thread gets to them, at most one wake-up is pending, unlike a queued
    signal per item.

    After :meth:`close`, puts are ignored and :meth:`get` returns what is left, then
    None at once.

    >>> slot = DropOldest[int](1)
    >>> slot.put(1); slot.put(2)
    >>> slot.take(), slot.dropped
    (2, 1)
    """

    def __init__(self, size: int = 1, on_ready: Callable[[], None] | None = None) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._size = max(1, size)
        self._cond = threading.Condition()
        self._closed = False
        self.on_ready = on_ready
        self.puts = 0  # items offered, dropped ones included
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._closed:
                return
            ring = not self._items
            if len(self._items) >= self._size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.puts += 1
            self._cond.notify_all()
        callback = self.on_ready
        if ring and callback is not None:
            callback()

    def take(self) -> T | None:
        """The oldest waiting item, or None when none is waiting (never blocks)."""
        with self._cond:
            return self._items.popleft() if self._items else None

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest waiting item, waiting up to ``timeout`` seconds; None if none came
        (or the channel is closed and empty)."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self._closed, timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """No more items: wake every waiting :meth:`get`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
