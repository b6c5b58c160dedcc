"""Reading Kafka ahead of the decoding in a background thread."""

from __future__ import annotations

import itertools
import sys
import threading

import pytest

from lakeloop.ingest.errors import KafkaSliceError
from lakeloop.ingest.read_ahead import ReadAhead


def test_read_ahead_keeps_the_order_raises_in_place_and_always_stops_its_thread():
    interval = sys.getswitchinterval()

    def ten_then_broken(stop):
        yield from range(10)
        raise KafkaSliceError("broker gone")

    received = []
    with pytest.raises(KafkaSliceError, match="broker gone"):
        with ReadAhead(ten_then_broken, depth=2, switch_interval_s=0.0005) as batches:
            assert sys.getswitchinterval() == pytest.approx(min(interval, 0.0005))
            for batch in batches:
                received.extend(batch)
    assert received == list(range(10))

    def endless(stop):
        yield from itertools.takewhile(lambda _: not stop.is_set(), itertools.count())

    with ReadAhead(endless, depth=2, switch_interval_s=0.0005) as batches:
        assert next(batches)[0] == 0  # leaving early: the reader must stop, not fill the queue forever
    assert not [thread for thread in threading.enumerate() if thread.name == "lakeloop-ingest-read-ahead"]
    assert sys.getswitchinterval() == interval
