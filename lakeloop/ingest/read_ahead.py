"""Reading Kafka a few chunks ahead of the decoding in a background thread.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

from lakeloop.ingest.slices import PartitionSlice


class ReadAhead:
    """Runs an iterator in a background thread, at most `depth` items ahead of the thread consuming it.

    Reading Kafka is pure Python (kafka-python unpacks every record), while decoding, validating and
    writing run mostly in Arrow's and numpy's C++ without the GIL; on two cores, reading the next chunks
    while the current one is decoded overlaps the two. But each return from C++ to Python waits until
    the reading thread, which never blocks, is made to yield the GIL: after `sys.getswitchinterval()`,
    5 ms by default, which a chunk's few dozen Arrow and numpy calls turn into most of its decoding
    time. So while reading ahead the interval is lowered to `switch_interval_s` (restored afterwards),
    and the consuming thread takes all the items ready (at least one) in one batch: if it falls behind,
    it catches up with fewer switches per item. An exception of the iterator is raised in the consuming
    thread at its place in the order; leaving the `with` block stops the background thread and waits for
    it (so the Kafka consumer is free again afterwards).

    At most `2 * depth + 1` items are held at once: a batch being consumed (at most `depth` items), the
    queue behind it (`depth`), and the item the background thread is handing over. With the ingestion's
    chunks bounded by bytes, that bounds the memory of the read-ahead (see docs/ingestion.md).

    Args:
        make_items: Called in the background thread with a stop event, which the iterator should check
            between blocking calls so that an early exit does not wait for them.
        depth: Items produced but not yet consumed, at most (bounds the memory held, see above).
        switch_interval_s: The interpreter's thread switch interval while reading ahead (if lower).
    """

    _END = object()

    def __init__(self, make_items: Callable[[threading.Event], Generator[Any, None, None]], depth: int,
                 switch_interval_s: float) -> None:
        self._make_items = make_items
        self._switch_interval_s = switch_interval_s
        self._cleanup = contextlib.ExitStack()
        self._handoff: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="lakeloop-ingest-read-ahead", daemon=True)

    def __enter__(self) -> Iterator[list[Any]]:
        self._cleanup.enter_context(short_switch_interval(self._switch_interval_s))
        self._thread.start()
        return self._consume()

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._cleanup.close()

    def _produce(self) -> None:
        items = self._make_items(self._stop)
        try:
            for item in items:
                if not self._put((item, None)):
                    return
            self._put((self._END, None))
        except BaseException as error:  # handed to the consuming thread, which raises it
            self._put((self._END, error))
        finally:
            items.close()

    def _put(self, entry: tuple[Any, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _consume(self) -> Iterator[list[Any]]:
        while True:
            entries = [self._handoff.get()]
            while not self._handoff.empty():
                entries.append(self._handoff.get_nowait())  # this thread is the only one taking entries
            items = [item for item, _ in entries if item is not self._END]
            if items:
                yield items
            if entries[-1][0] is self._END:
                if entries[-1][1] is not None:
                    raise entries[-1][1]
                return


_switch_interval_lock = threading.Lock()


_switch_interval_users = 0


_switch_interval_saved = 0.0


@contextlib.contextmanager
def short_switch_interval(seconds: float) -> Iterator[None]:
    """Lower the interpreter's thread switch interval to `seconds` (if higher) while any user is inside.

    Process-wide, so counted: the first user saves the interval, the last one restores it, even when
    ingestions overlap in several threads.
    """
    global _switch_interval_users, _switch_interval_saved
    with _switch_interval_lock:
        if _switch_interval_users == 0:
            _switch_interval_saved = sys.getswitchinterval()
        _switch_interval_users += 1
        sys.setswitchinterval(min(_switch_interval_saved, seconds))
    try:
        yield
    finally:
        with _switch_interval_lock:
            _switch_interval_users -= 1
            if _switch_interval_users == 0:
                sys.setswitchinterval(_switch_interval_saved)


def joined_by_slice(batches: Iterator[list[tuple[PartitionSlice, list]]]) -> Iterator[tuple[PartitionSlice, list]]:
    """Each batch's consecutive chunks of one slice as one list of records (in order)."""
    for batch in batches:
        for piece, chunks in itertools.groupby(batch, key=operator.itemgetter(0)):
            yield piece, list(itertools.chain.from_iterable(records for _, records in chunks))
