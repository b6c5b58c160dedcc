"""Duplicate detection across the chunks of a slice."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lakeloop.ingest.validate import SeenIds


def test_seen_ids_marks_first_occurrences_across_calls():
    seen = SeenIds()
    assert seen.first_occurrences(pa.array(["a", "b", "a", "c"])).tolist() == [True, True, False, True]
    assert seen.first_occurrences(pa.array(["c", "d", "d", "e"])).tolist() == [False, True, False, True]
    for batch in range(40):
        seen.first_occurrences(pa.array([f"id-{batch}-{n}" for n in range(100)]))
    assert len(seen) == 5 + 4000
    assert seen.first_occurrences(pa.array(["id-0-0", "id-39-99", "new"])).tolist() == [False, False, True]


def test_seen_ids_tell_apart_ids_that_share_the_first_half_of_their_fingerprint():
    class FewFirstHalves(SeenIds):
        MERGE_LIMIT = 64

        @classmethod
        def _fingerprints(cls, ids):
            high, low = SeenIds._fingerprints(ids)
            return high % np.uint64(3), low  # every id collides on the first half with a third of the others

    seen, expected = FewFirstHalves(), set()
    for batch in range(30):
        ids = [f"id-{batch // 3 * 5 + n * 3 % 11}" for n in range(batch % 14 + 1)]  # repeats within a batch, too
        firsts = [not (event_id in expected or expected.add(event_id)) for event_id in ids]
        assert seen.first_occurrences(pa.array(ids)).tolist() == firsts
    assert len(seen) == len(expected)
