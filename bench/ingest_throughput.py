"""Ingestion throughput and memory: raw kafka-python consume vs lakeloop's ingestion vs a naive json+pandas path, on
one day's slice of a topic of an embedded broker (or `--bootstrap`), then a fetch probe and the peak RSS by slice size.

    .venv/bin/python -m bench.ingest_throughput --events 100000 --rss-sizes 50000,500000 --repeat 1

See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.harness import child_environment, last_json_line, module_command, parse_sizes, print_json_line, verdict

DAY = timedelta(days=1)
PRODUCE_LOG_EVERY = 250_000
THROUGHPUT_TARGET = 0.8  # lakeloop ingest end to end vs raw consume, records/s
RSS_TARGET = 1.5  # peak RSS at the largest --rss-sizes vs the smallest
PROBE_FETCH_BYTES = 64 * 1024


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


def slice_records(bootstrap: str, topic: str, day: datetime) -> Iterator[list[Any]]:
    """The day's slice as kafka-python returns it: lists of records, one partition after the other."""
    from kafka import TopicPartition

    from lakeloop.ingest.options import IngestOptions
    from lakeloop.ingest.slices import open_consumer, plan_slices

    options = IngestOptions()
    consumer = open_consumer({"bootstrap_servers": bootstrap}, options)
    try:
        for piece in plan_slices(consumer, topic, day, day + DAY, options):
            if not piece.size:
                continue
            tp = TopicPartition(topic, piece.partition)
            consumer.assign([tp])
            consumer.seek(tp, piece.start_offset)
            while consumer.position(tp) < piece.end_offset:
                records = consumer.poll(timeout_ms=1000).get(tp, [])  # a whole fetch, as the ingestion polls
                if records and records[-1].offset >= piece.end_offset:  # the last poll of the slice
                    records = [record for record in records if record.offset < piece.end_offset]
                yield records
    finally:
        consumer.close(autocommit=False)


@dataclass
class Read:
    """What a variant read, and the peak RSS of the process it started to read it, if any (MiB)."""

    records: int
    child_peak_mib: float = 0.0


def raw_consume(bootstrap: str, topic: str, day: datetime, lake: Path) -> Read:
    """The client's limit: read the slice with the same consumer settings, touching every value."""
    records = value_bytes = 0
    for batch in slice_records(bootstrap, topic, day):
        records += len(batch)
        value_bytes += sum(len(record.value) for record in batch)
    return Read(records)


def lakeloop_ingest(bootstrap: str, topic: str, day: datetime, lake: Path) -> Read:
    """lakeloop's ingestion, end to end, into a fresh lake (Kafka is read by a child process it starts)."""
    from lakeloop.ingest.interval import ingest_interval

    result = ingest_interval({"bootstrap_servers": bootstrap}, topic, lake, day, day + DAY)
    return Read(result.read, result.reader_peak_rss_bytes / 2**20)


def naive_json_pandas(bootstrap: str, topic: str, day: datetime, lake: Path) -> Read:
    """What a first attempt looks like: json.loads per message, a list of dicts, pandas, to_parquet."""
    import pandas as pd

    rows = [json.loads(record.value) for batch in slice_records(bootstrap, topic, day) for record in batch]
    frame = pd.DataFrame(rows)
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    frame["ts"] = pd.to_datetime(frame["ts"], unit="ms", utc=True)
    out = lake / "naive" / f"dt={day.date()}"
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "part-0.parquet", index=False)
    return Read(len(frame))


VARIANTS: list[tuple[str, Callable[[str, str, datetime, Path], Read]]] = [
    ("raw kafka-python consume", raw_consume),
    ("lakeloop ingest (end to end)", lakeloop_ingest),
    ("naive json.loads + pandas", naive_json_pandas),
]


@dataclass
class Timing:
    """One variant's wall and CPU seconds in each round (CPU: every thread of this process, plus the child
    processes it started and reaped meanwhile: the ingestion's reading process)."""

    wall: list[float]
    cpu: list[float]


