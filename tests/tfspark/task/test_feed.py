"""The Arrow feed: local cache with spill, Arrow → numpy columns, equal-size cyclic batches, tf.data."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest

from tfspark.task.feed import (
    ArrowCache,
    BackgroundFill,
    BatchFeed,
    cache_partition,
    column_specs,
    record_batch_to_numpy,
)


def ratings_batches(rows: int, per_batch: int, start: int = 0) -> list[pa.RecordBatch]:
    """Record batches shaped like Spark's Arrow output: long ids, double label, array<float> of width 2."""
    batches = []
    for first in range(start, start + rows, per_batch):
        ids = np.arange(first, min(first + per_batch, start + rows), dtype=np.int64)
        pairs = pa.ListArray.from_arrays(
            pa.array(np.arange(0, 2 * len(ids) + 1, 2, dtype=np.int32)),
            pa.array(np.repeat(ids, 2).astype(np.float32) + np.tile([0.0, 0.5], len(ids)).astype(np.float32)),
        )
        batches.append(
            pa.RecordBatch.from_arrays(
                [pa.array(ids), pa.array(ids * 0.5), pairs],
                names=["row_id", "label", "pair"],
            )
        )
    return batches


def test_cache_keeps_small_partitions_in_memory():
    with cache_partition(ratings_batches(100, 30)) as cache:
        assert not cache.spilled
        assert (cache.num_rows, cache.num_batches) == (100, 4)
        assert [cache.batch_length(i) for i in range(4)] == [30, 30, 30, 10]


def test_cache_spills_to_local_arrow_file_past_the_limit_and_reads_back_the_same(tmp_path):
    batches = ratings_batches(1000, 100)
    cache = cache_partition(batches, spill_dir=str(tmp_path), memory_limit_bytes=batches[0].nbytes * 2)
    try:
        assert cache.spilled
        spill_files = list(tmp_path.iterdir())
        assert len(spill_files) == 1 and spill_files[0].suffix == ".arrow"
        assert cache.num_rows == 1000
        for index, original in enumerate(batches):
            assert cache.batch(index).equals(original)
    finally:
        cache.close()
    assert not os.listdir(tmp_path)


def test_cache_drops_empty_batches_and_rejects_a_changed_schema():
    cache = ArrowCache()
    cache.append(ratings_batches(5, 5)[0].slice(0, 0))
    assert cache.num_batches == 0
    cache.append(ratings_batches(5, 5)[0])
    with pytest.raises(ValueError, match="schema changed"):
        cache.append(pa.RecordBatch.from_pydict({"other": [1]}))


def test_columns_become_numpy_without_per_row_python():
    batch = ratings_batches(4, 4)[0]
    specs = column_specs(batch)
    assert specs["pair"].width == 2 and specs["row_id"].width is None
    columns = record_batch_to_numpy(batch, specs)
    assert columns["row_id"].dtype == np.int64
    assert columns["label"].dtype == np.float32, "doubles become float32"
    assert columns["pair"].shape == (4, 2)
    np.testing.assert_array_equal(columns["pair"][3], [3.0, 3.5])


def test_columns_the_feed_cannot_take_are_refused_clearly():
    with pytest.raises(TypeError, match="numeric"):
        column_specs(pa.RecordBatch.from_pydict({"name": ["a"], "label": [1.0]}))
    with_null = pa.RecordBatch.from_pydict({"x": pa.array([1.0, None]), "label": [1.0, 2.0]})
    with pytest.raises(ValueError, match="nulls"):
        record_batch_to_numpy(with_null, column_specs(with_null))
    ragged = pa.RecordBatch.from_pydict({"v": pa.array([[1.0, 2.0], [3.0]]), "label": [1.0, 2.0]})
    with pytest.raises(ValueError, match="one length"):
        record_batch_to_numpy(ragged, column_specs(ragged))


