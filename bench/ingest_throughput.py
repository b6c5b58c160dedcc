"""Ingestion throughput and memory: raw kafka-python consume vs lakeloop's ingestion vs a naive path.

Starts its own embedded broker (noida-db) on a free 127.0.0.1 port, publishes `--events` rating events
stamped inside one day (plus 1% on each neighbouring day, so the slice is a real slice), then reads that
day's slice three ways, side by side in this process, on the same topic and consumer settings:

  raw kafka-python   assign + seek + poll of the slice, touching each value (the client's limit)
  lakeloop ingest    `lakeloop.ingest.ingest_interval` end to end: slice, decode, validate, dedup, Parquet
  naive json+pandas  per-message `json.loads` into a list of dicts, `pandas.DataFrame`, `to_parquet`

and prints records/s and the ratio to raw consume (best of `--repeat` rounds). Then, for each of
`--rss-sizes`, child processes read a topic of that many events (raw consume, then lakeloop's ingestion)
and report their peak RSS. Note: the embedded broker ignores fetch size limits (a fetch returns the rest
of the partition's log), so on it even a raw consumer's memory grows with the slice; the table separates
what the ingestion adds. A real Kafka broker honours `max_partition_fetch_bytes`.

    .venv/bin/python bench/ingest_throughput.py --events 500000
    .venv/bin/python bench/ingest_throughput.py --events 100000 --rss-sizes 50000,500000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

DAY = timedelta(days=1)
PRODUCE_LOG_EVERY = 250_000


def publish(bootstrap: str, topic: str, events: int, day: datetime, partitions: int) -> None:
    """Create `topic` and publish `events` events inside `day` plus 1% on each neighbouring day."""
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": 1,
                                 "configs": {"retention.ms": "-1"}}}, wait_for_metadata=True)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20, acks=1)
    neighbours = max(events // 100, 1)
    plan = [(day - DAY, neighbours), (day, events), (day + DAY, neighbours)]
    started, sent = time.perf_counter(), 0
    for day_start, count in plan:
        step_ms = 86_400_000 / count
        base_ms = int(day_start.timestamp() * 1000)
        for n in range(count):
            ts = base_ms + int(n * step_ms)
            user = n % 943
            value = (f'{{"event_id":"{day_start:%Y%m%d}-{n}","user_id":{user},"item_id":{(n * 7) % 1682},'
                     f'"rating":{1 + n % 9 / 2},"ts":{ts}}}').encode()
            producer.send(topic, key=str(user).encode(), value=value, timestamp_ms=ts)
            sent += 1
            if sent % PRODUCE_LOG_EVERY == 0:
                print(f"  published {sent:,} ({sent / (time.perf_counter() - started):,.0f}/s)", flush=True)
    producer.flush()
    producer.close()
    print(f"  published {sent:,} events to {topic} in {time.perf_counter() - started:.1f}s", flush=True)


def raw_consume(bootstrap: str, topic: str, day: datetime, lake: Path) -> int:
    """The client's limit: read the slice with the same consumer settings, touching every value."""
    from kafka import TopicPartition

    from lakeloop.ingest import IngestOptions, open_consumer, plan_slices

    options = IngestOptions()
    consumer = open_consumer({"bootstrap_servers": bootstrap}, options)
    records = value_bytes = 0
    try:
        for piece in plan_slices(consumer, topic, day, day + DAY, options):
            if not piece.size:
                continue
            tp = TopicPartition(topic, piece.partition)
            consumer.assign([tp])
            consumer.seek(tp, piece.start_offset)
            while consumer.position(tp) < piece.end_offset:
                for record in consumer.poll(timeout_ms=1000, max_records=options.chunk_size).get(tp, []):
                    if record.offset < piece.end_offset:
                        records += 1
                        value_bytes += len(record.value)
    finally:
        consumer.close(autocommit=False)
    return records


def lakeloop_ingest(bootstrap: str, topic: str, day: datetime, lake: Path) -> int:
    """lakeloop's ingestion, end to end, into a fresh lake."""
    from lakeloop.ingest import ingest_interval

    return ingest_interval({"bootstrap_servers": bootstrap}, topic, lake, day, day + DAY).read


def naive_json_pandas(bootstrap: str, topic: str, day: datetime, lake: Path) -> int:
    """What a first attempt looks like: json.loads per message, a list of dicts, pandas, to_parquet."""
    import pandas as pd
    from kafka import TopicPartition

    from lakeloop.ingest import IngestOptions, open_consumer, plan_slices

    options = IngestOptions()
    consumer = open_consumer({"bootstrap_servers": bootstrap}, options)
    rows = []
    try:
        for piece in plan_slices(consumer, topic, day, day + DAY, options):
            if not piece.size:
                continue
            tp = TopicPartition(topic, piece.partition)
            consumer.assign([tp])
            consumer.seek(tp, piece.start_offset)
            while consumer.position(tp) < piece.end_offset:
                for record in consumer.poll(timeout_ms=1000, max_records=options.chunk_size).get(tp, []):
                    if record.offset < piece.end_offset:
                        rows.append(json.loads(record.value))
    finally:
        consumer.close(autocommit=False)
    frame = pd.DataFrame(rows)
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="ms", utc=True)
    out = lake / "naive" / f"dt={day.date()}"
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "part-0.parquet", index=False)
    return len(frame)


VARIANTS: list[tuple[str, Callable[[str, str, datetime, Path], int]]] = [
    ("raw kafka-python consume", raw_consume),
    ("lakeloop ingest (end to end)", lakeloop_ingest),
    ("naive json.loads + pandas", naive_json_pandas),
]


