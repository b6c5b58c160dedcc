"""Duplicate detection across the chunks of a slice."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lakeloop.ingest.validate import SeenIds


def test_seen_ids_marks_first_occurrences_across_calls():
    seen = SeenIds()
    assert seen.occurrences(pa.array(["a", "b", "a", "c"])).first.tolist() == [True, True, False, True]
    assert seen.occurrences(pa.array(["c", "d", "d", "e"])).first.tolist() == [False, True, False, True]
    for batch in range(40):
        seen.occurrences(pa.array([f"id-{batch}-{n}" for n in range(100)]))
    assert len(seen) == 5 + 4000
    assert seen.occurrences(pa.array(["id-0-0", "id-39-99", "new"])).first.tolist() == [False, False, True]


def test_seen_ids_tell_exact_repeats_from_conflicting_ones():
    seen = SeenIds()
    found = seen.occurrences(pa.array(["a", "b", "a", "a", "b"]), pa.table({
        "user": ["u1", "u2", "u1", "u1", "u2"], "rating": [1.0, 2.0, 1.0, 3.0, 2.0],
        "note": [None, "x", None, None, "y"]}))
    assert found.first.tolist() == [True, True, False, False, False]
    assert found.conflicting.tolist() == [False, False, False, True, True]  # rating 3.0; note "y" for "x"
    found = seen.occurrences(pa.array(["b", "a", "c", "a"]), pa.table({
        "user": ["u2", "u9", "u3", "u1"], "rating": [2.0, 1.0, 5.0, 1.0], "note": ["x", None, None, "x"]}))
    assert found.first.tolist() == [False, False, True, False]
    assert found.conflicting.tolist() == [False, True, False, True]  # against the first call's rows
    swapped = SeenIds()
    swapped.occurrences(pa.array(["s"]), pa.table({"user": ["ab"], "item": ["c"]}))
    assert swapped.occurrences(pa.array(["s"]), pa.table({"user": ["a"], "item": ["bc"]})).conflicting.tolist() == [
        True]


def test_seen_ids_tell_apart_ids_that_share_the_first_half_of_their_fingerprint():
    class FewFirstHalves(SeenIds):
        MERGE_LIMIT = 64

        @classmethod
        def _fingerprints(cls, ids):
            high, low = SeenIds._fingerprints(ids)
            return high % np.uint64(3), low  # every id collides on the first half with a third of the others

    seen, contents = FewFirstHalves(), {}
    for batch in range(30):
        ids = [f"id-{batch // 3 * 5 + n * 3 % 11}" for n in range(batch % 14 + 1)]  # repeats within a batch, too
        ratings = [float(n % 4 == 0) for n in range(len(ids))]
        firsts, conflicts = [], []
        for event_id, rating in zip(ids, ratings, strict=True):
            firsts.append(event_id not in contents)
            conflicts.append(contents.setdefault(event_id, rating) != rating)
        found = seen.occurrences(pa.array(ids), pa.table({"rating": ratings}))
        assert found.first.tolist() == firsts
        assert found.conflicting.tolist() == conflicts
    assert len(seen) == len(contents)
