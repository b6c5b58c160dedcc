"""What a day's commit costs: one day of prediction-sized rows written and read back two ways, side by side — a plain
Parquet file (no commit: the limit) and a Delta commit (`lakeloop.delta.replace_partition`, read back by
`read_partition`) — the day rewritten every round, as reruns do. The manifest commit it also measured until the lake's
datasets became Delta tables no longer exists: the manifest figures in docs/performance.md are historical.

    .venv/bin/python -m bench.lake_commits --rows 123530 --repeat 5            # a 1M day's predictions
    .venv/bin/python -m bench.lake_commits --lake s3://bucket/prefix          # any store pyarrow and delta-rs reach

See docs/performance.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import markdown_table, print_json_line, round_order, work_directory
from lakeloop.delta import read_partition, replace_partition
from lakeloop.lake import Lake

DAY = date(2026, 11, 20)
PLAIN, DELTA = "plain Parquet file (no commit)", "Delta commit"
WAYS = (PLAIN, DELTA)


def prediction_rows(rows: int, seed: int = 7) -> pa.Table:
    """`rows` rows shaped like the predictions (10 per user)."""
    rng = np.random.default_rng(seed)
    users = np.arange(rows) // 10
    items = rng.integers(1, 1683, rows).astype(str)
    return pa.table({"user_id": pa.array(users.astype(str)), "item_id": pa.array(items),
                     "score": rng.normal(3.5, 0.5, rows), "rank": pa.array(np.arange(rows) % 10 + 1, pa.int32()),
                     "model_name": ["lakeloop-fm"] * rows, "model_version": ["3"] * rows,
                     "generated_at": pa.array([datetime(2026, 11, 21, tzinfo=UTC)] * rows, pa.timestamp("us", "UTC"))})


def plain_write(lake: Lake, rows: pa.Table) -> None:
    """The bytes alone: one Parquet file written over the last one, nothing committed."""
    directory = lake.path("bench-plain", f"dt={DAY}")
    lake.filesystem.create_dir(directory, recursive=True)
    pq.write_table(rows, f"{directory}/part-00000.parquet", filesystem=lake.filesystem)


def delta_write(lake: Lake, rows: pa.Table) -> None:
    """One Delta commit replacing the day (`replace_partition`)."""
    replace_partition(lake, "bench-delta", DAY, rows, {"rows": rows.num_rows})


READS: dict[str, Callable[[Lake], pa.Table]] = {
    PLAIN: lambda lake: pq.read_table(lake.path("bench-plain", f"dt={DAY}", "part-00000.parquet"),
                                      filesystem=lake.filesystem),
    DELTA: lambda lake: read_partition(lake, "bench-delta", DAY),
}
WRITES: dict[str, Callable[[Lake, pa.Table], None]] = {PLAIN: plain_write, DELTA: delta_write}


def timed(action: Callable[[], object]) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    """Write and read the day `--repeat` times each way (rounds interleaved), print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=123_530, help="rows of the day (%(default)s: a 1M day's top 10)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best of each is reported")
    parser.add_argument("--lake", help="a lake URL (default: a fresh local directory)")
    options = parser.parse_args(argv)
    rows = prediction_rows(options.rows)
    with work_directory(None, "lakeloop-commits-") as workdir:
        lake = Lake.from_url(options.lake or str(workdir / "lake"))
        writes: dict[str, list[float]] = {way: [] for way in WAYS}
        reads: dict[str, list[float]] = {way: [] for way in WAYS}
        for round_index in range(options.repeat):
            for way in round_order(WAYS, round_index):
                writes[way].append(timed(lambda way=way: WRITES[way](lake, rows)))
                reads[way].append(timed(lambda way=way: READS[way](lake)))
        for way in WAYS:
            assert READS[way](lake).num_rows == rows.num_rows, way
    best_write = {way: min(seconds) for way, seconds in writes.items()}
    best_read = {way: min(seconds) for way, seconds in reads.items()}
    limit_write, limit_read = best_write[PLAIN], best_read[PLAIN]
    print(f"{rows.num_rows:,} rows a day, {options.repeat} rewrites of the day each way, best of rounds; "
          f"lake {lake.url}\n")
    print("\n".join(markdown_table(
        ["way", "write s", "write vs plain", "commit overhead ms", "read s", "read vs plain"],
        ([way, f"{best_write[way]:.3f}", f"{best_write[way] / limit_write:.2f}×",
          f"{(best_write[way] - limit_write) * 1000:.0f}", f"{best_read[way]:.3f}",
          f"{best_read[way] / limit_read:.2f}×"] for way in WAYS), "lrrrrr")))
    summary = {"rows": rows.num_rows, "repeat": options.repeat, "lake": lake.url,
               "plain_write_s": limit_write, "delta_write_s": best_write[DELTA],
               "delta_vs_plain_write": best_write[DELTA] / limit_write,
               "plain_read_s": limit_read, "delta_read_s": best_read[DELTA],
               "delta_vs_plain_read": best_read[DELTA] / limit_read}
    print_json_line(summary)
    return summary


if __name__ == "__main__":
    main()