def throughput(bootstrap: str, topic: str, day: datetime, events: int, repeat: int, workdir: Path) -> None:
    """Run every variant `repeat` times, interleaved, and print the best records/s of each."""
    best: dict[str, float] = {}
    for round_number in range(1, repeat + 1):
        for name, variant in VARIANTS:
            lake = Path(tempfile.mkdtemp(dir=workdir))
            started = time.perf_counter()
            records = variant(bootstrap, topic, day, lake)
            seconds = time.perf_counter() - started
            if records != events:
                raise SystemExit(f"{name} read {records} records, expected {events}")
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"  round {round_number}: {name:<30} {seconds:7.2f}s", flush=True)
    raw = best[VARIANTS[0][0]]
    print(f"\nSlice of {events:,} events (best of {repeat}):")
    print(f"| {'variant':<30} | {'seconds':>8} | {'records/s':>10} | {'vs raw':>6} |")
    print(f"|{'-' * 32}|{'-' * 10}:|{'-' * 12}:|{'-' * 8}:|")
    for name, _ in VARIANTS:
        print(f"| {name:<30} | {best[name]:8.2f} | {events / best[name]:10,.0f} | {raw / best[name]:5.2f}x |")


def rss_child(variant: str, bootstrap: str, topic: str, day: datetime, workdir: Path) -> None:
    """In a fresh process: read the slice one way and print the RSS after imports and the peak RSS (MiB)."""
    import pandas  # noqa: F401  (the duplicate index imports it on the first chunk: count it in the baseline)
    import psutil

    import lakeloop.ingest  # noqa: F401

    baseline = psutil.Process().memory_info().rss / 2**20
    read = dict(VARIANTS)[variant]
    records = read(bootstrap, topic, day, Path(tempfile.mkdtemp(dir=workdir)))
    print(json.dumps({"records": records, "baseline_mib": baseline, "peak_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not getrusage: ru_maxrss survives exec, so a child would report
    its parent's peak when that was higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_rss(variant: str, bootstrap: str, topic: str, day: datetime, workdir: Path, expected: int) -> dict:
    """Run `rss_child` for one variant in a child process and return its measurements."""
    child = subprocess.run(
        [sys.executable, __file__, "--child-rss", variant, "--bootstrap", bootstrap, "--topic", topic,
         "--day", day.date().isoformat(), "--workdir", str(workdir)],
        capture_output=True, text=True, check=True)
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    if measured["records"] != expected:
        raise SystemExit(f"{variant} read {measured['records']} records, expected {expected}")
    return measured


def rss_table(bootstrap: str, sizes: list[int], day: datetime, partitions: int, workdir: Path) -> None:
    """Peak RSS per slice size of lakeloop's ingestion, next to a raw consume of the same slice.

    The raw column is the client's own footprint: the embedded broker ignores fetch size limits and
    returns a partition's whole log from the fetch offset in one response, so any kafka-python consumer
    grows with the slice there. The last column is what the ingestion adds on top of that.
    """
    rows = []
    for size in sizes:
        topic = f"rss-{size}"
        publish(bootstrap, topic, size, day, partitions)
        raw = measure_rss(VARIANTS[0][0], bootstrap, topic, day, workdir, size)
        ingest = measure_rss(VARIANTS[1][0], bootstrap, topic, day, workdir, size)
        rows.append((size, raw["baseline_mib"], raw["peak_mib"], ingest["peak_mib"]))
    print("\nPeak RSS of one process reading the slice (MiB; the same imports, "
          f"{rows[0][1]:.0f} MiB, before reading):")
    print(f"| {'events':>10} | {'raw consume':>11} | {'lakeloop ingest':>15} | {'ingest - raw':>12} |")
    print(f"|{'-' * 11}:|{'-' * 12}:|{'-' * 16}:|{'-' * 13}:|")
    for size, _, raw_peak, ingest_peak in rows:
        print(f"| {size:>10,} | {raw_peak:11.0f} | {ingest_peak:15.0f} | {ingest_peak - raw_peak:12.0f} |")
    if len(rows) > 1:
        (small, _, raw_small, ingest_small), (large, _, raw_large, ingest_large) = rows[0], rows[-1]
        added_ratio = (ingest_large - raw_large) / (ingest_small - raw_small)
        print(f"{large:,} vs {small:,} events: raw consume {raw_large / raw_small:.2f}x, lakeloop ingest "
              f"{ingest_large / ingest_small:.2f}x, ingest - raw {added_ratio:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000, help="events in the benchmarked slice (0: skip)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the throughput comparison (best kept)")
    parser.add_argument("--rss-sizes", default="200000,2000000",
                        help="comma-separated slice sizes for the peak-RSS table ('' to skip)")
    parser.add_argument("--child-rss", metavar="VARIANT", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--day", type=date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rss:
        rss_child(args.child_rss, args.bootstrap, args.topic, datetime.combine(args.day, datetime.min.time(), UTC),
                  args.workdir)
        return

    from lakeloop.services import EmbeddedBroker, free_port

    # Yesterday: recent enough for the broker's time-based retention.
    day = datetime.combine(date.today() - DAY, datetime.min.time(), UTC)
    with tempfile.TemporaryDirectory(prefix="lakeloop-bench-") as scratch:
        workdir = Path(scratch)
        broker = EmbeddedBroker(state_dir=workdir / "broker", port=free_port())
        broker.state_dir.mkdir()
        broker.start()
        try:
            print(f"broker {broker.bootstrap}; slice day {day.date()}; {args.partitions} partitions", flush=True)
            if args.events:
                publish(broker.bootstrap, "ratings-bench", args.events, day, args.partitions)
                throughput(broker.bootstrap, "ratings-bench", day, args.events, args.repeat, workdir)
            sizes = [int(size) for size in args.rss_sizes.split(",") if size.strip()]
            if sizes:
                rss_table(broker.bootstrap, sizes, day, args.partitions, workdir)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