def throughput(bootstrap: str, topic: str, day: datetime, events: int, repeat: int, workdir: Path) -> dict:
    """Run every variant `repeat` times, interleaved; print the comparison and return its headline figures."""
    import pandas  # noqa: F401  (lakeloop's duplicate index and the naive path use it: import it before timing)

    timings = {name: Timing([], []) for name, _ in VARIANTS}
    for round_number in range(1, repeat + 1):
        for name, variant in VARIANTS:
            lake = Path(tempfile.mkdtemp(dir=workdir))
            started, cpu_started = time.perf_counter(), cpu_seconds()
            records = variant(bootstrap, topic, day, lake).records
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
            if records != events:
                raise SystemExit(f"{name} read {records} records, expected {events}")
            timings[name].wall.append(seconds)
            timings[name].cpu.append(cpu)
            print(f"  round {round_number}: {name:<30} {seconds:7.2f}s (CPU {cpu:5.2f}s)", flush=True)
    raw = timings[VARIANTS[0][0]]
    print(f"\nSlice of {events:,} events (best of {repeat}; CPU: all threads of the process and of the child "
          "processes it reaped, i.e. the ingestion's reading process):")
    print(f"| {'variant':<30} | {'seconds':>8} | {'CPU s':>6} | {'records/s':>10} | {'vs raw':>6} |")
    print(f"|{'-' * 32}|{'-' * 9}:|{'-' * 7}:|{'-' * 11}:|{'-' * 7}:|")
    for name, _ in VARIANTS:
        best = min(timings[name].wall)
        print(f"| {name:<30} | {best:8.2f} | {min(timings[name].cpu):6.2f} | {events / best:10,.0f} | "
              f"{min(raw.wall) / best:5.2f}x |")
    ingest = timings[VARIANTS[1][0]]
    rounds = [raw_seconds / seconds for raw_seconds, seconds in zip(raw.wall, ingest.wall, strict=True)]
    best_ratio, median_ratio = min(raw.wall) / min(ingest.wall), statistics.median(rounds)
    result = verdict(best_ratio, median_ratio, THROUGHPUT_TARGET)
    print(f"lakeloop ingest vs raw consume: best {best_ratio:.2f}x, per round "
          f"{', '.join(f'{ratio:.2f}x' for ratio in rounds)} (median {median_ratio:.2f}x); "
          f"target >= {THROUGHPUT_TARGET}x: {result}")
    return {"events": events, "raw_records_per_s": round(events / min(raw.wall)),
            "ingest_records_per_s": round(events / min(ingest.wall)),
            "naive_records_per_s": round(events / min(timings[VARIANTS[2][0]].wall)),
            "ingest_vs_raw_best": round(best_ratio, 3), "ingest_vs_raw_median": round(median_ratio, 3),
            "throughput_target": result}


def cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its children reaped so far. The broker this script
    may have started is a child too, but it is reaped only at the end."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def fetch_probe(bootstrap: str, topic: str) -> None:
    """Ask for small fetches at a few offsets of partition 0; print what one fetch returned.

    The figures come from kafka-python's own fetch metrics after reading to the high watermark: the
    largest fetch response (bytes) and the records per fetch. A broker that honours the limits returns
    about `PROBE_FETCH_BYTES` per fetch (or one record batch, if larger); one that does not returns the
    log from the batch holding the fetch offset up to the high watermark in a single fetch.
    """
    from kafka import KafkaConsumer, TopicPartition

    tp = TopicPartition(topic, 0)
    print(f"\nFetch probe, {topic}[0], asking max_partition_fetch_bytes = fetch_max_bytes = {PROBE_FETCH_BYTES:,}:")
    print(f"| {'fetch offset':>12} | {'records to the high watermark':>29} | {'largest fetch (bytes)':>21} | "
          f"{'x limit':>7} | {'records per fetch':>17} |")
    print(f"|{'-' * 13}:|{'-' * 30}:|{'-' * 22}:|{'-' * 8}:|{'-' * 18}:|")
    for share in (0.0, 0.5, 0.95):
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                 max_partition_fetch_bytes=PROBE_FETCH_BYTES, fetch_max_bytes=PROBE_FETCH_BYTES)
        try:
            consumer.assign([tp])
            high_watermark = consumer.end_offsets([tp])[tp]
            offset = int(high_watermark * share)
            consumer.seek(tp, offset)
            while consumer.position(tp) < high_watermark:
                consumer.poll(timeout_ms=1000)
            metrics = consumer.metrics()["consumer-fetch-manager-metrics"]
        finally:
            consumer.close(autocommit=False)
        largest = metrics["fetch-size-max"]
        print(f"| {offset:>12,} | {high_watermark - offset:>29,} | {largest:>21,.0f} | "
              f"{largest / PROBE_FETCH_BYTES:>7,.0f} | {metrics['records-per-request-avg']:>17,.0f} |")


