"""The vector index's readers-writer lock: searches share it, writers have it alone."""

from __future__ import annotations

import threading
import time

from coordd.storage.vector_index import ReadWriteLock


def _wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_readers_share_and_a_writer_waits_for_them_and_blocks_new_readers() -> None:
    lock = ReadWriteLock()
    assert lock.try_read() and lock.try_read()  # two searches at once
    wrote = threading.Event()

    def writer() -> None:
        with lock:
            wrote.set()

    t = threading.Thread(target=writer)
    t.start()
    _wait_until(lambda: lock._writers_waiting == 1)
    assert not wrote.is_set()
    assert not lock.try_read()  # a waiting writer is not starved by new searches
    lock.release_read()
    assert not wrote.is_set()
    lock.release_read()
    t.join(10)
    assert wrote.is_set()
    assert lock.try_read()
    lock.release_read()


def test_a_blocking_reader_waits_for_the_writer() -> None:
    lock = ReadWriteLock()
    lock.write()
    read = threading.Event()

    def reader() -> None:
        lock.read()
        read.set()
        lock.release_read()

    t = threading.Thread(target=reader)
    t.start()
    assert not lock.try_read()
    assert not read.wait(0.05)
    lock.release_write()
    t.join(10)
    assert read.is_set()
