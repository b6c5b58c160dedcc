"""Decoding Kafka values into Arrow rows: the fast (Arrow) and per-record paths agree on every value."""

from __future__ import annotations

import pyarrow as pa
from ingest_events import MALFORMED, MIDDLE, event, ms

from lakeloop.ingest.decode import JsonChunkDecoder
from lakeloop.ingest.schema import RATINGS_SCHEMA


def test_fast_and_per_record_decoding_agree():
    at = ms(MIDDLE)
    values = [event(f"e{n}", MIDDLE, user=n if n % 4 else f"u{n}", item=-n) for n in range(300)]
    values += [value % at if value and b"%d" in value else value for value in MALFORMED]
    values += [b'{"event_id":"x","user_id":-0,"item_id":12345678901234567890,"rating":1,"ts":1}',
               b'{"event_id":"y","user_id":"1","item_id":2,"rating":3,"ts":1,"note":"\\",\\"user_id\\":5,"}',
               b' {"event_id":"z","user_id":1,"item_id":2,"rating":3,"ts":1}\t',
               b'{"event_id":"w","user_id":1,"item_id":2,"rating":3,"ts":1}{"a":1}',
               b'{"event_id":"v","user_id":1,"item_id":2,"rating":3,"ts":1,"extra":Inf}',  # Arrow alone takes Inf
               b'{"event_id":"u","user_id":1,"item_id":2,"rating":Infinity,"ts":1}',
               b'\xef\xbb\xbf{"event_id":"t","user_id":1,"item_id":2,"rating":3,"ts":1}']  # byte order mark
    values = values[::3] + values[1::3] + values[2::3]  # interleave good and bad
    # a value that would merge with the next, then one holding two documents: rows must not shift
    values[150:150] = [b'{"event_id":"s","user_id":1,"item_id":2,"rating":3,"ts":1,"x":',
                       b'{"event_id":"r","user_id":1,"item_id":2,"rating":3,"ts":1}}',
                       b'{"event_id":"q","user_id":1,"item_id":2,"rating":3,"ts":1} {"event_id":"p"}']

    fast = JsonChunkDecoder(RATINGS_SCHEMA, min_fast_rows=4).decode(values)
    slow = JsonChunkDecoder(RATINGS_SCHEMA, fast_path=False).decode(values)

    assert fast.positions.tolist() == slow.positions.tolist()
    assert fast.rejects == slow.rejects
    assert str(fast.table.to_pylist()) == str(slow.table.to_pylist())  # str(): NaN == NaN
    decoded = dict(zip(fast.table["event_id"].to_pylist(), fast.table["item_id"].to_pylist(), strict=True))
    assert decoded["x"] == "12345678901234567890" and decoded["e4"] == "-4" and "t" in decoded
    assert [reason for _, reason, _ in fast.rejects].count("invalid_json") == 9  # incl. `Inf`


def test_an_arrow_binary_column_decodes_as_its_python_values():
    at = ms(MIDDLE)
    values = [event(f"e{n}", MIDDLE, user=n) for n in range(50)]
    values += [value % at if value and b"%d" in value else value for value in MALFORMED]
    values[10:10] = [b'{"event_id":"m","user_id":1,"item_id":2,"rating":3,"ts":1}', None, b"x" * 1024]
    sizes = [-1 if value is None else len(value) for value in values]
    sizes[12] = 2 * 1024 * 1024  # the head of an oversize value, its full size in Kafka
    decoder = JsonChunkDecoder(RATINGS_SCHEMA, min_fast_rows=4)

    from_python = decoder.decode(values, sizes)
    column = pa.array([b"pad"] + values, pa.binary()).slice(1)  # a slice, as a column of a shipped batch can be
    from_arrow = decoder.decode(column, pa.array(sizes, pa.int32()))

    assert from_arrow.positions.tolist() == from_python.positions.tolist()
    assert from_arrow.rejects == from_python.rejects
    assert (12, "oversize", "value of 2097152 bytes > 16384; only its first 1024 bytes are kept") in from_arrow.rejects
    assert str(from_arrow.table.to_pylist()) == str(from_python.table.to_pylist())  # str(): NaN == NaN
    assert from_arrow.table.num_rows + len(from_arrow.rejects) == len(values)