def rss_child(variant: str, bootstrap: str, topic: str, day: datetime, workdir: Path) -> None:
    """In a fresh process: read the slice one way and print the RSS after imports and the peak RSS (MiB): this
    process's peak plus the peak of the process it started to read the slice (the ingestion's reading
    process, which reports its own VmHWM; getrusage's ru_maxrss for children would carry this process's peak
    over the exec)."""
    import pandas  # noqa: F401  (the duplicate index imports it on the first chunk: count it in the baseline)
    import psutil

    import lakeloop.ingest.interval  # noqa: F401
    from lakeloop.ingest.reader_process import peak_rss_bytes

    baseline = psutil.Process().memory_info().rss / 2**20
    read = dict(VARIANTS)[variant](bootstrap, topic, day, Path(tempfile.mkdtemp(dir=workdir)))
    own = peak_rss_bytes() / 2**20
    print_json_line({"records": read.records, "baseline_mib": baseline, "peak_mib": own + read.child_peak_mib,
                     "child_peak_mib": read.child_peak_mib})


def measure_rss(variant: str, bootstrap: str, topic: str, day: datetime, workdir: Path, expected: int) -> dict:
    """Run `rss_child` for one variant in a child process and return its measurements."""
    child = subprocess.run(
        module_command("bench.ingest_throughput", "--child-rss", variant, "--bootstrap", bootstrap, "--topic", topic,
                       "--day", day.date().isoformat(), "--workdir", str(workdir)),
        env=child_environment(), capture_output=True, text=True, check=True)
    measured = last_json_line(child.stdout)
    if measured["records"] != expected:
        raise SystemExit(f"{variant} read {measured['records']} records, expected {expected}")
    return measured