def test_feed_cycles_a_short_partition_into_exactly_the_batches_asked_for():
    with cache_partition(ratings_batches(25, 10)) as cache:
        feed = BatchFeed(cache, "label", batch_size=8, total_batches=7, shuffle=False)
        batches = list(feed.iter_numpy())
    assert len(batches) == 7
    assert all(len(label) == 8 and features["pair"].shape == (8, 2) for features, label in batches)
    row_ids = np.concatenate([features["row_id"] for features, _ in batches])
    np.testing.assert_array_equal(row_ids, np.arange(56) % 25)
    np.testing.assert_array_equal(np.concatenate([label for _, label in batches]), (np.arange(56) % 25) * 0.5)


def test_shuffled_feed_visits_every_row_once_per_pass():
    with cache_partition(ratings_batches(60, 7)) as cache:
        feed = BatchFeed(cache, "label", batch_size=6, total_batches=20, shuffle=True, seed=3, rank=1)
        row_ids = np.concatenate([features["row_id"] for features, _ in feed.iter_numpy()])
    assert sorted(row_ids[:60]) == list(range(60))
    assert sorted(row_ids[60:]) == list(range(60))
    assert list(row_ids[:60]) != list(range(60))
    assert list(row_ids[:60]) != list(row_ids[60:]), "each pass has its own order"


def test_the_batches_cut_from_one_record_batch_travel_as_one_chunk():
    with cache_partition(ratings_batches(95, 30)) as cache:
        feed = BatchFeed(cache, "label", batch_size=8, total_batches=20, shuffle=False)
        chunks = list(feed.iter_chunks())
        batches = list(feed.iter_numpy())
    assert [len(label) for _, label in chunks] == [3, 4, 4, 4, 4, 1], "30 rows, then 30 + the rows left over"
    assert chunks[1][0]["pair"].shape == (4, 8, 2)
    row_ids = np.concatenate([features["row_id"].ravel() for features, _ in chunks])
    np.testing.assert_array_equal(row_ids, np.arange(160) % 95)
    np.testing.assert_array_equal(row_ids, np.concatenate([features["row_id"] for features, _ in batches]))


def test_starting_at_a_batch_equals_skipping_to_it():
    with cache_partition(ratings_batches(50, 9)) as cache:
        feed = BatchFeed(cache, "label", batch_size=7, total_batches=30, shuffle=True, seed=11)
        everything = [features["row_id"] for features, _ in feed.iter_numpy()]
        resumed = [features["row_id"] for features, _ in feed.iter_numpy(start_batch=17)]
    assert len(resumed) == 13
    for expected, actual in zip(everything[17:], resumed, strict=True):
        np.testing.assert_array_equal(expected, actual)


def test_dataset_yields_fixed_shape_batches_from_its_start_batch():
    with cache_partition(ratings_batches(40, 16)) as cache:
        feed = BatchFeed(cache, "label", batch_size=5, total_batches=10, shuffle=False)
        dataset = feed.dataset()
        features_spec, label_spec = dataset.element_spec
        assert features_spec["pair"].shape == (5, 2) and label_spec.shape == (5,)
        assert set(features_spec) == {"row_id", "pair"}
        assert [int(features["row_id"][0]) for features, _ in dataset] == list(range(0, 50, 5)[:8]) + [0, 5]
        feed.start_batch = 8
        assert [int(features["row_id"][0]) for features, _ in dataset] == [0, 5]


def _dataset_batches(feed: BatchFeed) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    return [({name: values.numpy() for name, values in features.items()}, label.numpy())
            for features, label in feed.dataset()]


def _assert_same_batches(expected, actual) -> None:
    assert len(expected) == len(actual)
    for (features, label), (features_again, label_again) in zip(expected, actual, strict=True):
        np.testing.assert_array_equal(label, label_again)
        for name in features:
            np.testing.assert_array_equal(features[name], features_again[name])


def test_the_run_order_names_the_rows_the_chunks_cut():
    with cache_partition(ratings_batches(50, 9)) as cache:
        feed = BatchFeed(cache, "label", batch_size=7, total_batches=30, seed=11)
        order = feed.run_order()
        assert order.shape == (30, 7) and order.dtype == np.int32
        row_ids = [features["row_id"] for features, _ in feed.iter_numpy()]
    np.testing.assert_array_equal(order, np.stack(row_ids))  # row_id is the row's place in the cache


