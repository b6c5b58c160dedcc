"""Ingestion throughput and memory: raw kafka-python consume vs lakeloop's ingestion vs a naive path.

Starts its own embedded broker (noida-db) on a free 127.0.0.1 port, publishes `--events` rating events
stamped inside one day (plus 1% on each neighbouring day, so the slice is a real slice), then reads that
day's slice three ways, side by side in this process, on the same topic and consumer settings:

  raw kafka-python   assign + seek + poll of the slice, touching each value (the client's limit)
  lakeloop ingest    `lakeloop.ingest.ingest_interval` end to end: slice, decode, validate, dedup, Parquet
  naive json+pandas  per-message `json.loads` into a list of dicts, `pandas.DataFrame`, `to_parquet`

and prints records/s and the ratio to raw consume (best of `--repeat` rounds). Then, for each of
`--rss-sizes`, a child process ingests a topic of that many events and reports its peak RSS.

    .venv/bin/python bench/ingest_throughput.py --events 500000
    .venv/bin/python bench/ingest_throughput.py --events 100000 --rss-sizes 50000,500000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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


def rss_child(bootstrap: str, topic: str, day: datetime, workdir: Path) -> None:
    """In a fresh process: ingest the slice and print the RSS after imports and the peak RSS (MiB)."""
    import pandas  # noqa: F401  (the duplicate index imports it on the first chunk)
    import psutil

    import lakeloop.ingest  # noqa: F401  (imports counted in the baseline)

    baseline = psutil.Process().memory_info().rss / 2**20
    records = lakeloop_ingest(bootstrap, topic, day, Path(tempfile.mkdtemp(dir=workdir)))
    peak = peak_rss_mib()
    print(json.dumps({"records": records, "baseline_mib": baseline, "peak_mib": peak}))


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not getrusage: ru_maxrss survives exec, so a child would report
    its parent's peak when that was higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def rss_table(bootstrap: str, sizes: list[int], day: datetime, partitions: int, workdir: Path) -> None:
    """Peak RSS of an ingestion child process per slice size, and the ratio of the largest to the smallest."""
    results = []
    for size in sizes:
        topic = f"rss-{size}"
        publish(bootstrap, topic, size, day, partitions)
        child = subprocess.run(
            [sys.executable, __file__, "--child-rss", "--bootstrap", bootstrap, "--topic", topic,
             "--day", day.date().isoformat(), "--workdir", str(workdir)],
            capture_output=True, text=True, check=True)
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        if measured["records"] != size:
            raise SystemExit(f"RSS child read {measured['records']} records, expected {size}")
        results.append((size, measured))
    smallest = results[0][1]["peak_mib"]
    print("\nPeak RSS of one ingestion process:")
    print(f"| {'events':>10} | {'after imports MiB':>17} | {'peak MiB':>8} | {'vs smallest':>11} |")
    print(f"|{'-' * 11}:|{'-' * 18}:|{'-' * 9}:|{'-' * 12}:|")
    for size, measured in results:
        print(f"| {size:>10,} | {measured['baseline_mib']:17.0f} | {measured['peak_mib']:8.0f} | "
              f"{measured['peak_mib'] / smallest:10.2f}x |")


def stop_broker(broker) -> None:
    """Stop the embedded broker and the noida-db binary its launcher spawned (same process group)."""
    group = broker.pid()
    broker.stop()
    if group is not None:
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000, help="events in the benchmarked slice (0: skip)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the throughput comparison (best kept)")
    parser.add_argument("--rss-sizes", default="200000,2000000",
                        help="comma-separated slice sizes for the peak-RSS table ('' to skip)")
    parser.add_argument("--child-rss", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--day", type=date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rss:
        rss_child(args.bootstrap, args.topic, datetime.combine(args.day, datetime.min.time(), UTC), args.workdir)
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
            stop_broker(broker)


if __name__ == "__main__":
    main()
