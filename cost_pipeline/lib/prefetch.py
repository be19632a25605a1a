"""Run an iterator in a background thread, a few items ahead of its consumer.

The ingester parses, validates and prices the next chunk of a file while the database loads
the previous one: both spend their time outside the GIL (Arrow's readers, the database
server), so on two cores the slower of the two sets the pace instead of their sum.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterable[T], *, depth: int = 2) -> Iterator[T]:
    """Yield `items` in order, produced by a background thread at most `depth` ahead.

    An exception raised by the producer is re-raised here, at the point it was reached. If the
    consumer stops early, the producer stops after its current item.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put((item, None))
        except BaseException as exc:  # handed to the consumer
            buffer.put((_DONE, exc))
            return
        buffer.put((_DONE, None))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