def test_an_in_memory_cache_feeds_the_batches_of_iter_numpy_and_resumes_at_its_start_batch():
    with cache_partition(ratings_batches(50, 9)) as cache:
        feed = BatchFeed(cache, "label", batch_size=7, total_batches=30, seed=11)
        expected = list(feed.iter_numpy())
        _assert_same_batches(expected, _dataset_batches(feed))
        feed.start_batch = 17
        _assert_same_batches(expected[17:], _dataset_batches(feed))


def test_the_in_memory_dataset_takes_the_caches_batches_so_the_partition_is_held_once():
    with cache_partition(ratings_batches(50, 9)) as cache, cache_partition(ratings_batches(50, 9)) as copy:
        feed = BatchFeed(cache, "label", batch_size=7, total_batches=30, seed=11)
        dataset = feed.dataset()
        assert cache.num_rows == 50
        with pytest.raises(RuntimeError, match="handed over"):
            cache.batch(0)
        with pytest.raises(RuntimeError, match="handed over"):
            next(feed.iter_numpy())
        expected = list(BatchFeed(copy, "label", batch_size=7, total_batches=30, seed=11).iter_numpy())
        _assert_same_batches(expected, [({name: values.numpy() for name, values in features.items()}, label.numpy())
                                        for features, label in dataset])


def test_in_memory_columns_become_tensors_over_their_own_buffer_when_aligned():
    from tfspark.task.feed import TENSOR_ALIGNMENT, _aligned_empty, _as_tensor

    values = _aligned_empty((1000, 3), np.dtype(np.float32))
    values[:] = np.arange(3000, dtype=np.float32).reshape(1000, 3)
    assert values.ctypes.data % TENSOR_ALIGNMENT == 0
    shared = _as_tensor(values)
    values[0, 0] = -1.0
    assert shared.numpy()[0, 0] == -1.0 and shared.shape == (1000, 3)

    misaligned = _aligned_empty((4004,), np.dtype(np.uint8))[4:].view(np.float32)
    misaligned[:] = 1.0
    copied = _as_tensor(misaligned)
    misaligned[0] = 5.0
    assert copied.numpy()[0] == 1.0
    np.testing.assert_array_equal(_as_tensor(np.array([True, False])).numpy(), [True, False])


def test_a_spilled_cache_feeds_the_same_batches_chunk_by_chunk(tmp_path):
    batches = ratings_batches(300, 40)
    with cache_partition(batches) as in_memory, cache_partition(
        batches, spill_dir=str(tmp_path), memory_limit_bytes=batches[0].nbytes * 2
    ) as spilled:
        assert spilled.spilled and not in_memory.spilled
        expected = _dataset_batches(BatchFeed(in_memory, "label", 16, 45, seed=5))
        on_disk = BatchFeed(spilled, "label", 16, 45, seed=5)
        _assert_same_batches(expected, _dataset_batches(on_disk))
        on_disk.start_batch = 30
        _assert_same_batches(expected[30:], _dataset_batches(on_disk))


def test_a_fill_that_fits_in_memory_is_waited_for_and_feeds_the_batches_of_its_stream():
    batches = ratings_batches(1000, 130)
    streaming = _filling(batches)
    streamed = list(BatchFeed(streaming.cache, "label", 64, 40, seed=3, fill=streaming).iter_numpy())
    fill = _filling(batches)
    feed = BatchFeed(fill.cache, "label", 64, 40, seed=3, fill=fill)
    fed = _dataset_batches(feed)
    assert fill.seconds is not None and not fill.cache.spilled
    _assert_same_batches(streamed, fed)
    streaming.cache.close()
    fill.cache.close()


def test_feed_refuses_an_empty_partition_and_a_missing_label():
    with pytest.raises(ValueError, match="no rows"):
        BatchFeed(cache_partition([]), "label", batch_size=4, total_batches=1)
    with cache_partition(ratings_batches(4, 4)) as cache, pytest.raises(ValueError, match="label column"):
        BatchFeed(cache, "rating", batch_size=4, total_batches=1)


def _filling(batches, cache: ArrowCache | None = None, ahead: int = 2, rows: int | None = None) -> BackgroundFill:
    planned = sum(batch.num_rows for batch in batches) if rows is None else rows
    return BackgroundFill(iter(batches), cache or ArrowCache(), planned, ahead=ahead).start()