def rss_table(bootstrap: str, sizes: list[int], day: datetime, partitions: int, workdir: Path,
              repeat: int) -> dict:
    """Peak RSS per slice size of lakeloop's ingestion, next to a raw consume of the same slice.

    Each is measured `repeat` times in fresh processes (the peak depends on how the client's transient
    copies of a fetch response overlap, so it varies between runs); the table shows the range, and the
    target is checked on the worst runs. The raw column is the client's own footprint, bounded by the fetch
    size on a broker that honours it (see the fetch probe). The ingestion's is the peak of the ingesting
    process plus the peak of its reading process (shown apart too): an upper bound, as the two peaks need not
    coincide and the pages of the libraries both map count twice. The last column is what the ingestion adds
    on top of raw. Returns the worst peaks per size and, with two sizes or more, the growth and the verdict.
    """
    rows = []
    for size in sizes:
        topic = f"rss-{size}-{uuid.uuid4().hex[:6]}"
        publish(bootstrap, topic, size, day, partitions)
        raw: list[float] = []
        ingest: list[float] = []
        reading: list[float] = []
        for _ in range(repeat):
            raw.append(measure_rss(VARIANTS[0][0], bootstrap, topic, day, workdir, size)["peak_mib"])
            measured = measure_rss(VARIANTS[1][0], bootstrap, topic, day, workdir, size)
            ingest.append(measured["peak_mib"])
            reading.append(measured["child_peak_mib"])
        rows.append((size, topic, measured["baseline_mib"], raw, ingest, reading))
    fetch_probe(bootstrap, rows[-1][1])

    def cell(runs: list[float], width: int) -> str:
        return f"{min(runs):.0f}-{max(runs):.0f}".rjust(width) if len(runs) > 1 else f"{runs[0]:{width}.0f}"

    print(f"\nPeak RSS reading the slice (MiB, {repeat} run(s) each; the same imports, {rows[0][2]:.0f} MiB, before "
          "reading). lakeloop ingest: the peak of the ingesting process plus the peak of the process it starts to "
          "read Kafka (an upper bound: the peaks need not coincide, shared library pages count twice):")
    print(f"| {'events':>10} | {'raw consume':>11} | {'lakeloop ingest':>15} | {'of which reading':>16} | "
          f"{'ingest - raw (worst)':>20} |")
    print(f"|{'-' * 11}:|{'-' * 12}:|{'-' * 16}:|{'-' * 17}:|{'-' * 21}:|")
    for size, _, _, raw, ingest, reading in rows:
        print(f"| {size:>10,} | {cell(raw, 11)} | {cell(ingest, 15)} | {cell(reading, 16)} | "
              f"{max(ingest) - max(raw):20.0f} |")
    figures = {"rss_peak_mib": {str(size): {"raw": max(raw), "ingest": max(ingest), "ingest_reading": max(reading)}
                                for size, _, _, raw, ingest, reading in rows}}
    if len(rows) == 1:
        return figures
    (small, _, _, raw_small, ingest_small, _), (large, _, _, raw_large, ingest_large, _) = rows[0], rows[-1]
    growth = max(ingest_large) / max(ingest_small)
    result = "met" if growth <= RSS_TARGET else "NOT met"
    print(f"{large:,} vs {small:,} events (worst runs): raw consume {max(raw_large) / max(raw_small):.2f}x, "
          f"lakeloop ingest {growth:.2f}x (target <= {RSS_TARGET}x: {result}), ingest - raw "
          f"{(max(ingest_large) - max(raw_large)) / (max(ingest_small) - max(raw_small)):.2f}x")
    return {**figures, "rss_growth": round(growth, 3), "rss_target": result}


def main(argv: list[str] | None = None) -> None:
    """Run the throughput comparison and the memory part (or, with `--child-rss`, one RSS child)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000, help="events in the benchmarked slice (0: skip)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the throughput comparison (best kept)")
    parser.add_argument("--rss-sizes", default="200000,2000000",
                        help="comma-separated slice sizes for the peak-RSS table ('' to skip)")
    parser.add_argument("--rss-repeat", type=int, default=2, help="runs of each peak-RSS measurement")
    parser.add_argument("--bootstrap", help="a running Kafka-protocol broker to use instead of starting one")
    parser.add_argument("--child-rss", metavar="VARIANT", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--day", type=date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_rss:
        rss_child(args.child_rss, args.bootstrap, args.topic, datetime.combine(args.day, datetime.min.time(), UTC),
                  args.workdir)
        return

    from lakeloop.services import EmbeddedBroker, free_port

    # The day before yesterday, so that the following day's 1% is in the past too: Kafka rejects a record stamped
    # more than log.message.timestamp.after.max.ms (1 hour by default) ahead of its clock. publish() keeps the
    # records forever (retention.ms -1).
    day = datetime.combine(date.today() - 2 * DAY, datetime.min.time(), UTC)
    sizes = parse_sizes(args.rss_sizes)
    with tempfile.TemporaryDirectory(prefix="lakeloop-bench-") as scratch:
        workdir = Path(scratch)
        broker = None
        if not args.bootstrap:
            broker = EmbeddedBroker(state_dir=workdir / "broker", port=free_port())
            broker.state_dir.mkdir()
            broker.start()
        bootstrap = args.bootstrap or broker.bootstrap
        try:
            print(f"broker {bootstrap}; slice day {day.date()}; {args.partitions} partitions; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
            figures: dict = {}
            if args.events:
                topic = f"ratings-bench-{uuid.uuid4().hex[:6]}"
                publish(bootstrap, topic, args.events, day, args.partitions)
                figures.update(throughput(bootstrap, topic, day, args.events, args.repeat, workdir))
            if sizes:
                figures.update(rss_table(bootstrap, sizes, day, args.partitions, workdir, args.rss_repeat))
        finally:
            if broker is not None:
                broker.stop()
    print_json_line(figures)


if __name__ == "__main__":
    main()
