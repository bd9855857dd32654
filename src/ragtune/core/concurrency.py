"""Calls to a server in worker threads, in a way Ctrl-C and SIGTERM can stop at once.

``concurrent.futures.ThreadPoolExecutor`` joins its workers when its ``with`` block exits and again
at interpreter exit, so an interrupted ``ragtune eval llm`` or ``infer --url`` waited for every call
in flight, up to the request timeout (minutes for a judge). The workers here are daemon threads:
an interrupt in the main thread leaves at once, the calls in flight are abandoned (their results
were never recorded: callers journal each finished item from the main thread, so a rerun resumes
exactly where it stopped), and no worker is joined at exit.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def as_completed_in_threads(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item))`` as the calls finish, from up to ``workers`` daemon threads. An
    exception of ``fn`` is raised here (the remaining calls are not started)."""
    todo: queue.SimpleQueue[T] = queue.SimpleQueue()
    count = 0
    for item in items:
        todo.put(item)
        count += 1
    done: queue.SimpleQueue[tuple[T, R | None, BaseException | None]] = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((item, fn(item), None))
            except BaseException as exc:   # handed to the main thread, which decides
                done.put((item, None, exc))

    for _ in range(min(workers, count)):
        threading.Thread(target=work, name="ragtune-call", daemon=True).start()
    try:
        for _ in range(count):
            item, result, exc = done.get()   # a blocking get: Ctrl-C / SIGTERM interrupt it
            if exc is not None:
                raise exc
            yield item, result   # type: ignore[misc]
    finally:
        stop.set()   # workers take no new item; the ones in flight are abandoned


def map_in_threads(fn: Callable[[T], R], items: list[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` in order, computed by :func:`as_completed_in_threads`."""
    out: dict[int, R] = {}
    for (i, _), result in as_completed_in_threads(lambda pair: fn(pair[1]), list(enumerate(items)), workers):
        out[i] = result
    return [out[i] for i in range(len(items))]