def test_background_fill_hands_on_every_batch_in_arrival_order_and_finishes_the_cache(tmp_path):
    batches = ratings_batches(1000, 100)
    cache = ArrowCache(spill_dir=str(tmp_path), memory_limit_bytes=batches[0].nbytes * 2)
    fill = _filling([batches[0].slice(0, 0), *batches], cache)
    try:
        streamed = list(fill.stream())
        assert [batch.equals(original) for batch, original in zip(streamed, batches, strict=True)] == [True] * 10
        fill.wait()
        assert cache.spilled and cache.num_rows == 1000
        assert all(cache.batch(index).equals(original) for index, original in enumerate(batches))
        assert fill.seconds is not None
        assert not fill.can_stream
    finally:
        fill.close()
        cache.close()


def test_background_fill_reads_a_partition_that_fits_in_memory_before_anyone_reads_it():
    fill = _filling(ratings_batches(1000, 10))
    fill.wait()
    assert fill.cache.num_rows == 1000 and not fill.cache.spilled


def test_background_fill_stays_a_few_batches_ahead_of_its_reader_once_the_cache_spills(tmp_path):
    pulled = []

    def source():
        for batch in ratings_batches(1000, 10):
            pulled.append(batch)
            yield batch

    cache = ArrowCache(spill_dir=str(tmp_path), memory_limit_bytes=1)
    fill = BackgroundFill(source(), cache, 1000, ahead=2).start()
    stream = fill.stream()
    next(stream)
    deadline = time.monotonic() + 5
    while len(pulled) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(pulled) <= 5  # the one read, two waiting, one waiting for room, one being appended
    stream.close()
    fill.wait()
    assert len(pulled) == 100 and cache.num_rows == 1000
    cache.close()


def test_a_read_error_reaches_the_stream_and_the_waiter():
    def failing():
        yield from ratings_batches(20, 10)
        raise OSError("row group unreadable")

    fill = _filling(failing(), rows=20)
    with pytest.raises(OSError, match="unreadable"):
        list(fill.stream())
    with pytest.raises(OSError, match="unreadable"):
        fill.wait()


def test_close_stops_a_reader_that_nobody_reads(tmp_path):
    fill = _filling(ratings_batches(1000, 10), ArrowCache(spill_dir=str(tmp_path), memory_limit_bytes=1))
    time.sleep(0.2)
    fill.close()
    assert fill.cache.num_rows < 1000
    fill.cache.close()


def test_a_feed_on_a_background_fill_trains_on_the_batches_as_read_and_gives_the_same_batches_after():
    batches = ratings_batches(1000, 130)
    fill = _filling(batches)
    streaming = BatchFeed(fill.cache, "label", 64, 40, seed=3, fill=fill)
    streamed = list(streaming.iter_numpy())

    waited = _filling(batches)
    waited.wait()
    finished = BatchFeed(waited.cache, "label", 64, 40, seed=3, fill=waited)
    from_cache = list(finished.iter_numpy())
    assert len(streamed) == len(from_cache) == 40
    for (features, label), (features_again, label_again) in zip(streamed, from_cache, strict=True):
        np.testing.assert_array_equal(label, label_again)
        np.testing.assert_array_equal(features["pair"], features_again["pair"])
    resumed = list(finished.iter_numpy(start_batch=25))
    for (_, label), (_, label_again) in zip(resumed, streamed[25:], strict=True):
        np.testing.assert_array_equal(label, label_again)
    first_pass = np.concatenate([label for _, label in streamed[: 1000 // 64]])
    assert len(np.unique(first_pass)) == len(first_pass)
    # arrival order in the first pass: the first batch's rows come from the first record batch
    assert set(streamed[0][1]) <= set(batches[0].column("label").to_numpy())
    streaming.cache.close()
    finished.cache.close()


def test_a_feed_on_a_background_fill_refuses_a_partition_that_is_not_the_planned_size():
    fill = _filling(ratings_batches(1000, 100), rows=1200)
    feed = BatchFeed(fill.cache, "label", 64, 40, fill=fill)
    with pytest.raises(ValueError, match="1000 rows, 1200 were planned"):
        list(feed.iter_numpy())
