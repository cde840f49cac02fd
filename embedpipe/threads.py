"""Threads joined by bounded queues: a worker that keeps its exception, puts that never deadlock
on a dead consumer or a stop request, and a drain that re-raises the producer's error."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

END = object()  # the last item a producer puts


class Worker(threading.Thread):
    """A daemon thread that keeps its exception for the caller to re-raise."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=f"embedpipe-{name}", daemon=True)
        self._fn = target
        self.error: BaseException | None = None
        self.done = False

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.done = True

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


def put(
    q: queue.Queue[Any], item: Any, consumer: Worker | None, stop: threading.Event | None = None
) -> bool:
    """Put without deadlocking on a consumer that died or a stop request. False when abandoned."""
    while True:
        if consumer is not None and consumer.done and item is not END:
            return False
        if stop is not None and stop.is_set():
            return False
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            if consumer is not None and consumer.done:
                return False


def drain(q: queue.Queue[Any], producer: Worker) -> Iterator[Any]:
    """The items of the lists a producer puts, until END; its exception re-raised here."""
    while True:
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            if producer.done and q.empty():
                producer.reraise()
                return
            continue
        if item is END:
            return
        yield from item
